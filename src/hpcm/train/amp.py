"""Mixed precision for ``hpcm train --amp bf16``: autocast for the networks, float32 for the rate terms.

Under ``torch.autocast(dtype=bfloat16)`` the convolutions return bf16, so the GGM likelihood of ``y`` would be
evaluated in bf16 (three significant digits in each likelihood, and ``torch.special.gammaincc`` has no bf16
kernel on every device). :func:`keep_likelihoods_fp32` makes every GGM entropy model of a model compute in
float32 with autocast switched off, by swapping its class for a subclass (parameters, buffers and
state-dict keys are unchanged, so checkpoints are the same with and without AMP).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from hpcm.entropy.ggm import GGM

__all__ = ["GGMFloat32", "keep_likelihoods_fp32"]


class GGMFloat32(GGM):
    """A :class:`GGM` whose likelihood runs in (at least) float32, outside autocast."""

    def likelihood(self, values: Tensor, scales: Tensor) -> Tensor:
        dtype = torch.promote_types(torch.promote_types(values.dtype, scales.dtype), torch.float32)
        with torch.autocast(values.device.type, enabled=False):
            return super().likelihood(values.to(dtype), scales.to(dtype))


def keep_likelihoods_fp32(model: nn.Module) -> int:
    """Make every GGM module of ``model`` a :class:`GGMFloat32` (in place); returns how many were changed."""
    n = 0
    for m in model.modules():
        if type(m) is GGM:
            m.__class__ = GGMFloat32
            n += 1
    return n
