"""Quality-conditioned gains: one model for every rate (variable-rate coding).

After Cui et al., "Asymmetric gained deep image compression with continuous rate adaptation" (CVPR 2021):
the latent is multiplied channel-wise by a *gain* vector before quantisation and entropy coding, and the
decoded latent by an *inverse gain* vector before the synthesis transform. A larger gain means a finer
effective quantisation step, so more bits and less distortion. One pair of vectors is learned per anchor
quality ``k = 1..K`` (trained at the rate–distortion trade-off ``λ_k``); a fractional quality ``q`` in
``[1, K]`` interpolates the vectors between its two neighbouring anchors in the log domain
(``g(q) = g_k^(1-t) · g_(k+1)^t``, ``t = q - k``), and λ(q) the same way. Training samples ``q``
uniformly over ``[1, K]`` for every crop, so the interpolation is trained, not only the anchors.

The gains act on y only. The context model sees the gained latent, so the coded symbols, and therefore
decoding ŷ, do not depend on ``q`` except through the encoder's choice of y; the decoder needs ``q`` only
for the inverse gain in front of ``g_s``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn


class QualityGains(nn.Module):
    """Per-anchor gain and inverse-gain vectors for M latent channels.

    ``lambdas``: the anchors' λ, strictly increasing (quality k has ``lambdas[k - 1]``).
    Parameters ``log_gain`` and ``log_inv_gain`` (K, M) are initialised so that the quantisation step
    scales like ``1/sqrt(λ)`` around the geometric middle of the anchors (the RD-optimal step of a
    uniform quantiser at high rate), which makes a model trained at one λ a sensible starting point.
    """

    def __init__(self, lambdas: Sequence[float], channels: int) -> None:
        super().__init__()
        lam = torch.tensor([float(v) for v in lambdas], dtype=torch.float64)
        if lam.numel() < 2 or not bool((lam > 0).all()) or not bool((lam[1:] > lam[:-1]).all()):
            raise ValueError(f"need >= 2 strictly increasing positive anchor lambdas, got {list(lambdas)}")
        self.num_anchors = int(lam.numel())
        self.register_buffer("log_lambdas", lam.log().float(), persistent=False)
        init = 0.5 * (lam.log() - lam.log().mean())  # (K,)
        self.log_gain = nn.Parameter(init.float().view(-1, 1).repeat(1, channels))
        self.log_inv_gain = nn.Parameter(-init.float().view(-1, 1).repeat(1, channels))

    @property
    def quality_range(self) -> tuple[float, float]:
        """Smallest and largest quality: (1.0, K)."""
        return 1.0, float(self.num_anchors)

    def check_quality(self, quality: float) -> float:
        """``quality`` as a float, or ``ValueError`` when outside ``quality_range``."""
        q = float(quality)
        lo, hi = self.quality_range
        if not (lo <= q <= hi) or math.isnan(q):
            raise ValueError(f"quality must be in {lo:g}..{hi:g} for this model, got {quality}")
        return q

    def _interpolate(self, table: Tensor, quality: Tensor) -> Tensor:
        """Rows of ``table`` (K, ...) interpolated at ``quality`` (B,) -> (B, ...)."""
        q = quality.to(torch.float32).clamp(1.0, float(self.num_anchors)) - 1.0
        low = q.floor().clamp(max=self.num_anchors - 2).long()
        t = (q - low.to(q.dtype)).to(table.dtype)
        shape = (-1,) + (1,) * (table.dim() - 1)
        return table[low] * (1 - t.view(shape)) + table[low + 1] * t.view(shape)

    def lmbda(self, quality: Tensor) -> Tensor:
        """λ at ``quality`` (B,) -> (B,), log-linear between anchors."""
        return self._interpolate(self.log_lambdas, quality.to(self.log_lambdas.device)).exp()

    def gains(self, quality: Tensor) -> tuple[Tensor, Tensor]:
        """(gain, inverse gain), each (B, M, 1, 1), at ``quality`` (B,)."""
        quality = quality.to(self.log_gain.device)
        gain = self._interpolate(self.log_gain, quality).exp()
        inv = self._interpolate(self.log_inv_gain, quality).exp()
        return gain[:, :, None, None], inv[:, :, None, None]
