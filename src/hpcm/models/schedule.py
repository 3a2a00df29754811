"""The static coding schedule of HPCM: steps, masks, gathers, scatters and hyper mappings.

Spec hpcm.md §4.2-§4.6. Notation: y is (B, M, H, W); the M channels form 8 groups of M/8 channels
(g = 0..7), 4 quarters (q = g // 2) and 2 halves. Three scales are coded on their own grids:

- s3: y itself, (H, W);
- s2: a stride-2 sub-lattice per group, (H/2, W/2), gathered with the per-group offset ``S2_OFFSETS``;
- s1: a stride-2 sub-lattice of s2 per quarter, (H/4, W/4), offset ``S1_OFFSETS``.

Every mask of the official code is a regular lattice, so gathers and scatters are strided slices
(exactly equivalent to the official boolean-mask selection, §4.2). Step masks are float tensors
(1, M, h, w) that hold 1 where the step codes an element; they are cached per shape.

Only y sizes with H, W multiples of 4 are supported (images: multiples of 64). The official code
needs multiples of 8 at y level for its 8x8 mask tiling; on such sizes every mask here is identical to
the official one, and on multiples of 4 the same periodic patterns are simply cropped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

# --- static tables (§4.2, §4.3, §4.6) -------------------------------------------------------------

#: (row, col) offset of the s2 lattice of group g, indexed by g % 4.
S2_OFFSETS: tuple[tuple[int, int], ...] = ((0, 0), (1, 1), (0, 1), (1, 0))
#: (row, col) offset of the s1 sub-lattice on the s2 grid, indexed by quarter q.
S1_OFFSETS: tuple[tuple[int, int], ...] = ((0, 0), (0, 1), (1, 0), (1, 1))
#: 4x4 "pair" patterns P0..P7: the two (row, col) positions of each.
PAIR_PATTERNS: tuple[tuple[tuple[int, int], tuple[int, int]], ...] = (
    ((0, 0), (2, 2)),
    ((0, 2), (2, 0)),
    ((1, 1), (3, 3)),
    ((1, 3), (3, 1)),
    ((0, 1), (2, 3)),
    ((0, 3), (2, 1)),
    ((1, 0), (3, 2)),
    ((1, 2), (3, 0)),
)
_A = (0, 2, 4, 6, 1, 3, 5, 7)
_B = (1, 3, 5, 7, 0, 2, 4, 6)
#: s3 eight-part masks: mask k gives group g the pair pattern EIGHT_PART[k][g].
EIGHT_PART: tuple[tuple[int, ...], ...] = tuple(
    tuple(((_A if k % 2 == 0 else _B)[g] + 2 * (k // 2)) % 8 for g in range(8)) for k in range(8)
)
#: s2 four-part masks: mask k gives quarter q the unit position u_(q XOR FOUR_PART_XOR[k]).
FOUR_PART_XOR: tuple[int, ...] = (0, 3, 2, 1)
#: Position removed from each 4x4 tile of the s2 lattice by the official ``get_mask_for_s1`` (§4.6).
QUIRK_REMOVED: tuple[tuple[int, int], ...] = ((0, 0), (1, 1), (0, 1), (1, 0), (0, 2), (1, 3), (0, 3), (1, 2))


@dataclass(frozen=True)
class Step:
    """One entropy-coding step (§4.4 module index table).

    index: 1..11; scale: 1, 2 or 3; mask: the mask id within the scale (two-part 0/1, four-part 1..3,
    eight-part 2..7); adaptor: index into ``y_spatial_prior_adaptor_list_s<scale>`` (None for step 1,
    which uses the hyperprior only); param: index into ``adaptive_params_list``; chunks: k of the
    channel packing (2, 4 or 8); starts_scale: a scale transition precedes this step.
    """

    index: int
    scale: int
    mask: int
    adaptor: int | None
    param: int | None
    chunks: int
    starts_scale: bool

    @property
    def uses_network(self) -> bool:
        return self.adaptor is not None


def _build_steps() -> tuple[Step, ...]:
    steps = [Step(1, 1, 0, None, None, 2, True), Step(2, 1, 1, 0, 0, 2, False)]
    for i in range(3):  # the official code indexes the adaptor list with i - 1 (wraps to the last)
        steps.append(Step(3 + i, 2, i + 1, (i - 1) % 3, i + 1, 4, i == 0))
    for i in range(6):
        steps.append(Step(6 + i, 3, i + 2, (i - 1) % 6, i + 4, 8, i == 0))
    return tuple(steps)


#: The 11 coding steps in order.
STEPS: tuple[Step, ...] = _build_steps()
#: The final step: nothing reads the context it would update.
LAST_STEP: Step = STEPS[-1]
#: Adaptors (``y_spatial_prior_adaptor_list_s<scale>`` lengths) of scales 1, 2, 3: (1, 3, 6).
ADAPTORS_PER_SCALE: tuple[int, int, int] = tuple(
    1 + max(s.adaptor for s in STEPS if s.scale == scale and s.uses_network) for scale in (1, 2, 3)
)
#: Quant-step vectors (``adaptive_params_list`` length): 10.
NUM_QUANT_PARAMS: int = 1 + max(s.param for s in STEPS if s.uses_network)


def _check_channels(m: int) -> int:
    if m % 8:
        raise ValueError(f"channel count must be a multiple of 8, got {m}")
    return m // 8


# --- gathers and scatters (strided slicing) -------------------------------------------------------


def gather_y_to_s2(t: torch.Tensor) -> torch.Tensor:
    """(B, M, H, W) -> (B, M, H/2, W/2): group g takes t[..., r::2, c::2] at ``S2_OFFSETS[g % 4]``."""
    g = _check_channels(t.shape[1])
    parts = []
    for k in range(8):
        r, c = S2_OFFSETS[k % 4]
        parts.append(t[:, k * g : (k + 1) * g, r::2, c::2])
    return torch.cat(parts, dim=1)


def gather_s2_to_s1(t: torch.Tensor) -> torch.Tensor:
    """(B, M, h, w) on the s2 grid -> (B, M, h/2, w/2): quarter q takes t[..., r::2, c::2]."""
    q = _check_channels(t.shape[1]) * 2
    parts = []
    for k in range(4):
        r, c = S1_OFFSETS[k]
        parts.append(t[:, k * q : (k + 1) * q, r::2, c::2])
    return torch.cat(parts, dim=1)


def gather_y_to_s1(t: torch.Tensor) -> torch.Tensor:
    """(B, M, H, W) -> (B, M, H/4, W/4)."""
    return gather_s2_to_s1(gather_y_to_s2(t))


def scatter_s2_to_y(t: torch.Tensor) -> torch.Tensor:
    """Inverse of ``gather_y_to_s2``: (B, M, h, w) -> (B, M, 2h, 2w), zero off the lattices."""
    b, m, h, w = t.shape
    g = _check_channels(m)
    out = t.new_zeros(b, m, 2 * h, 2 * w)
    for k in range(8):
        r, c = S2_OFFSETS[k % 4]
        out[:, k * g : (k + 1) * g, r::2, c::2] = t[:, k * g : (k + 1) * g]
    return out


def scatter_s1_to_s2(t: torch.Tensor) -> torch.Tensor:
    """Inverse of ``gather_s2_to_s1``: (B, M, h, w) -> (B, M, 2h, 2w), zero off the lattices."""
    b, m, h, w = t.shape
    q = _check_channels(m) * 2
    out = t.new_zeros(b, m, 2 * h, 2 * w)
    for k in range(4):
        r, c = S1_OFFSETS[k]
        out[:, k * q : (k + 1) * q, r::2, c::2] = t[:, k * q : (k + 1) * q]
    return out


def scatter_pair(t: torch.Tensor, scatter: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Scatter a 2M-channel tensor as two M-channel halves: (B, 2M, h, w) -> (B, 2M, 2h, 2w)."""
    a, b = t.chunk(2, dim=1)
    return torch.cat((scatter(a), scatter(b)), dim=1)


