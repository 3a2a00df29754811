"""Result records and CompressAI-schema documents shared by ``hpcm eval`` and ``hpcm bench-codec``.

A *record* is one image at one RD point, shaped like CompressAI's ``--per-image`` files::

    {"source": "kodim01", "name": ..., "description": ..., "quality": q, "results": {"bpp": .., ...}}

:func:`aggregate` averages records per point into the ``{"name", "description", "results": {key: [..]}}``
document (one list entry per point, in the order given) and keeps the records under ``per_image``.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from hpcm.atomic import atomic_write_bytes
from hpcm.eval.metrics import ms_ssim_db
from hpcm.eval.schema import validate_results

RESULT_KEYS = ("bpp", "psnr-rgb", "ms-ssim-rgb", "ms-ssim-db-rgb", "encoding_time", "decoding_time")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def list_images(dataset_dir: str | os.PathLike[str], limit: int | None = None) -> list[Path]:
    """Image files under ``dataset_dir`` (recursive, like CompressAI's eval_model), sorted by path."""
    root = Path(dataset_dir)
    if root.is_file():
        files = [root]
    elif root.is_dir():
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    else:
        raise FileNotFoundError(f"no such data set: {root}")
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {root}")
    return files[:limit] if limit is not None else files


def _mean(values: Iterable[float]) -> float:
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return sum(vals) / len(vals) if vals else math.nan


def aggregate(
    name: str,
    description: str,
    points: Sequence[tuple[Any, Sequence[dict[str, Any]]]],
    *,
    meta: dict[str, Any] | None = None,
    keys: Sequence[str] = RESULT_KEYS,
) -> dict[str, Any]:
    """CompressAI-schema document from ``points = [(quality, records), ...]`` (per-image means, in order)."""
    results: dict[str, list[float]] = {k: [] for k in keys}
    per_image: list[dict[str, Any]] = []
    for _quality, records in points:
        if not records:
            raise ValueError("a point without images")
        for key in keys:
            results[key].append(_mean(r["results"].get(key) for r in records))
        per_image.extend(records)
    doc: dict[str, Any] = {
        "name": name,
        "description": description,
        "quality": [q for q, _ in points],
        "results": results,
    }
    if meta:
        doc["meta"] = meta
    doc["per_image"] = per_image
    validate_results(doc)
    return doc


def save_results(doc: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``doc`` as indented JSON atomically (temporary file then rename)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(out, (json.dumps(doc, indent=2) + "\n").encode(), overwrite=True)


def load_results(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a CompressAI-schema results file."""
    with open(path) as fh:
        doc = json.load(fh)
    validate_results(doc)
    return doc


def select_points(doc: dict[str, Any], qualities: Sequence[Any]) -> dict[str, Any]:
    """Copy of ``doc`` keeping only the RD points whose ``quality`` label is in ``qualities`` (in file order).

    Labels compare as strings, so ``"2"`` selects quality 2. ``per_image`` records of the dropped points go
    too, and ``name`` gets a ``[q=...]`` suffix so a table says which points were used. Raises
    ``ValueError`` when the document has no ``quality`` list or a requested label is not in it.
    """
    labels = doc.get("quality")
    if not isinstance(labels, list) or len(labels) != len(doc["results"]["bpp"]):
        raise ValueError(f"{doc.get('name', 'results')}: no per-point 'quality' list to select from")
    wanted = [str(q) for q in qualities]
    have = [str(q) for q in labels]
    missing = [q for q in wanted if q not in have]
    if missing:
        raise ValueError(f"{doc['name']}: no point with quality {', '.join(missing)} (has {', '.join(have)})")
    keep = [i for i, q in enumerate(have) if q in wanted]
    out = dict(doc)
    out["name"] = f"{doc['name']} [q={','.join(have[i] for i in keep)}]"
    out["quality"] = [labels[i] for i in keep]
    out["results"] = {
        k: ([v[i] for i in keep] if isinstance(v, list) and len(v) == len(labels) else v)
        for k, v in doc["results"].items()
    }
    if "per_image" in doc:
        out["per_image"] = [r for r in doc["per_image"] if str(r.get("quality")) in wanted]
    validate_results(out)
    return out


def rd_points(doc: dict[str, Any], metric: str) -> tuple[list[float], list[float]]:
    """(bpp, distortion) lists of a results document; ``metric`` is ``psnr`` or ``ms-ssim`` (in dB).

    MS-SSIM comes from ``ms-ssim-db-rgb`` when present, else from ``ms-ssim-rgb`` converted to dB
    (as ``compressai.utils.plot`` does). Raises ``KeyError`` when the file lacks the metric.
    """
    res = doc["results"]
    if metric == "psnr":
        dist = [float(v) for v in res["psnr-rgb"]]
    elif metric == "ms-ssim":
        if "ms-ssim-db-rgb" in res:
            dist = [float(v) for v in res["ms-ssim-db-rgb"]]
        else:
            dist = [ms_ssim_db(float(v)) for v in res["ms-ssim-rgb"]]
    else:
        raise ValueError(f"metric must be 'psnr' or 'ms-ssim', got {metric!r}")
    return [float(v) for v in res["bpp"]], dist


def progress(
    iterable: Iterable[Any], *, total: int | None = None, desc: str = "", enabled: bool | None = None
):
    """tqdm progress bar on stderr, quiet unless stderr is a terminal (or ``enabled`` forces it)."""
    from tqdm import tqdm

    show = sys.stderr.isatty() if enabled is None else enabled
    return tqdm(iterable, total=total, desc=desc, disable=not show, leave=False, file=sys.stderr)
