"""``hpcm eval``: evaluate learned models on an image folder in CompressAI's ``eval_model`` JSON schema.

Protocol (``spec/hpcm.md`` §8.4, ``spec/ecosystem.md`` §3):

- real coding (default): ``compress_image`` → bytes → ``decompress_image``; bpp = 8·len(file) / (H·W of the
  unpadded image), i.e. the whole ``.hpcm`` file *including its header* (slightly more than CompressAI's
  payload-only count); encode / decode seconds are wall clock around those two calls (``cuda.synchronize``
  is implied: both return host data);
- ``estimate=True``: one eval-mode forward on the image padded to ``model.size_multiple`` exactly as the
  codec pads it (``hpcm.codec.api.pad_image``, edge replication split evenly between both sides);
  bpp = Σ −log2(likelihoods) / (H·W unpadded); the reconstruction is cropped, clamped and rounded to 8 bit.
  As in CompressAI's ``--entropy-estimation``, the forward time is split in half between
  ``encoding_time`` and ``decoding_time`` (the full time is also kept as ``forward_time``);
- PSNR on 8-bit values, MS-SSIM with ``pytorch_msssim`` (data_range=1) and in dB, per image then mean.
"""

from __future__ import annotations

import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hpcm.eval.metrics import bpp, image_metrics, to_uint8
from hpcm.eval.results import aggregate, list_images, progress
from hpcm.models.protocol import is_variable_rate, model_device, size_multiple, weights_info

CompressFn = Callable[[Any, np.ndarray], bytes]
DecompressFn = Callable[[bytes, Any], np.ndarray]


@dataclass(frozen=True)
class Codec:
    """The two codec calls ``hpcm eval`` uses; defaults to :mod:`hpcm.codec.api` (injectable for tests)."""

    compress: CompressFn
    decompress: DecompressFn

    @classmethod
    def default(cls) -> Codec:
        from hpcm.codec.api import compress_image, decompress_image

        return cls(compress=compress_image, decompress=decompress_image)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def estimate_image(
    model: torch.nn.Module, image: np.ndarray, quality: float | None = None
) -> tuple[float, np.ndarray, float]:
    """Likelihood bpp, 8-bit reconstruction and forward seconds of one (H, W, 3) uint8 image.

    ``quality``: for variable-rate models."""
    from hpcm.codec.api import pad_image

    device = model_device(model)
    h, w = image.shape[:2]
    padded, top, left = pad_image(image, size_multiple(model), mode="replicate")
    xp = torch.from_numpy(np.ascontiguousarray(padded)).permute(2, 0, 1)[None].float().div(255.0).to(device)
    _sync(device)
    t0 = time.perf_counter()
    out = model(xp, training=False, **({} if quality is None else {"quality": quality}))
    _sync(device)
    elapsed = time.perf_counter() - t0
    bits = sum(float(-torch.log2(lk.double()).sum()) for lk in out["likelihoods"].values())
    x_hat = out["x_hat"][..., top : top + h, left : left + w]
    return bits / (h * w), to_uint8(x_hat.clamp(0, 1)), elapsed


def evaluate_model(
    model: torch.nn.Module,
    images: Sequence[tuple[str, np.ndarray]],
    *,
    name: str,
    quality: Any = None,
    estimate: bool = False,
    codec: Codec | None = None,
    description: str = "",
    bar: Any = None,
    refine_steps: int = 0,
) -> list[dict[str, Any]]:
    """Per-image records (CompressAI ``--per-image`` shape) of ``model`` on ``[(stem, HW3 uint8)]``.

    A variable-rate model codes every image at ``quality``; ``refine_steps``: the encoder's latent
    refinement (real coding only)."""
    model.eval()
    if not estimate and codec is None:
        codec = Codec.default()
    if estimate and refine_steps:
        raise ValueError("latent refinement needs real coding (not estimate)")
    vr_quality = float(quality) if is_variable_rate(model) and quality is not None else None
    kwargs: dict[str, Any] = {} if vr_quality is None else {"quality": vr_quality}
    if refine_steps:
        kwargs["refine_steps"] = refine_steps
    records = []
    for stem, image in images:
        h, w = image.shape[:2]
        if estimate:
            rate, decoded, fwd = estimate_image(model, image, vr_quality)
            timing = {"encoding_time": fwd / 2, "decoding_time": fwd / 2, "forward_time": fwd}
        else:
            assert codec is not None
            t0 = time.perf_counter()
            data = codec.compress(model, image, **kwargs)
            t1 = time.perf_counter()
            decoded = codec.decompress(data, model)
            t2 = time.perf_counter()
            rate = bpp(len(data), h, w)
            timing = {"encoding_time": t1 - t0, "decoding_time": t2 - t1}
        if decoded.shape != image.shape or decoded.dtype != np.uint8:
            raise RuntimeError(f"{stem}: decoded {decoded.shape} {decoded.dtype}, not {image.shape} uint8")
        results = {"bpp": rate, **image_metrics(image, decoded), **timing}
        records.append({"source": stem, "name": name, "description": description, "quality": quality,
                        "results": results})
        if bar is not None:
            bar.update(1)
    return records


