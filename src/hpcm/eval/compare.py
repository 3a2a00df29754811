"""``hpcm compare``: one image coded by hpcm and classical codecs at (nearly) the same bpp, side by side.

Every codec's quality parameter is searched so that its file lands as close as possible to the target
bpp (bpp from file bytes, headers included): bisection for continuous parameters (a variable-rate hpcm
model, WebP), the closest of the levels for discrete ones (JPEG, AVIF quality steps, a fixed-rate hpcm
preset's shipped qualities). The picture shows the same crop of every decoded image with its codec, bpp
and PSNR, the original first.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from hpcm.eval.metrics import bpp as bits_per_pixel
from hpcm.eval.metrics import psnr


@dataclass
class Coded:
    """One codec's result: label, parameter used, file size, bpp, PSNR and the decoded (H, W, 3) image."""

    label: str
    quality: float
    size: int
    bpp: float
    psnr: float
    decoded: np.ndarray


def closest_level(
    encode: Callable[[float], bytes], levels: Sequence[float], target_bytes: float
) -> tuple[float, bytes]:
    """The level whose file size is closest to ``target_bytes`` (sizes grow with the level).

    A search over the sorted ``levels`` (:func:`~hpcm.codec.rate_control.last_true`, interpolating log(size)
    between the levels tried: the last level that fits), then the nearer of it and the next one."""
    from hpcm.codec.rate_control import interpolating_guess, last_true

    levels = sorted(levels)
    cache: dict[int, bytes] = {}
    log_sizes: dict[int, float] = {}

    def at(i: int) -> bytes:
        if i not in cache:
            cache[i] = encode(levels[i])
            log_sizes[i] = math.log(max(len(cache[i]), 1))
        return cache[i]

    # prior for the second try: sizes spanning a factor of 8 over the levels
    guess = interpolating_guess(log_sizes, math.log(max(target_bytes, 1) + 0.5), start=len(levels) // 2,
                                slope=math.log(8) / max(len(levels), 1))
    fits = last_true(len(levels), lambda i: len(at(i)) <= target_bytes, guess)
    neighbours = [i for i in (fits, fits + 1) if 0 <= i < len(levels)]
    best = min(neighbours, key=lambda i: abs(len(at(i)) - target_bytes))
    return levels[best], at(best)


def code_image(
    label: str,
    image: np.ndarray,
    encode: Callable[[float], bytes],
    decode: Callable[[bytes], np.ndarray],
    levels: Sequence[float],
    target_bpp: float,
) -> Coded:
    """Code ``image`` at the level of ``levels`` that lands closest to ``target_bpp``."""
    h, w = image.shape[:2]
    quality, data = closest_level(encode, levels, target_bpp * h * w / 8)
    decoded = decode(data)
    return Coded(label, quality, len(data), bits_per_pixel(len(data), h, w), psnr(image, decoded), decoded)


def hpcm_levels(model) -> list[float]:
    """Qualities to search for an hpcm model: every 0.01 of a variable-rate model's range (bisection makes
    that about 10 encodes), or just the weights' own quality for a fixed-rate model."""
    from hpcm.codec.rate_control import quality_levels
    from hpcm.models.protocol import weights_info

    levels = quality_levels(model)
    if levels == [None]:
        return [float(weights_info(model).get("quality") or 0)]
    return [float(q) for q in levels]


def classical_levels(codec: str) -> list[float]:
    """The quality parameter values searched for a classical codec."""
    if codec == "jpeg":
        return list(range(1, 101))
    if codec == "webp":
        return [float(q) for q in range(0, 101)]
    if codec == "avif":
        return list(range(0, 101))
    if codec == "jpeg2000":
        return [round(0.02 * i, 2) for i in range(1, 201)]  # target bpp
    return list(range(1, 101))  # heic


def side_by_side(
    original: np.ndarray, results: Sequence[Coded], crop: tuple[int, int, int, int], scale: int = 1
) -> np.ndarray:
    """(H, W, 3) uint8 picture: the crop ``(x, y, w, h)`` of the original and of every decoded image in one
    row, each with a caption line (codec, bpp, PSNR); ``scale`` enlarges pixels (nearest neighbour)."""
    from PIL import Image, ImageDraw

    x, y, cw, ch = crop
    tiles = [("original", original)] + [
        (f"{r.label}  {r.bpp:.3f} bpp  {r.psnr:.2f} dB", r.decoded) for r in results
    ]
    caption, gap = 18, 6
    tw, th = cw * scale, ch * scale
    canvas = Image.new("RGB", (len(tiles) * (tw + gap) - gap, th + caption), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (text, img) in enumerate(tiles):
        tile = Image.fromarray(np.ascontiguousarray(img[y : y + ch, x : x + cw]))
        if scale != 1:
            tile = tile.resize((tw, th), Image.NEAREST)
        left = i * (tw + gap)
        canvas.paste(tile, (left, caption))
        draw.text((left + 2, 3), text, fill="black")
    return np.asarray(canvas)


def default_crop(height: int, width: int, size: int = 256) -> tuple[int, int, int, int]:
    """A centred square crop of at most ``size`` pixels."""
    cw, ch = min(size, width), min(size, height)
    return (width - cw) // 2, (height - ch) // 2, cw, ch
