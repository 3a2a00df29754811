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

__all__ = ["Float32Likelihood", "GGMFloat32", "keep_likelihoods_fp32"]


class Float32Likelihood:
    """Mixin for a :class:`GGM` (or subclass): the likelihood runs in (at least) float32, outside autocast."""

    def likelihood(self, values: Tensor, scales: Tensor) -> Tensor:
        dtype = torch.promote_types(torch.promote_types(values.dtype, scales.dtype), torch.float32)
        with torch.autocast(values.device.type, enabled=False):
            return super().likelihood(values.to(dtype), scales.to(dtype))  # type: ignore[misc]


class GGMFloat32(Float32Likelihood, GGM):
    """A :class:`GGM` whose likelihood runs in (at least) float32, outside autocast."""


_FLOAT32_CLASSES: dict[type, type] = {GGM: GGMFloat32}


def _float32_class(cls: type) -> type:
    if cls not in _FLOAT32_CLASSES:
        _FLOAT32_CLASSES[cls] = type(f"{cls.__name__}Float32", (Float32Likelihood, cls), {})
    return _FLOAT32_CLASSES[cls]


def keep_likelihoods_fp32(model: nn.Module) -> int:
    """Make every GGM module of ``model`` (subclasses such as ``ConditionalGGM`` included) compute its
    likelihood in float32 (in place, by class swap); returns how many were changed."""
    n = 0
    for m in model.modules():
        if isinstance(m, GGM) and not isinstance(m, Float32Likelihood):
            m.__class__ = _float32_class(type(m))
            n += 1
    return n