def evaluate(
    specs: Sequence[str],
    dataset: str | os.PathLike[str],
    *,
    qualities: Sequence[float] | None = None,
    estimate: bool = False,
    device: str = "cpu",
    limit: int | None = None,
    name: str | None = None,
    show_progress: bool | None = None,
    loader: Callable[..., Any] | None = None,
    codec: Codec | None = None,
    refine_steps: int = 0,
) -> dict[str, Any]:
    """Evaluate every ``spec`` (preset name or weights path) at every quality; one RD point each.

    A variable-rate model takes any quality in its range (fractional ones too); fixed-rate presets load
    their shipped weights of each (whole) quality.

    ``loader(spec, quality=..., device=...)`` defaults to :func:`hpcm.models.io.load_model`. Returns the
    CompressAI-schema document (points in the order spec × quality) with ``per_image`` records and
    ``meta.points`` (weights provenance of every point). ``refine_steps``: the encoder refines each
    image's latent with this many steps (:mod:`hpcm.codec.refine`; recorded in ``meta``).
    """
    from hpcm.codec.image_io import read_image

    if loader is None:
        from hpcm.models.io import load_model as loader  # type: ignore[no-redef]
    paths = list_images(dataset, limit)
    images = [(Path(p).stem, read_image(p)) for p in paths]
    runs = [(s, q) for s in specs for q in (list(qualities) if qualities else [None])]
    description = "Inference (entropy estimation)" if estimate else "Inference (hpcm, constriction)"
    if refine_steps:
        description += f", latent refinement {refine_steps} steps"
    points: list[tuple[Any, list[dict[str, Any]]]] = []
    provenance: list[dict[str, Any]] = []
    bar = progress(range(len(runs) * len(images)), desc="eval", enabled=show_progress)
    for spec, quality in runs:
        whole = quality is None or float(quality).is_integer()
        model = loader(spec, quality=int(quality) if whole and quality is not None else None, device=device)
        if not whole and not is_variable_rate(model):
            from hpcm.errors import HPCMError
            from hpcm.models.bundled import DEFAULT_MODEL

            raise HPCMError(f"{spec}: quality {quality} needs a variable-rate model (e.g. {DEFAULT_MODEL})")
        info = weights_info(model)
        label = name or str(info.get("preset") or Path(spec).stem)
        if info.get("trained") is False:
            warnings.warn(f"{spec}: evaluating untrained (initial) weights", stacklevel=2)
        q = quality if quality is not None else info.get("quality")
        records = evaluate_model(model, images, name=label, quality=q, estimate=estimate,
                                 codec=codec, description=description, bar=bar, refine_steps=refine_steps)
        points.append((q, records))
        extra = {k: v for k, v in info.items() if _jsonable(v)}
        provenance.append({"spec": str(spec), "quality": q, **extra})
        del model
    bar.close()
    label = name or (points[0][1][0]["name"] if points else "hpcm")
    meta = {"tool": "hpcm eval", "dataset": Path(dataset).resolve().name, "estimate": estimate,
            "refine_steps": refine_steps,
            "device": device, "images": [str(p) for p in paths],
            "points": provenance, "torch": torch.__version__, "argv": sys.argv[1:]}
    return aggregate(label, description, points, meta=meta)


def _jsonable(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, str | int | bool | type(None) | list | dict)
