"""BD-rate and BD-PSNR between CompressAI-schema result files (the ``bjontegaard`` package).

- Interpolation: ``pchip`` by default (piecewise-cubic Hermite, monotone, passes through every point, the
  choice of the bjontegaard package's authors for new work); ``cubic`` is the classic VCEG-M33 cubic
  polynomial fit (needs ≥ 4 points), ``akima`` is also accepted. On the stored Kodak anchors the methods
  agree to ~0.1 % (``spec/ecosystem.md`` §4.3).
- ``require_matching_points=False``: anchor and test may have different numbers of points; the integral
  runs over the overlapping interval of the two curves (distortion range for BD-rate, log-rate range for
  BD-PSNR), so values against different tests cover different intervals. No overlap gives NaN.
- Points are sorted by rate; points whose distortion does not increase with rate (a non-monotone curve,
  which the interpolators cannot take) are dropped and counted in the result.
- For ``metric="ms-ssim"`` the distortion is MS-SSIM in dB and "BD-PSNR" is the BD-MS-SSIM in dB.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hpcm.eval.results import rd_points

METHODS = ("pchip", "cubic", "akima")


@dataclass(frozen=True)
class BDResult:
    """BD-rate (%, negative = fewer bits than the anchor) and BD-distortion (dB, positive = better)."""

    anchor: str
    test: str
    metric: str
    method: str
    bd_rate: float
    bd_dist: float
    overlap_db: tuple[float, float]
    dropped: int


def monotone_curve(rate: Sequence[float], dist: Sequence[float]) -> tuple[np.ndarray, np.ndarray, int]:
    """Sort by rate and keep the points whose distortion strictly increases; returns (rate, dist, dropped)."""
    pts = sorted(
        (float(r), float(d))
        for r, d in zip(rate, dist)
        if r is not None and d is not None and math.isfinite(float(r)) and math.isfinite(float(d))
        and float(r) > 0
    )
    kept: list[tuple[float, float]] = []
    for r, d in pts:
        if kept and (r <= kept[-1][0] or d <= kept[-1][1]):
            continue
        kept.append((r, d))
    dropped = len(rate) - len(kept)
    return np.array([p[0] for p in kept]), np.array([p[1] for p in kept]), dropped


def bd_curves(
    anchor_rate: Sequence[float],
    anchor_dist: Sequence[float],
    test_rate: Sequence[float],
    test_dist: Sequence[float],
    *,
    method: str = "pchip",
) -> tuple[float, float, tuple[float, float], int]:
    """(BD-rate %, BD-distortion dB, overlapping distortion interval, dropped points) of two RD curves."""
    import bjontegaard as bd

    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}")
    ra, da, drop_a = monotone_curve(anchor_rate, anchor_dist)
    rt, dt, drop_t = monotone_curve(test_rate, test_dist)
    need = 4 if method == "cubic" else 2
    if len(ra) < need or len(rt) < need:
        raise ValueError(f"{method} needs ≥ {need} monotone points per curve "
                         f"(anchor {len(ra)}, test {len(rt)})")
    lo, hi = max(da.min(), dt.min()), min(da.max(), dt.max())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # low-overlap warnings: the overlap is reported instead
        rate = float(bd.bd_rate(ra, da, rt, dt, method=method, require_matching_points=False, min_overlap=0))
        dist = float(bd.bd_psnr(ra, da, rt, dt, method=method, require_matching_points=False, min_overlap=0))
    return rate, dist, (float(lo), float(hi)), drop_a + drop_t


def bd_compare(
    anchor: dict[str, Any], test: dict[str, Any], *, metric: str = "psnr", method: str = "pchip"
) -> BDResult:
    """BD-rate / BD-distortion of result document ``test`` against ``anchor``."""
    ra, da = rd_points(anchor, metric)
    rt, dt = rd_points(test, metric)
    rate, dist, overlap, dropped = bd_curves(ra, da, rt, dt, method=method)
    return BDResult(anchor=anchor["name"], test=test["name"], metric=metric, method=method,
                    bd_rate=rate, bd_dist=dist, overlap_db=overlap, dropped=dropped)


def format_table(rows: Sequence[BDResult]) -> str:
    """Plain-text table of BD results (one row per test)."""
    if not rows:
        return "(no results)"
    dist_name = "BD-PSNR (dB)" if rows[0].metric == "psnr" else "BD-MS-SSIM (dB)"
    header = ["test", "anchor", "BD-rate (%)", dist_name, "overlap (dB)", "dropped"]
    body = [
        [r.test, r.anchor, f"{r.bd_rate:+.2f}", f"{r.bd_dist:+.3f}",
         f"{r.overlap_db[0]:.2f}–{r.overlap_db[1]:.2f}" if r.overlap_db[0] < r.overlap_db[1] else "none",
         str(r.dropped)]
        for r in rows
    ]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths)) for b in body]
    foot = (f"metric: {rows[0].metric}, interpolation: {rows[0].method}; "
            "negative BD-rate = fewer bits than the anchor")
    return "\n".join(lines + [foot])
