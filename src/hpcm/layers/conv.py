"""Convolution helpers and the residual blocks of HPCM (spec hpcm.md §3.1).

All convolutions carry a bias. The residual blocks keep their layers in a ``Sequential`` named
``branch`` so that state-dict keys match the official checkpoints (``branch.0``, ``branch.1``,
``branch.3``; index 2 is the parameter-free activation).
"""

from __future__ import annotations

import torch
from torch import nn

#: Memory layouts a full-resolution transform can run in (:func:`run_in_layout`).
MEMORY_LAYOUTS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}


def _dense_strides(shape: torch.Size, layout: str) -> tuple[int, ...]:
    """Strides of a dense (B, C, H, W) tensor in ``layout``."""
    _, c, h, w = shape
    return (c * h * w, 1, w * c, c) if layout == "channels_last" else (c * h * w, h * w, w, 1)


def run_in_layout(module: nn.Module, x: torch.Tensor, layout: str = "channels_last") -> torch.Tensor:
    """``module(x)`` with x (B, C, H, W) converted to ``layout`` (``MEMORY_LAYOUTS``).

    For the full-resolution transforms: oneDNN's CPU convolutions run 1.7-4x faster on channels-last
    inputs than on contiguous ones at Kodak size (g_s 0.51 -> 0.31 s on the 2-core AVX2 EPYC). The
    module's weights stay as they are (a convolution follows its input's layout); the results differ from
    the contiguous layout's in the last bits. The output is contiguous, as the module's own call gives it
    for contiguous weights, or channels-last when the weights are (a model converted with
    ``.to(memory_format=torch.channels_last)``, as training does): what follows (h_a, h_s, the step loop)
    then computes in the layout it always did, the same in the encoder and the decoder.
    """
    if layout not in MEMORY_LAYOUTS:
        raise ValueError(f"unknown memory layout {layout!r} (known: {', '.join(MEMORY_LAYOUTS)})")
    fmt = MEMORY_LAYOUTS[layout]
    x = x.contiguous(memory_format=fmt)
    if x.stride() != _dense_strides(x.shape, layout):
        # e.g. an HWC image permuted, then unsqueezed: channels-last, but a batch stride of C, which
        # convolutions read as the contiguous layout (g_a then ran contiguous in the encoder)
        x = x.clone(memory_format=fmt)
    out = module(x)
    weight = next((p for p in module.parameters() if p.dim() == 4), None)
    cl_weights = weight is not None and not weight.is_contiguous()
    if cl_weights and weight.is_contiguous(memory_format=torch.channels_last):
        return out.contiguous(memory_format=torch.channels_last)
    return out.contiguous()


def conv1x1(in_ch: int, out_ch: int) -> nn.Conv2d:
    """1x1 convolution, stride 1."""
    return nn.Conv2d(in_ch, out_ch, kernel_size=1)


def conv2x2_down(in_ch: int, out_ch: int) -> nn.Conv2d:
    """2x2 convolution with stride 2: (B, in, H, W) -> (B, out, H/2, W/2)."""
    return nn.Conv2d(in_ch, out_ch, kernel_size=2, stride=2, padding=0)


def conv4x4_down(in_ch: int, out_ch: int) -> nn.Conv2d:
    """4x4 convolution with stride 2 and padding 1: (B, in, H, W) -> (B, out, H/2, W/2)."""
    return nn.Conv2d(in_ch, out_ch, kernel_size=4, stride=2, padding=1)


def deconv2x2_up(in_ch: int, out_ch: int) -> nn.ConvTranspose2d:
    """2x2 transposed convolution with stride 2: (B, in, H, W) -> (B, out, 2H, 2W)."""
    return nn.ConvTranspose2d(in_ch, out_ch, kernel_size=2, stride=2, padding=0, output_padding=0)


def deconv4x4_up(in_ch: int, out_ch: int) -> nn.ConvTranspose2d:
    """4x4 transposed convolution with stride 2, padding 1: (B, in, H, W) -> (B, out, 2H, 2W)."""
    return nn.ConvTranspose2d(in_ch, out_ch, kernel_size=4, stride=2, padding=1, output_padding=0)


def dwconv3x3(ch: int) -> nn.Conv2d:
    """Depthwise 3x3 convolution, padding 1."""
    return nn.Conv2d(ch, ch, kernel_size=3, padding=1, groups=ch)


class PConv(nn.Module):
    """Partial 3x3 convolution (``pconv3x3``).

    A plain 3x3 conv (attribute ``pconv``) is applied to the first ``conv_ch`` channels; the remaining
    channels pass through unchanged. (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, channels: int, conv_ch: int) -> None:
        super().__init__()
        if not 0 < conv_ch <= channels:
            raise ValueError(f"conv_ch must be in (0, {channels}], got {conv_ch}")
        self.channels = channels
        self.conv_ch = conv_ch
        self.pconv = nn.Conv2d(conv_ch, conv_ch, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        head, rest = x[:, : self.conv_ch], x[:, self.conv_ch :]
        return torch.cat((self.pconv(head), rest), dim=1)


def pconv3x3(channels: int, conv_ch: int) -> PConv:
    """Partial 3x3 conv over the first ``conv_ch`` of ``channels`` channels."""
    return PConv(channels, conv_ch)


class PConvRB(nn.Module):
    """Residual block ``x + f(x)``, f = pconv3x3(N, N/partial) -> 1x1 N->N*mlp -> LeakyReLU -> 1x1 back.

    (B, N, H, W) -> (B, N, H, W).
    """

    def __init__(self, channels: int, partial_ratio: int = 4, mlp_ratio: int = 2) -> None:
        super().__init__()
        if channels % partial_ratio:
            raise ValueError(f"channels {channels} not divisible by partial_ratio {partial_ratio}")
        hidden = channels * mlp_ratio
        self.branch = nn.Sequential(
            pconv3x3(channels, channels // partial_ratio),
            conv1x1(channels, hidden),
            nn.LeakyReLU(negative_slope=0.01, inplace=True),
            conv1x1(hidden, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch(x)


class DWConvRB(nn.Module):
    """Residual block ``x + f(x)``, f = dw3x3 -> 1x1 N->N*mlp -> LeakyReLU -> 1x1 back.

    (B, N, H, W) -> (B, N, H, W).
    """

    def __init__(self, channels: int, mlp_ratio: int = 2) -> None:
        super().__init__()
        hidden = channels * mlp_ratio
        self.branch = nn.Sequential(
            dwconv3x3(channels),
            conv1x1(channels, hidden),
            nn.LeakyReLU(negative_slope=0.01, inplace=True),
            conv1x1(hidden, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch(x)
