"""Training and validation data: image discovery, resumable sampling, random patches.

Determinism and resumability: the sample stream is a pure function of ``(seed, step)``. Global sample
position ``p`` (``p = step·B·W + rank·B + j`` for batch size ``B`` per rank and ``W`` ranks) belongs to
epoch ``p // n`` and reads image ``perm_epoch[p % n]``, where ``perm_epoch`` is a permutation seeded by
``(seed, epoch)``. Every random choice for that sample (crop, flips, down-scaling) comes from its own
generator seeded by ``(seed, p)``. So resuming at step ``s`` only needs ``s``; worker count and process
timing do not matter, and ``W`` ranks with batch ``B`` see exactly the samples of one process with ``B·W``.

Small images: an image whose shorter side is below the patch size is up-scaled (bicubic) so that its
shorter side equals the patch size, then cropped. Optional down-scale augmentation (for JPEG sources
such as ImageNet, to shrink compression artefacts): with probability ``downscale_prob`` the image is
resized by a factor drawn uniformly from ``[max(downscale_min, patch/shorter_side), 1]`` before cropping.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset, Sampler

from hpcm.errors import HPCMError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
_MASK64 = (1 << 64) - 1


class DataError(HPCMError):
    """A data folder is missing or empty, or an image in it cannot be read."""


def mix_seed(*values: int) -> int:
    """Deterministic 63-bit seed from integers (SplitMix64 finaliser applied per value)."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (int(v) & _MASK64)) & _MASK64
        h = (h + 0x9E3779B97F4A7C15) & _MASK64
        h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & _MASK64
        h ^= h >> 31
    return h & ((1 << 63) - 1)


def find_images(dirs: str | Path | Sequence[str | Path]) -> list[Path]:
    """All JPEG/PNG files under the folders (recursive, sorted per folder); :class:`DataError` if none."""
    if isinstance(dirs, str | Path):
        dirs = [dirs]
    found: list[Path] = []
    for d in dirs:
        root = Path(d)
        if not root.exists():
            raise DataError(f"data folder {root} does not exist")
        if not root.is_dir():
            raise DataError(f"data path {root} is not a folder")
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise DataError(f"no JPEG/PNG images found under {root}")
        found += files
    return found


def check_images(paths: Sequence[Path]) -> list[tuple[int, int]]:
    """Open every image header (no decoding); returns (width, height) each, :class:`DataError` on failure."""
    sizes = []
    for p in paths:
        try:
            with Image.open(p) as im:
                sizes.append(im.size)
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            raise DataError(f"cannot read image {p}: {exc}") from None
    return sizes


def load_rgb(path: Path) -> Image.Image:
    """Decode an image to RGB (PIL); :class:`DataError` when it cannot be decoded."""
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise DataError(f"cannot read image {path}: {exc}") from None


