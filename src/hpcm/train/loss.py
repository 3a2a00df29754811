"""Rate–distortion loss of HPCM / CompressAI (spec hpcm.md §8.2, ecosystem.md §2.3).

- ``mse``:      L = λ·255²·MSE(x̂, x) + bpp, x in [0, 1];
- ``ms-ssim``:  L = λ·(1 − MS-SSIM(x̂, x; data_range 1)) + bpp (``pytorch_msssim``; needs sides > 160 px);

with bpp = Σ_k Σ log p_k / (−ln 2 · B·H·W) over the likelihood tensors (``y`` and ``z``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from pytorch_msssim import ms_ssim
from torch import nn

from hpcm.rates import METRICS, MS_SSIM_LAMBDAS, MSE_LAMBDAS, lambda_for  # noqa: F401 (the λ tables live there)

MIN_MS_SSIM_SIDE = 161  # pytorch_msssim with 5 scales and an 11-px window


def bits_per_pixel(likelihoods: dict[str, torch.Tensor], num_pixels: int) -> dict[str, torch.Tensor]:
    """``{"bpp_<name>": ...}`` for each likelihood tensor, summed over the batch, per pixel."""
    scale = -math.log(2) * num_pixels
    return {f"bpp_{k}": torch.log(v.float()).sum() / scale for k, v in likelihoods.items()}


def rd_loss(lmbda: Any, rate: Any, distortion: Any, metric: str = "mse") -> Any:
    """The one rate–distortion objective, for floats and per-image tensors alike.

    ``metric`` "mse": ``λ·255²·MSE + R`` (``distortion`` = MSE on [0, 1]); "ms-ssim": ``λ·(1 − MS-SSIM) + R``
    (``distortion`` = MS-SSIM). ``rate`` in bits per pixel.
    """
    if metric == "mse":
        return lmbda * 255.0**2 * distortion + rate
    return lmbda * (1.0 - distortion) + rate


class RateDistortionLoss(nn.Module):
    """λ-weighted distortion plus bpp: ``loss``, ``bpp``, ``bpp_y``, ``bpp_z``, ``mse`` (and ``ms_ssim``).

    ``lmbda`` is the trade-off of every call, or None when each call passes a per-image λ (B,)
    (variable-rate training, where every crop has its own quality); the loss is then the batch mean of
    ``λ_b·D_b + R_b``, which equals the fixed-λ loss when all λ_b are equal.
    """

    def __init__(self, lmbda: float | None, metric: str = "mse") -> None:
        super().__init__()
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r} (expected one of {METRICS})")
        if lmbda is not None and not lmbda > 0:
            raise ValueError(f"lambda must be positive, got {lmbda}")
        self.lmbda = None if lmbda is None else float(lmbda)
        self.metric = metric

    def forward(
        self, output: dict, target: torch.Tensor, lmbda: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """``output``: the model's forward dict; ``target``: (B, 3, H, W) in [0, 1]; ``lmbda``: (B,) or None.

        All terms in float32.
        """
        b, _, h, w = target.shape
        if lmbda is None:
            if self.lmbda is None:
                raise ValueError("this loss has no fixed lambda: pass one per image")
            lam = torch.full((b,), self.lmbda, device=target.device)
        else:
            lam = lmbda.to(device=target.device, dtype=torch.float32).reshape(-1).expand(b)
        x_hat = output["x_hat"].float()
        target = target.float()
        scale = -math.log(2) * h * w
        per_image = {
            f"bpp_{k}": torch.log(v.float()).reshape(b, -1).sum(1) / scale
            for k, v in output["likelihoods"].items()
        }
        out = {k: v.mean() for k, v in per_image.items()}
        rate = sum(per_image.values())
        out["bpp"] = rate.mean()
        mse = torch.mean((x_hat - target) ** 2, dim=(1, 2, 3))
        out["mse"] = mse.mean()
        if self.metric == "mse":
            out["loss"] = rd_loss(lam, rate, mse).mean()
        else:
            msssim = ms_ssim(x_hat, target, data_range=1.0, size_average=False)
            out["ms_ssim"] = msssim.mean()
            out["loss"] = rd_loss(lam, rate, msssim, self.metric).mean()
        return out


def psnr_from_mse(mse: float, peak: float = 1.0) -> float:
    """PSNR in dB for a mean squared error on a [0, peak] scale (``inf`` at 0)."""
    return math.inf if mse <= 0 else 10.0 * math.log10(peak * peak / mse)