# --- step masks -----------------------------------------------------------------------------------


def _tile(pattern: np.ndarray, h: int, w: int) -> np.ndarray:
    """Tile a (ph, pw) pattern periodically and crop to (h, w)."""
    ph, pw = pattern.shape
    return np.tile(pattern, (-(-h // ph), -(-w // pw)))[:h, :w]


def _group_patterns(k_scale: int, mask: int) -> np.ndarray:
    """Per-group periodic pattern of a step mask: (8, p, p) with p = 2 (s1), 2 (s2) or 4 (s3)."""
    pats = np.zeros((8, 4, 4), dtype=bool)
    if k_scale == 1:
        pats = np.zeros((8, 2, 2), dtype=bool)
        for g in range(8):
            half = g // 4
            for r in range(2):
                for c in range(2):
                    parity = (r + c) % 2
                    pats[g, r, c] = (parity == half) if mask == 0 else (parity != half)
    elif k_scale == 2:
        pats = np.zeros((8, 2, 2), dtype=bool)
        for g in range(8):
            u = (g // 2) ^ FOUR_PART_XOR[mask]
            pats[g, u // 2, u % 2] = True
    else:
        for g in range(8):
            for r, c in PAIR_PATTERNS[EIGHT_PART[mask][g]]:
                pats[g, r, c] = True
    return pats


@lru_cache(maxsize=256)
def _mask_np(scale: int, mask: int, m: int, h: int, w: int) -> np.ndarray:
    g = _check_channels(m)
    pats = _group_patterns(scale, mask)
    per_group = np.stack([_tile(p, h, w) for p in pats])  # (8, h, w)
    return np.repeat(per_group, g, axis=0)  # (M, h, w)


_TENSOR_CACHE: dict[tuple, torch.Tensor] = {}


def _cached(key: tuple, build: Callable[[], torch.Tensor]) -> torch.Tensor:
    t = _TENSOR_CACHE.get(key)
    if t is None:
        if len(_TENSOR_CACHE) > 512:
            _TENSOR_CACHE.clear()
        # built as normal tensors even under inference_mode: the cache outlives the caller's mode, and
        # an inference tensor cached by compress() could not be saved for a later training backward
        with torch.inference_mode(False):
            t = build()
        _TENSOR_CACHE[key] = t
    return t


def step_mask_bool(step: Step, m: int, h: int, w: int) -> np.ndarray:
    """Boolean mask (M, h, w) of the elements ``step`` codes on its own grid (h, w)."""
    return _mask_np(step.scale, step.mask, m, h, w)


def step_mask(step: Step, m: int, h: int, w: int, device: torch.device | str = "cpu",
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Float mask (1, M, h, w) of ``step`` on its grid; cached per (step, shape, device, dtype)."""
    key = ("step", step.scale, step.mask, m, h, w, str(device), dtype)
    return _cached(key, lambda: torch.from_numpy(step_mask_bool(step, m, h, w)).to(device, dtype)[None])


# --- hyper terms at the scale transitions ---------------------------------------------------------


@lru_cache(maxsize=64)
def _s2_hyper_index(m: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Source index (M, h/2*w/2) into the flattened y grid and target mask (M, h/2*w/2) for §4.6."""
    g = _check_channels(m)
    if h % 4 or w % 4:
        raise ValueError(f"y grid must have H, W multiples of 4, got {h}x{w}")
    h2, w2 = h // 2, w // 2
    index = np.zeros((8, h2 * w2), dtype=np.int64)
    target = np.zeros((8, h2 * w2), dtype=bool)
    for k in range(8):
        src = np.zeros((4, 4), dtype=bool)  # the s2 lattice of group k, minus one quirky position
        for pat in (_A[k], _B[k]):
            for r, c in PAIR_PATTERNS[pat]:
                src[r, c] = True
        src[QUIRK_REMOVED[k]] = False
        tgt = np.ones((2, 2), dtype=bool)
        q = k // 2
        tgt[q // 2, q % 2] = False  # every s2 position except the quarter's s1 position
        src_pos = np.flatnonzero(_tile(src, h, w))
        tgt_pos = np.flatnonzero(_tile(tgt, h2, w2))
        assert src_pos.size == tgt_pos.size
        index[k, tgt_pos] = src_pos  # raster-order copy: the n-th source goes to the n-th target
        target[k, tgt_pos] = True
    return np.repeat(index, g, axis=0), np.repeat(target, g, axis=0)


def s2_hyper(x: torch.Tensor) -> torch.Tensor:
    """Official ``get_s2_hyper_with_mask``: (B, M, H, W) hyper params -> (B, M, H/2, W/2).

    Reproduces the raster-order copy of §4.6 exactly (spatially misaligned for groups 2..7); the
    result is zero at the s1 positions of the s2 grid.
    """
    b, m, h, w = x.shape
    key = ("s2hyper", m, h, w, str(x.device))

    def build() -> torch.Tensor:
        idx, tgt = _s2_hyper_index(m, h, w)
        return torch.from_numpy(idx).to(x.device), torch.from_numpy(tgt).to(x.device)

    idx, tgt = _cached(key, build)
    flat = x.reshape(b, m, h * w).gather(2, idx.expand(b, -1, -1))
    return torch.where(tgt, flat, torch.zeros((), dtype=x.dtype, device=x.device)).view(b, m, h // 2, w // 2)


def s3_hyper_mask(m: int, h: int, w: int, device: torch.device | str = "cpu",
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(1, M, H, W) float mask: 1 where y positions are NOT in the group's s2 lattice."""
    key = ("s3hyper", m, h, w, str(device), dtype)

    def build() -> torch.Tensor:
        g = _check_channels(m)
        pats = np.ones((8, 2, 2), dtype=bool)
        for k in range(8):
            pats[k][S2_OFFSETS[k % 4]] = False
        grid = np.repeat(np.stack([_tile(p, h, w) for p in pats]), g, axis=0)
        return torch.from_numpy(grid).to(device, dtype)[None]

    return _cached(key, build)


def s3_hyper(x: torch.Tensor) -> torch.Tensor:
    """Official ``get_s3_hyper_with_mask`` (aligned): x at the non-s2 positions, zero elsewhere."""
    _, m, h, w = x.shape
    return x * s3_hyper_mask(m, h, w, x.device, x.dtype)


# --- channel packing (§7.3) -----------------------------------------------------------------------


def pack_channels(t: torch.Tensor, k: int) -> torch.Tensor:
    """Sum of k equal channel chunks: (B, M, h, w) -> (B, M/k, h, w)."""
    b, m, h, w = t.shape
    return t.reshape(b, k, m // k, h, w).sum(dim=1)


def unpack_channels(t: torch.Tensor, k: int) -> torch.Tensor:
    """Repeat k times along channels: (B, M/k, h, w) -> (B, M, h, w) (mask it afterwards)."""
    return t.repeat(1, k, 1, 1)


# --- step map (tests, diagnostics) ----------------------------------------------------------------


def to_y_grid(t: torch.Tensor, scale: int) -> torch.Tensor:
    """Scatter a tensor from the grid of ``scale`` to y: (B, M, h, w) -> (B, M, H, W)."""
    if scale == 1:
        t = scatter_s1_to_s2(t)
    if scale <= 2:
        t = scatter_s2_to_y(t)
    return t


def grid_shape(scale: int, h: int, w: int) -> tuple[int, int]:
    """Grid (h, w) of ``scale`` for a y grid (h, w)."""
    f = {1: 4, 2: 2, 3: 1}[scale]
    return h // f, w // f


def step_map(m: int, h: int, w: int) -> torch.Tensor:
    """Coding step (1..11) of every element of a y of shape (M, H, W); 0 where none (never, if valid).

    Raises ``ValueError`` if an element would be coded twice.
    """
    out = torch.zeros(1, m, h, w, dtype=torch.int64)
    for step in STEPS:
        gh, gw = grid_shape(step.scale, h, w)
        mask = torch.from_numpy(step_mask_bool(step, m, gh, gw)).to(torch.int64)[None]
        on_y = to_y_grid(mask, step.scale)
        if bool(((out > 0) & (on_y > 0)).any()):
            raise ValueError(f"step {step.index} codes an element twice")
        out = out + on_y * step.index
    return out[0]
