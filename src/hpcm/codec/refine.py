"""Encoder-side latent refinement: spend encode time to find a latent the decoder turns into a better image.

The analysis transform g_a is one network for every image; the latent it gives is good, not the best the
decoder can use (the "amortisation gap" of Cremer et al. 2018; Campos et al. 2019 and Yang et al. 2020 close
part of it per image). :func:`refine_latent` starts from ``model.analyse(x)`` and lowers the rate-distortion
cost ``bpp + λ·255²·MSE`` of that one image by gradient steps on the latent y itself:

- the entropy model (μ on the file format's grid, σ, the bits of ẑ) is evaluated exactly as the encoder
  codes it (:meth:`HPCM.latent_statistics`) every ``reevaluate_every`` steps and held fixed in between, so
  a step backpropagates only through the synthesis g_s (3-4x cheaper than through the context model);
- the rate is the GGM likelihood of the unrounded residual y − μ (its slope pulls residuals towards μ), the
  distortion that of the rounded ŷ = round(y − μ) + μ (straight-through), over the image's own pixels only
  (padding excluded);
- at every re-evaluation the true cost (rounded symbols) is measured, and the best latent seen wins; the
  start counts, so the result is never worse than no refinement by this measure. When a re-evaluation
  finds the cost above the best (the steps overshot: at low qualities a step of 0.02 bins already moves
  many residuals across a rounding edge), the latent goes back to the best and the step size halves.

The refined latent is then coded by the ordinary encoder (``model.compress(x, latent=y)``): the file is an
ordinary file, the decoder is unchanged and never knows. Only encode time grows (about one g_s forward and
backward per step, one context pass per re-evaluation).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from hpcm.entropy.conditional import SIDE_FORMAT, ste_round

if TYPE_CHECKING:
    from hpcm.models.hpcm import LatentStatistics

#: Adam step on y (in quantisation bins). 0.02 reached the lowest cost after 60 steps among 0.005-0.02 on
#: held-out training crops at quality 8 (hpcm-small-vr step 14,238; docs/results/README.md).
DEFAULT_STEP_SIZE = 0.02
#: re-evaluate the context model every this many steps
DEFAULT_REEVALUATE_EVERY = 5


@dataclass(frozen=True)
class RefineSettings:
    """How hard to refine: ``steps`` gradient steps (0: off), Adam step ``step_size``, the context model
    re-evaluated every ``reevaluate_every`` steps; ``backtrack``: halve the step and return to the best
    latent when a re-evaluation finds the cost risen."""

    steps: int = 0
    step_size: float = DEFAULT_STEP_SIZE
    reevaluate_every: int = DEFAULT_REEVALUATE_EVERY
    backtrack: bool = True

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError(f"refinement steps must be >= 0, got {self.steps}")
        if not self.step_size > 0:
            raise ValueError(f"refinement step size must be positive, got {self.step_size}")
        if self.reevaluate_every < 1:
            raise ValueError(f"re-evaluation interval must be >= 1, got {self.reevaluate_every}")


@dataclass(frozen=True)
class RefineReport:
    """What a refinement did: the true cost (bpp + λ·255²·MSE) of the starting and the chosen latent, the
    step it was found at (0: the start), the steps taken and the seconds spent."""

    start_cost: float
    best_cost: float
    best_step: int
    steps: int
    seconds: float


def _region_mse(x_hat: Tensor, x: Tensor, region: tuple[int, int, int, int] | None) -> Tensor:
    if region is not None:
        top, left, h, w = region
        x_hat = x_hat[..., top : top + h, left : left + w]
        x = x[..., top : top + h, left : left + w]
    return (x_hat - x).square().mean()


def refine_latent(
    model: nn.Module, x: Tensor, lmbda: float, settings: RefineSettings, *, quality: float | None = None,
    region: tuple[int, int, int, int] | None = None, format_version: int = SIDE_FORMAT,
) -> tuple[Tensor, RefineReport]:
    """A latent y (1, M, H/16, W/16) for image x (1, 3, H, W) in [0, 1] with a lower cost
    ``bpp + lmbda·255²·MSE`` than ``model.analyse(x, quality)``, and the report.

    ``region`` (top, left, height, width): the pixels that count (the unpadded image; default all); bpp
    is per pixel of the region. ``format_version``: the μ grid the file will use. The model's parameters
    are not touched (gradients are taken with respect to y only).
    """
    t0 = time.perf_counter()
    with torch.no_grad():
        y0 = model.analyse(x, quality)
    pixels = float(x.shape[-2] * x.shape[-1]) if region is None else float(region[2] * region[3])
    weight = lmbda * 255.0**2
    likelihood = model.entropy_estimation.likelihood
    y = y0.clone().requires_grad_(True)
    step_size = settings.step_size
    optimizer = torch.optim.Adam([y], lr=step_size)
    best, best_cost, best_step, start_cost = y0, float("inf"), 0, float("nan")

    def surrogate(stats: LatentStatistics) -> tuple[Tensor, float]:
        """(the cost to descend, with soft rate; the true cost of y under ``stats``)."""
        with torch.enable_grad():
            residual = y - stats.mu
            mse = _region_mse(model.synthesise(ste_round(residual) + stats.mu, quality), x, region)
            soft_bits = -torch.log2(likelihood(residual, stats.scales)).sum()
            cost = (soft_bits + stats.z_bits) / pixels + weight * mse
        with torch.no_grad():  # rounded symbols, ŷ exactly as coded (exact when stats are y's own)
            bits = -torch.log2(likelihood(torch.round(residual), stats.scales)).sum() + stats.z_bits
        return cost, float(bits) / pixels + weight * float(mse.detach())

    stats = best_stats = model.latent_statistics(y0, format_version)
    for step in range(settings.steps + 1):
        reevaluate = step % settings.reevaluate_every == 0 or step == settings.steps
        if reevaluate and step > 0:
            stats = model.latent_statistics(y.detach(), format_version)
        cost, true_cost = surrogate(stats)
        if reevaluate:
            if step == 0:
                start_cost = true_cost
            if true_cost < best_cost:
                best, best_cost, best_step, best_stats = y.detach().clone(), true_cost, step, stats
            elif settings.backtrack and step < settings.steps:  # overshot: back to the best, smaller steps
                with torch.no_grad():
                    y.copy_(best)
                step_size *= 0.5
                optimizer = torch.optim.Adam([y], lr=step_size)
                stats = best_stats  # evaluated when the best was found: no second context pass
                cost, _ = surrogate(stats)
        if step == settings.steps:
            break
        (grad,) = torch.autograd.grad(cost, y)
        y.grad = grad
        optimizer.step()
    report = RefineReport(start_cost=start_cost, best_cost=best_cost, best_step=best_step,
                          steps=settings.steps, seconds=time.perf_counter() - t0)
    return best, report
