"""Generalised Gaussian (GGM) likelihood with β = 1.5, as used by HPCM for y and z (spec hpcm.md §6).

The standard GGM with shape β has the CDF

    F(u) = ½·[1 + sign(u)·P(1/β, |u|^β)],

where P is the regularised lower incomplete gamma function, and the density
f(u) = β / (2Γ(1/β)) · exp(−|u|^β).  The likelihood of an integer bin around a (mean-subtracted,
possibly noisy) residual v with scale σ is F((v+½)/σ) − F((v−½)/σ).

Numerical choice (documented deviation in *form*, not in value): the official code evaluates
F(upper) − F(lower) directly.  Far in a tail both terms are close to 1 (or the difference of two
numbers near ½ on the wrong side), so the subtraction cancels catastrophically in float32.  We reflect
every bin onto the non-positive side first (the GGM is symmetric, so L(v) = L(−v)) and evaluate the
negative half of the CDF as ½·Q(1/β, |u|^β) with Q = 1 − P the regularised *upper* incomplete gamma
function.  Mathematically this is exactly the official likelihood; in float64 the two agree to
~1e-16 absolute, and in float32 ours is accurate in the tails where the official one returns 0 or
rounding noise (which the 1e-9 likelihood bound then hides).  Everything is computed in the dtype of
the inputs (float32 or float64).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["LowerBound", "GGM", "lower_bound", "ggm_cdf", "ggm_likelihood"]


class _LowerBoundFn(torch.autograd.Function):
    """max(x, bound) whose gradient passes where x ≥ bound or where the gradient would raise x."""

    @staticmethod
    def forward(ctx, x: Tensor, bound: Tensor) -> Tensor:  # type: ignore[override]
        bound = bound.to(dtype=x.dtype, device=x.device)
        ctx.save_for_backward(x, bound)
        return torch.maximum(x, bound)

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        x, bound = ctx.saved_tensors
        # A descent step x ← x − lr·g moves x upward when g < 0: let such gradients through.
        passes = (x >= bound) | (grad_output < 0)
        return grad_output * passes.to(grad_output.dtype), None


def lower_bound(x: Tensor, bound: Tensor) -> Tensor:
    """Functional form of :class:`LowerBound`: forward max(x, bound), CompressAI-style gradient."""
    return _LowerBoundFn.apply(x, bound)


class LowerBound(nn.Module):
    """Lower-bound a tensor; the buffer ``bound`` has shape (1,) (float32, as in the official model)."""

    bound: Tensor

    def __init__(self, bound: float) -> None:
        super().__init__()
        self.register_buffer("bound", torch.tensor([float(bound)], dtype=torch.float32))

    def forward(self, x: Tensor) -> Tensor:
        """x: any shape → max(x, bound), same shape and dtype."""
        return lower_bound(x, self.bound)

    def extra_repr(self) -> str:
        return f"bound={float(self.bound.item()):g}"


def _density_constant(beta: Tensor) -> Tensor:
    """β / (2Γ(1/β)), in beta's dtype."""
    return torch.exp(torch.log(beta) - torch.lgamma(1.0 / beta)) / 2.0


class _GGMCdfFn(torch.autograd.Function):
    """Standard GGM CDF F(u) with the analytic derivative as backward (no gradient to β).

    Only one special function is evaluated: h = ½·Q(1/β, |u|^β) gives F(u) = h for u < 0 (accurate
    down to the smallest normal number) and F(u) = 1 − h for u ≥ 0, which equals the official
    ½ + ½·P up to one rounding (1 ulp of 1). Q costs about as much as P, so this halves the work.
    """

    @staticmethod
    def forward(ctx, u: Tensor, beta: Tensor) -> Tensor:  # type: ignore[override]
        beta = beta.to(dtype=u.dtype, device=u.device)
        t = u.abs().pow(beta)
        half_tail = 0.5 * torch.special.gammaincc(1.0 / beta, t)
        ctx.save_for_backward(t, beta)
        return torch.where(u < 0, half_tail, 1.0 - half_tail)

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        t, beta = ctx.saved_tensors
        density = _density_constant(beta) * torch.exp(-t)
        return grad_output * density, None


def ggm_cdf(u: Tensor, beta: Tensor | float = 1.5) -> Tensor:
    """Standard (unit-scale) GGM CDF. u: any shape → same shape/dtype. Differentiable in u only."""
    if not isinstance(beta, Tensor):
        beta = torch.tensor([float(beta)], dtype=u.dtype, device=u.device)
    return _GGMCdfFn.apply(u, beta)


def ggm_likelihood(values: Tensor, scales: Tensor, beta: Tensor | float = 1.5) -> Tensor:
    """Unbounded bin likelihood F((v+½)/σ) − F((v−½)/σ); σ must already be positive.

    values, scales: broadcastable (e.g. (B, C, H, W) and (1, C, 1, 1)) → broadcast shape.
    The bin is mirrored onto the non-positive side (s = −1 when v > 0) so that both CDF terms are
    lower-tail values, avoiding cancellation; the result equals the direct difference exactly in
    exact arithmetic.
    """
    dtype = torch.promote_types(values.dtype, scales.dtype)
    values = values.to(dtype)
    scales = scales.to(dtype)
    sign = torch.where(values > 0, -torch.ones_like(values), torch.ones_like(values))
    # s = +1: L = F((v + ½)/σ) − F((v − ½)/σ) as written; s = −1: the mirrored bin −v, same value.
    reflected = sign * values
    upper = (reflected + 0.5) / scales
    lower = (reflected - 0.5) / scales
    return ggm_cdf(upper, beta) - ggm_cdf(lower, beta)


class GGM(nn.Module):
    """GGM entropy model (spec §6): bounded scales, bin likelihood, bounded likelihood.

    State-dict keys: ``beta`` (1,), ``scale_lower_bound.bound`` (1,), ``likelihood_lower_bound.bound`` (1,).
    """

    beta: Tensor

    def __init__(self, beta: float = 1.5, scale_bound: float = 0.12, likelihood_bound: float = 1e-9) -> None:
        super().__init__()
        self.register_buffer("beta", torch.tensor([float(beta)], dtype=torch.float32))
        self.scale_lower_bound = LowerBound(scale_bound)
        self.likelihood_lower_bound = LowerBound(likelihood_bound)

    def likelihood(self, values: Tensor, scales: Tensor) -> Tensor:
        """values: mean-subtracted residuals (B, C, H, W); scales: broadcastable σ → likelihoods (B, C, H, W).

        Computed in the promoted dtype of ``values`` and ``scales`` (float32 or float64).
        """
        scales = self.scale_lower_bound(scales)
        lik = ggm_likelihood(values, scales, self.beta)
        return self.likelihood_lower_bound(lik)

    def forward(self, values: Tensor, scales: Tensor) -> Tensor:
        """Alias of :meth:`likelihood`."""
        return self.likelihood(values, scales)