def to_tensor(img: Image.Image | np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 → (3, H, W) float32 in [0, 1]."""
    arr = np.array(img, dtype=np.uint8, copy=True)
    return torch.from_numpy(arr).permute(2, 0, 1).float().div_(255.0)


class PatchDataset(Dataset):
    """Random square patches of the given images; items are keyed by ``(image_index, sample_seed)``."""

    def __init__(
        self,
        paths: Sequence[Path],
        patch_size: int,
        *,
        downscale_prob: float = 0.0,
        downscale_min: float = 0.5,
        flips: bool = True,
    ) -> None:
        if patch_size <= 0:
            raise ValueError("patch_size must be positive")
        if not 0.0 <= downscale_prob <= 1.0 or not 0.0 < downscale_min <= 1.0:
            raise ValueError("downscale_prob must be in [0, 1] and downscale_min in (0, 1]")
        self.paths = list(paths)
        self.patch_size = patch_size
        self.downscale_prob = downscale_prob
        self.downscale_min = downscale_min
        self.flips = flips

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: tuple[int, int]) -> torch.Tensor:
        index, sample_seed = key
        rng = np.random.Generator(np.random.PCG64(sample_seed))
        img = load_rgb(self.paths[index])
        return to_tensor(self.augment(img, rng))

    def augment(self, img: Image.Image, rng: np.random.Generator) -> np.ndarray:
        """Scale, crop and flip one image; returns (P, P, 3) uint8."""
        p = self.patch_size
        w, h = img.size
        short = min(w, h)
        if short < p:  # too small: up-scale so that the shorter side equals the patch
            s = p / short
            img = img.resize((max(p, math.ceil(w * s)), max(p, math.ceil(h * s))), Image.BICUBIC)
        elif self.downscale_prob > 0 and rng.random() < self.downscale_prob:
            lo = max(self.downscale_min, p / short)
            s = rng.uniform(lo, 1.0)
            size = (max(p, round(w * s)), max(p, round(h * s)))
            if size != (w, h):
                img = img.resize(size, Image.BICUBIC, reducing_gap=3.0)
        w, h = img.size
        top = int(rng.integers(0, h - p + 1))
        left = int(rng.integers(0, w - p + 1))
        arr = np.asarray(img.crop((left, top, left + p, top + p)), dtype=np.uint8)
        if self.flips:
            if rng.random() < 0.5:
                arr = arr[:, ::-1]
            if rng.random() < 0.5:
                arr = arr[::-1, :]
        return np.ascontiguousarray(arr)


class StepBatchSampler(Sampler[list[tuple[int, int]]]):
    """Per-rank batches of ``(image_index, sample_seed)`` keys for steps ``start_step .. num_steps-1``.

    See the module docstring for the ordering; the stream depends only on ``seed`` and the step.
    """

    def __init__(
        self,
        num_images: int,
        batch_size: int,
        *,
        seed: int,
        num_steps: int,
        start_step: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if num_images <= 0 or batch_size <= 0:
            raise ValueError("need at least one image and a positive batch size")
        self.n = num_images
        self.batch_size = batch_size
        self.seed = seed
        self.num_steps = num_steps
        self.start_step = start_step
        self.rank = rank
        self.world_size = world_size
        self._perm_epoch = -1
        self._perm: list[int] = []

    def _permutation(self, epoch: int) -> list[int]:
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(mix_seed(self.seed, 0x5EED, epoch))
            self._perm = torch.randperm(self.n, generator=g).tolist()
            self._perm_epoch = epoch
        return self._perm

    def keys_for_step(self, step: int) -> list[tuple[int, int]]:
        """The ``(image_index, sample_seed)`` keys of this rank's batch at ``step``."""
        base = step * self.batch_size * self.world_size + self.rank * self.batch_size
        keys = []
        for pos in range(base, base + self.batch_size):
            epoch, offset = divmod(pos, self.n)
            keys.append((self._permutation(epoch)[offset], mix_seed(self.seed, 0xDA7A, pos)))
        return keys

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start_step, self.num_steps):
            yield self.keys_for_step(step)

    def __len__(self) -> int:
        return max(0, self.num_steps - self.start_step)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad (B, 3, H, W) at the bottom/right to multiples of ``multiple`` (edge replication)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (0, pw, 0, ph), mode="replicate")


class ValidationImages:
    """Full validation images, at most ``max_images``; items are (1, 3, H, W) tensors.

    ``source``: a folder (its images, sorted, recursive) or a list of image paths (used as given).
    """

    def __init__(self, source: str | Path | Sequence[Path], max_images: int | None = None) -> None:
        paths = find_images([source]) if isinstance(source, str | Path) else list(source)
        if max_images is not None:
            if max_images <= 0:
                raise ValueError("max_images must be positive")
            paths = paths[:max_images]
        check_images(paths)
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def shard(self, rank: int, world_size: int) -> ValidationImages:
        """This rank's share (every ``world_size``-th image from ``rank``; may be empty)."""
        out = object.__new__(ValidationImages)
        out.paths = self.paths[rank::world_size]
        return out

    def __iter__(self) -> Iterator[tuple[Path, torch.Tensor]]:
        for p in self.paths:
            yield p, to_tensor(load_rgb(p)).unsqueeze(0)
