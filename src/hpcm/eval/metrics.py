"""Image-quality and rate metrics, following the HPCM / CompressAI evaluation protocol.

- PSNR is computed on 8-bit values: 20·log10(255) − 10·log10(MSE) over all pixels and channels.
- MS-SSIM is ``pytorch_msssim.ms_ssim(x_hat, x, data_range=1.0)`` on the 8-bit images scaled to [0, 1]
  (identical to CompressAI's ``data_range=255`` on the 8-bit rounded images), reported also in dB as
  −10·log10(1 − MS-SSIM).
- bpp is 8 · bytes / (H·W of the unpadded image).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from pytorch_msssim import ms_ssim as _ms_ssim

MS_SSIM_WIN = 11


def _check_pair(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {a.shape} vs {b.shape}")
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"expected (H, W, 3) images, got {a.shape}")


def to_uint8(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """Float image(s) in [0, 1] → 8-bit: ``(x·255).clamp(0, 255).round()``; (1,3,H,W) or (3,H,W) → (H,W,3)."""
    t = torch.as_tensor(x).detach().float().cpu()
    if t.ndim == 4:
        if t.shape[0] != 1:
            raise ValueError("to_uint8 takes one image")
        t = t[0]
    if t.ndim == 3 and t.shape[0] == 3:
        t = t.permute(1, 2, 0)
    return (t * 255.0).clamp(0, 255).round().to(torch.uint8).numpy()


def psnr(original: np.ndarray, decoded: np.ndarray) -> float:
    """PSNR in dB of two (H, W, 3) uint8 images; ``inf`` when they are identical."""
    _check_pair(original, decoded)
    diff = original.astype(np.float64) - decoded.astype(np.float64)
    mse = float(np.mean(diff * diff))
    if mse == 0.0:
        return math.inf
    return 20.0 * math.log10(255.0) - 10.0 * math.log10(mse)


def ms_ssim_window(height: int, width: int) -> int:
    """MS-SSIM Gaussian window for an image of this size (11 unless a side is ≤ 160 px; 0: too small).

    pytorch_msssim always uses 5 scales and needs the smaller side > (win − 1)·16. Smaller images use
    the largest odd window that fits (a documented deviation, never on Kodak); below 49 px it is NaN.
    """
    side = min(height, width)
    for win in range(MS_SSIM_WIN, 2, -2):
        if side > (win - 1) * 16:
            return win
    return 0


def ms_ssim(original: np.ndarray, decoded: np.ndarray) -> float:
    """MS-SSIM of two (H, W, 3) uint8 images with ``data_range=1`` (NaN when smaller than 49 px)."""
    _check_pair(original, decoded)
    h, w = original.shape[:2]
    win = ms_ssim_window(h, w)
    if win == 0:
        return math.nan
    x = torch.tensor(original).permute(2, 0, 1)[None].float() / 255.0
    y = torch.tensor(decoded).permute(2, 0, 1)[None].float() / 255.0
    value = _ms_ssim(y, x, data_range=1.0, size_average=True, win_size=win)
    return float(value)


def ms_ssim_db(value: float) -> float:
    """MS-SSIM in dB: −10·log10(1 − value) (``inf`` at 1)."""
    if value >= 1.0:
        return math.inf
    return -10.0 * math.log10(1.0 - value)


def bpp(num_bytes: int, height: int, width: int) -> float:
    """Bits per pixel of ``num_bytes`` for an (unpadded) H×W image."""
    return 8.0 * num_bytes / float(height * width)


def image_metrics(original: np.ndarray, decoded: np.ndarray) -> dict[str, float]:
    """PSNR, MS-SSIM and MS-SSIM (dB) under the CompressAI result keys."""
    value = ms_ssim(original, decoded)
    return {
        "psnr-rgb": psnr(original, decoded),
        "ms-ssim-rgb": value,
        "ms-ssim-db-rgb": ms_ssim_db(value) if not math.isnan(value) else math.nan,
    }
