"""Mixed precision for ``hpcm train --amp bf16``: autocast for the networks, float32 for the rate terms and
for the two convolutions that touch the image.

Under ``torch.autocast(dtype=bfloat16)`` the convolutions return bf16, so the GGM likelihood of ``y`` would be
evaluated in bf16 (three significant digits in each likelihood, and ``torch.special.gammaincc`` has no bf16
kernel on every device). :func:`keep_likelihoods_fp32` makes every GGM entropy model of a model compute in
float32 with autocast switched off, by swapping its class for a subclass (parameters, buffers and
state-dict keys are unchanged, so checkpoints are the same with and without AMP).

The convolution that reads the image (first layer of ``g_a``) and the one that writes it (last layer of
``g_s``) also run in float32 (:func:`keep_image_convs_fp32`). Measured on hpcm-small-vr (batch 8, 256², real
crops, CPU): with every convolution in bf16 the gradient has cosine 0.86 with the float32 one and twice its
norm; with these two layers in float32, cosine 0.93 and norm ×1.05. Step rate against float32 on a 2-core
AVX512-BF16 CPU: 1.8–2.1× (two runs; all-bf16: 2.1×). :func:`prepare_bf16` applies both.

A CPU without native bf16 arithmetic (no AVX512-BF16 or AMX; e.g. an AVX2-only AMD EPYC) emulates it: measured
there for hpcm-small-vr at batch 8 × 256², 2 threads, 0.09 against 0.99 images/s in float32 (×0.09), so
``hpcm train`` warns (:func:`cpu_bf16_is_emulated`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from hpcm.entropy.ggm import GGM

__all__ = [
    "Float32Conv",
    "cpu_bf16_is_emulated",
    "Float32Likelihood",
    "GGMFloat32",
    "keep_image_convs_fp32",
    "keep_likelihoods_fp32",
    "prepare_bf16",
]


def cpu_bf16_is_emulated() -> bool:
    """Whether bf16 matmuls/convolutions on this CPU run without native instructions (AVX512-BF16, AMX)."""
    try:
        return not torch.ops.mkldnn._is_mkldnn_bf16_supported()
    except (AttributeError, RuntimeError):  # a build without oneDNN: no fast bf16 either
        return True


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


class Float32Conv:
    """Mixin for a convolution module: its forward runs in float32, outside autocast."""

    def forward(self, x: Tensor, *args, **kwargs) -> Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.float(), *args, **kwargs)  # type: ignore[misc]


_CONV_CLASSES: dict[type, type] = {}


def _image_convs(model: nn.Module) -> list[nn.Module]:
    """The convolutions of ``model`` that read or write 3-channel images (inside ``g_a`` / ``g_s`` when the
    model has them)."""
    convs = (nn.Conv2d, nn.ConvTranspose2d)
    roots = [getattr(model, n) for n in ("g_a", "g_s") if isinstance(getattr(model, n, None), nn.Module)]
    found = []
    for root in roots or [model]:
        for m in root.modules():
            if isinstance(m, convs) and 3 in (m.in_channels, m.out_channels):
                found.append(m)
    return found


def keep_image_convs_fp32(model: nn.Module) -> int:
    """Make the image-side convolutions of ``model`` (3 input or 3 output channels) run in float32 under
    autocast (in place, by class swap; state dict unchanged); returns how many were changed."""
    n = 0
    for m in _image_convs(model):
        if isinstance(m, Float32Conv):
            continue
        cls = type(m)
        if cls not in _CONV_CLASSES:
            _CONV_CLASSES[cls] = type(f"{cls.__name__}Float32", (Float32Conv, cls), {})
        m.__class__ = _CONV_CLASSES[cls]
        n += 1
    return n


def prepare_bf16(model: nn.Module) -> dict[str, int]:
    """Everything ``--amp bf16`` needs besides the autocast context: float32 likelihoods and image convs."""
    return {"likelihoods": keep_likelihoods_fp32(model), "image_convs": keep_image_convs_fp32(model)}
