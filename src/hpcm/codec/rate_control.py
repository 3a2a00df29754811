"""Rate control: the quality that meets a file-size or PSNR target (``hpcm compress --max-size``).

A variable-rate model codes at any quality of its range on the header's grid (``api.QUALITY_STEP`` = 0.01).
File size and PSNR grow with the quality, smoothly: a search over that grid that interpolates log(size) or
PSNR between the levels tried (:func:`interpolating_guess`; bisection after 8 guesses, so at most about 18
encodes) finds in a few encodes

- ``max_bytes``: the highest quality whose file (header included) is at most ``max_bytes`` long;
- ``min_psnr``: the lowest quality whose decoded image reaches ``min_psnr`` dB (RGB PSNR against the
  input, as ``hpcm eval`` measures it; each candidate is decoded, so this costs twice as much).

Only files that were coded and measured are returned, so the target holds whatever the curve does; where
size or PSNR is not monotone at the 0.01 scale, the answer can be a grid step short of the best. A
fixed-rate model has one level: it meets the target, or the call fails with what it reaches.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from torch import nn

from hpcm.codec import container
from hpcm.codec.api import DEFAULT_VR_QUALITY, QUALITY_STEP, CodecTimes, decode, encode
from hpcm.codec.container import Header
from hpcm.errors import HPCMError
from hpcm.models.protocol import is_variable_rate

__all__ = [
    "RateTarget", "TargetResult", "encode_to_target", "interpolating_guess", "last_true", "quality_levels",
]

#: Prior slopes of a variable-rate curve per quality step (0.01), for the second try of the search before two
#: measured points give their own: hpcm-small-vr on Kodak goes from 0.226 to 1.291 bpp and 28.1 to 34.4 dB
#: over qualities 1-8 (docs/results).
LOG_BYTES_PER_LEVEL = math.log(1.291 / 0.226) / 700
PSNR_PER_LEVEL = (34.43 - 28.11) / 700


def last_true(count: int, ok: Callable[[int], bool],
              guess: Callable[[int, int], int | None] | None = None, max_guesses: int = 8) -> int:
    """The largest ``i`` in ``[0, count)`` with ``ok(i)``, for ``ok`` true up to some index and false
    after it; -1 when ``ok(0)`` is false. Each index is tried at most once.

    Bisection (about log2(count) calls), or, with ``guess(lo, hi)``, the index it proposes inside the
    bracket (lo: last index known true or -1, hi: first known false or ``count``; clamped into the open
    interval; None: bisect) for the first ``max_guesses`` steps: with a good interpolation that ends in
    a few calls, and at most ``max_guesses`` + log2(count) whatever it proposes."""
    lo, hi = -1, count  # ok(lo) is taken as true and ok(hi) as false
    guesses = 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if guess is not None and guesses < max_guesses:
            proposed = guess(lo, hi)
            if proposed is not None:
                mid = min(max(int(proposed), lo + 1), hi - 1)
                guesses += 1
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return lo


def interpolating_guess(values: dict[int, float], goal: float, *, start: int,
                        slope: float) -> Callable[[int, int], int | None]:
    """A ``guess`` for :func:`last_true` where ``ok(i)`` means ``values[i]`` (measured when ``i`` was tried,
    increasing in ``i``) is below ``goal``: ``start`` first; then the index where the line through the
    bracket's measured ends crosses ``goal`` (rounded down: the last index below it), or, with one end
    measured, the line through it and the nearest other index tried (the prior ``slope``, value per index,
    when there is none)."""

    def guess(lo: int, hi: int) -> int | None:
        known = [(i, values[i]) for i in (lo, hi) if i in values]
        if not known:
            return start if not values else None
        if len(known) == 1:  # the slope through the nearest other point tried, else the prior one
            (x0, y0), dydx = known[0], slope
            others = [i for i in values if i != x0]
            if others:
                x1 = min(others, key=lambda i: abs(i - x0))
                if (values[x1] - y0) * (x1 - x0) > 0:
                    dydx = (values[x1] - y0) / (x1 - x0)
        else:
            (x0, y0), (x1, y1) = known
            if not y1 > y0:
                return None
            dydx = (y1 - y0) / (x1 - x0)
        return math.floor(x0 + (goal - y0) / dydx)

    return guess


def quality_levels(model: nn.Module) -> list[float | None]:
    """The qualities ``model`` can code, ascending: every ``QUALITY_STEP`` of a variable-rate model's range;
    ``[None]`` (the weights' own quality) for a fixed-rate model."""
    if not is_variable_rate(model):
        return [None]
    lo, hi = model.quality_gains.quality_range
    return [round(lo + QUALITY_STEP * i, 2) for i in range(int(round((hi - lo) / QUALITY_STEP)) + 1)]


@dataclass(frozen=True)
class RateTarget:
    """What the file must meet: at most ``max_bytes`` bytes, or at least ``min_psnr`` dB (exactly one)."""

    max_bytes: int | None = None
    min_psnr: float | None = None

    def __post_init__(self) -> None:
        if (self.max_bytes is None) == (self.min_psnr is None):
            raise ValueError("give exactly one of max_bytes and min_psnr")
        if self.max_bytes is not None and not self.max_bytes > 0:
            raise HPCMError(f"the largest file size must be positive, got {self.max_bytes}")
        if self.min_psnr is not None and not (math.isfinite(self.min_psnr) and self.min_psnr > 0):
            raise HPCMError(f"the PSNR target must be a positive number of dB, got {self.min_psnr}")

    @classmethod
    def from_bpp(cls, bpp: float, height: int, width: int) -> RateTarget:
        """At most ``bpp`` bits per pixel of an H×W image (file bytes, header included)."""
        if not (math.isfinite(bpp) and bpp > 0):
            raise HPCMError(f"the bpp target must be a positive number, got {bpp}")
        max_bytes = math.floor(bpp * height * width / 8)
        if max_bytes < 1:
            raise HPCMError(f"{bpp:g} bpp of a {width}x{height} image is less than one byte")
        return cls(max_bytes=max_bytes)

    def describe(self) -> str:
        if self.max_bytes is not None:
            return f"at most {self.max_bytes} bytes"
        return f"at least {self.min_psnr:g} dB"


@dataclass
class TargetResult:
    """The file chosen for a target: its bytes, header and encode times, the quality searched for (None:
    a fixed-rate model), its size, its PSNR (measured for PSNR targets only), and what the search cost."""

    data: bytes
    header: Header
    times: CodecTimes
    quality: float | None
    size: int
    psnr: float | None
    encodes: int
    seconds: float


@dataclass
class _Candidate:
    data: bytes
    header: Header
    times: CodecTimes
    psnr: float | None


def encode_to_target(model: nn.Module, image: np.ndarray, target: RateTarget, *, padding: str = "replicate",
                     verify: bool = False, format_version: int = container.VERSION,
                     levels: Sequence[float | None] | None = None,
                     icc_profile: bytes | None = None, exif: bytes | None = None,
                     xmp: bytes | None = None) -> TargetResult:
    """Code ``image`` (H, W, 3 uint8) at the quality that meets ``target`` (see the module docstring).

    ``levels``: the qualities to search, ascending (default :func:`quality_levels`). With ``verify`` every
    candidate is verified as :func:`~hpcm.codec.api.encode` does (its size includes the check), and
    ``icc_profile``, ``exif`` and ``xmp`` are stored in every candidate (their size counts). Raises
    ``HPCMError`` naming what the model reaches when no level meets the target."""
    from hpcm.eval.metrics import psnr

    levels = list(quality_levels(model) if levels is None else levels)
    t0 = time.perf_counter()
    cache: dict[int, _Candidate] = {}
    values: dict[int, float] = {}  # log(bytes) or PSNR of every level tried, for the interpolation
    start = min(range(len(levels)), key=lambda i: abs((levels[i] or 0.0) - DEFAULT_VR_QUALITY))

    def at(i: int) -> _Candidate:
        if i not in cache:
            data, header, times = encode(model, image, quality=levels[i], padding=padding, verify=verify,
                                         format_version=format_version, icc_profile=icc_profile,
                                         exif=exif, xmp=xmp)
            measured = psnr(image, decode(data, model)[0]) if target.min_psnr is not None else None
            cache[i] = _Candidate(data, header, times, measured)
            values[i] = math.log(len(data)) if measured is None else min(measured, 1e3)
        return cache[i]

    if target.max_bytes is not None:
        guess = interpolating_guess(values, math.log(target.max_bytes + 0.5), start=start,
                                    slope=LOG_BYTES_PER_LEVEL)
        best = last_true(len(levels), lambda i: len(at(i).data) <= target.max_bytes, guess)
        if best < 0:
            raise HPCMError(f"cannot fit the image in {target.max_bytes} bytes: the lowest quality"
                            f"{_level_text(levels[0])} gives {len(at(0).data)} bytes")
    else:
        guess = interpolating_guess(values, target.min_psnr, start=start, slope=PSNR_PER_LEVEL)
        best = last_true(len(levels), lambda i: at(i).psnr < target.min_psnr, guess) + 1
        if best == len(levels):
            top = at(len(levels) - 1).psnr
            raise HPCMError(f"cannot reach {target.min_psnr:g} dB: the highest quality"
                            f"{_level_text(levels[-1])} gives {top:.2f} dB")
    chosen = at(best)
    return TargetResult(data=chosen.data, header=chosen.header, times=chosen.times, quality=levels[best],
                        size=len(chosen.data), psnr=chosen.psnr, encodes=len(cache),
                        seconds=time.perf_counter() - t0)


def _level_text(quality: float | None) -> str:
    return "" if quality is None else f" ({quality:g})"
