"""Bi-RWKV layers (OmniShift, SpatialMix, ChannelMix, block; spec birwkv.md §4-5) and the HPCM context
components built from them (``RWKVContextCell``, ``RWKVFusionNet``, ``RWKVSpatialPrior*``).

State-dict names follow LALIC (``att.decay``, ``att.boost``, ``att.omni_shift.*``, ``ffn.*``, ``ln1/2``,
``gamma1/2``), except that OmniShift keeps no ``conv5x5_reparam`` parameter: the fused kernel is derived from
the branch weights whenever needed (a stored copy is ignored on load), so it can never go stale.

Initialisation (a freshly built component is a well-conditioned near-identity residual map):
- ``decay`` (C,): Vision-RWKV "fancy" spread ``-5 + 8 (c/(C-1))^(0.7 + 1.3 r)`` with ``r`` the block's
  relative depth, so channels range from far-weighted (negative) to local (positive) mixing; ``boost``:
  ``ln(0.3) + 0.5 (((c+1) mod 3) - 1)``. Both are divided by T = H*W before the operator (as in LALIC).
  LALIC itself uses standard normals (``init="randn"``).
- OmniShift ``alpha = (1, 0.1, 0.1, 0.1)``: identity plus a small local mix (LALIC: ``randn(4)``); the
  depthwise conv weights keep PyTorch's default init.
- Layer scales ``gamma1 = gamma2 = 1`` (LALIC); LayerNorm and Linear keep PyTorch defaults.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from hpcm.ops.biwkv import biwkv

__all__ = [
    "OmniShift",
    "SpatialMix",
    "ChannelMix",
    "RWKVBlock",
    "RWKVContextCell",
    "RWKVFusionBlock",
    "RWKVFusionNet",
    "RWKVSpatialPriorBlock",
    "RWKVSpatialPrior",
    "RWKVSpatialPrior_S1_S2",
    "RWKVSpatialPrior_S3",
]


def _pad_to5(wt: Tensor) -> Tensor:
    p = (5 - wt.shape[-1]) // 2
    return F.pad(wt, (p, p, p, p))


class OmniShift(nn.Module):
    """``a0 x + a1 dw1x1(x) + a2 dw3x3(x) + a3 dw5x5(x)`` (depthwise, no bias). x (B, C, H, W) -> same.

    Training mode runs the four branches; eval mode runs one 5x5 depthwise conv whose kernel is fused from
    the current weights. The fused kernel is cached under ``no_grad`` and keyed on the parameters' identity
    and in-place version counters, so ``load_state_dict``, optimizer steps and ``.to()`` invalidate it.
    """

    def __init__(self, dim: int, alpha_init: Sequence[float] | str = (1.0, 0.1, 0.1, 0.1)) -> None:
        super().__init__()
        self.dim = dim
        self.conv1x1 = nn.Conv2d(dim, dim, 1, groups=dim, bias=False)
        self.conv3x3 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim, bias=False)
        self.conv5x5 = nn.Conv2d(dim, dim, 5, padding=2, groups=dim, bias=False)
        alpha = torch.randn(4) if alpha_init == "randn" else torch.tensor([float(a) for a in alpha_init])
        if alpha.shape != (4,):
            raise ValueError("alpha_init must have 4 entries or be 'randn'")
        self.alpha = nn.Parameter(alpha)
        self._fused: Tensor | None = None
        self._fused_key: tuple | None = None

    def _params(self) -> tuple[Tensor, ...]:
        return (self.alpha, self.conv1x1.weight, self.conv3x3.weight, self.conv5x5.weight)

    def fused_weight(self) -> Tensor:
        """The equivalent 5x5 depthwise kernel (C, 1, 5, 5), differentiable w.r.t. the branch weights."""
        a = self.alpha
        ident = torch.zeros_like(self.conv5x5.weight)
        ident[:, :, 2, 2] = 1.0
        return (
            a[0] * ident
            + a[1] * _pad_to5(self.conv1x1.weight)
            + a[2] * _pad_to5(self.conv3x3.weight)
            + a[3] * self.conv5x5.weight
        )

    def _cached_fused(self) -> Tensor:
        if torch.is_grad_enabled() and any(p.requires_grad for p in self._params()):
            return self.fused_weight()  # never cache a graph
        key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in self._params())
        if self._fused is None or self._fused_key != key:
            with torch.no_grad():
                self._fused = self.fused_weight()
            self._fused_key = key
        return self._fused

    def forward_unfused(self, x: Tensor) -> Tensor:
        a = self.alpha
        return a[0] * x + a[1] * self.conv1x1(x) + a[2] * self.conv3x3(x) + a[3] * self.conv5x5(x)

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            return self.forward_unfused(x)
        return F.conv2d(x, self._cached_fused(), padding=2, groups=self.dim)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001
        state_dict.pop(prefix + "conv5x5_reparam.weight", None)  # LALIC's stored fused copy: re-derived
        self._fused = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _to_map(x: Tensor, hw: tuple[int, int]) -> Tensor:
    B, _, C = x.shape
    return x.transpose(1, 2).reshape(B, C, *hw)


def _to_tokens(x: Tensor) -> Tensor:
    return x.flatten(2).transpose(1, 2)


class SpatialMix(nn.Module):
    """LALIC ``SpatialMix_BiV4``: OmniShift, K/V/R, Bi-WKV over raster tokens, ``sigmoid(R)`` gate, output.

    x (B, T=H*W, C), hw = (H, W) -> (B, T, C). ``recurrence=2`` adds Restore-RWKV's second pass over the
    column-major order (its own decay/boost row; y of pass 1 is the value of pass 2).
    ``impl`` / ``mode`` / ``token_split`` are passed to :func:`hpcm.ops.biwkv` (``mode="kernel"`` reproduces
    the official CUDA kernel, e.g. for LALIC checkpoints).
    """

    def __init__(
        self,
        dim: int,
        recurrence: int = 1,
        layer_ratio: float = 0.5,
        init: str = "fancy",
        alpha_init: Sequence[float] | str = (1.0, 0.1, 0.1, 0.1),
        impl: str = "auto",
        mode: str = "paper",
        token_split: int = 32,
    ) -> None:
        super().__init__()
        if recurrence not in (1, 2):
            raise ValueError("recurrence must be 1 or 2")
        self.dim, self.recurrence = dim, recurrence
        self.impl, self.mode, self.token_split = impl, mode, token_split
        self.omni_shift = OmniShift(dim, alpha_init)
        self.key = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(dim, dim, bias=False)
        self.receptance = nn.Linear(dim, dim, bias=False)
        self.output = nn.Linear(dim, dim, bias=False)
        shape = (dim,) if recurrence == 1 else (recurrence, dim)
        if init == "randn":
            decay, boost = torch.randn(shape), torch.randn(shape)
        elif init == "fancy":
            c = torch.arange(dim, dtype=torch.float32)
            frac = c / max(dim - 1, 1)
            decay = (-5.0 + 8.0 * frac ** (0.7 + 1.3 * float(layer_ratio))).expand(shape).clone()
            boost = (math.log(0.3) + 0.5 * (((c + 1) % 3) - 1)).expand(shape).clone()
        else:
            raise ValueError("init must be 'fancy' or 'randn'")
        self.decay = nn.Parameter(decay)
        self.boost = nn.Parameter(boost)

    def _wkv(self, j: int, k: Tensor, v: Tensor) -> Tensor:
        T = k.shape[1]
        d = self.decay if self.recurrence == 1 else self.decay[j]
        b = self.boost if self.recurrence == 1 else self.boost[j]
        return biwkv(d / T, b / T, k, v, impl=self.impl, mode=self.mode, token_split=self.token_split)

    def forward(self, x: Tensor, hw: tuple[int, int]) -> Tensor:
        x = _to_tokens(self.omni_shift(_to_map(x, hw)))
        k, v, r = self.key(x), self.value(x), self.receptance(x)
        y = self._wkv(0, k, v)
        if self.recurrence == 2:
            H, W = hw

            def colmajor(t: Tensor) -> Tensor:  # (B, H*W, C) raster -> (B, W*H, C) column-major
                return t.reshape(t.shape[0], H, W, -1).transpose(1, 2).reshape(t.shape[0], H * W, -1)

            y = self._wkv(1, colmajor(k), colmajor(y))
            y = y.reshape(y.shape[0], W, H, -1).transpose(1, 2).reshape(y.shape[0], H * W, -1)
        return self.output(torch.sigmoid(r) * y)


class ChannelMix(nn.Module):
    """LALIC ``ChannelMix_V4``: OmniShift, ``sigmoid(R(x)) * V(relu(K(x))^2)``. x (B, T, C), hw -> same."""

    def __init__(
        self, dim: int, hidden_rate: int = 4, alpha_init: Sequence[float] | str = (1.0, 0.1, 0.1, 0.1)
    ) -> None:
        super().__init__()
        hidden = int(hidden_rate * dim)
        self.omni_shift = OmniShift(dim, alpha_init)
        self.key = nn.Linear(dim, hidden, bias=False)
        self.value = nn.Linear(hidden, dim, bias=False)
        self.receptance = nn.Linear(dim, dim, bias=False)

    def forward(self, x: Tensor, hw: tuple[int, int]) -> Tensor:
        x = _to_tokens(self.omni_shift(_to_map(x, hw)))
        h = torch.square(torch.relu(self.key(x)))
        return torch.sigmoid(self.receptance(x)) * self.value(h)


class RWKVBlock(nn.Module):
    """Pre-LN Bi-RWKV block (LALIC ``RwkvBlock_BiV4``). x (B, C, H, W) -> (B, C, H, W).

    ``x += gamma1 * SpatialMix(LN1(x)); x += gamma2 * ChannelMix(LN2(x))`` on the flattened tokens.
    ``use_checkpoint`` recomputes the block in the backward (``use_reentrant=False``) when grad is enabled.
    """

    def __init__(
        self,
        dim: int,
        hidden_rate: int = 4,
        use_checkpoint: bool = False,
        recurrence: int = 1,
        layer_ratio: float = 0.5,
        layer_scale_init: float = 1.0,
        **spatial_kwargs,
    ) -> None:
        super().__init__()
        self.use_checkpoint = use_checkpoint
        alpha_init = spatial_kwargs.get("alpha_init", (1.0, 0.1, 0.1, 0.1))
        self.ln1 = nn.LayerNorm(dim)
        self.ln2 = nn.LayerNorm(dim)
        self.att = SpatialMix(dim, recurrence=recurrence, layer_ratio=layer_ratio, **spatial_kwargs)
        self.ffn = ChannelMix(dim, hidden_rate, alpha_init=alpha_init)
        self.gamma1 = nn.Parameter(torch.full((dim,), float(layer_scale_init)))
        self.gamma2 = nn.Parameter(torch.full((dim,), float(layer_scale_init)))

    def _body(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        hw = (H, W)
        t = _to_tokens(x)
        t = t + self.gamma1 * self.att(self.ln1(t), hw)
        t = t + self.gamma2 * self.ffn(self.ln2(t), hw)
        return t.transpose(1, 2).reshape(B, C, H, W)

    def forward(self, x: Tensor) -> Tensor:
        if self.use_checkpoint and torch.is_grad_enabled():
            return checkpoint(self._body, x, use_reentrant=False)
        return self._body(x)


def _stack(cls: type[RWKVBlock], dim: int, n: int, hidden_rate: int, use_checkpoint: bool) -> list[nn.Module]:
    return [
        cls(dim, hidden_rate=hidden_rate, use_checkpoint=use_checkpoint, layer_ratio=i / max(n - 1, 1))
        for i in range(n)
    ]


class RWKVContextCell(nn.Module):
    """Progressive context fusion cell: ``proj_out(block(proj_in(concat(x_t, h_prev))))``.

    Drop-in for ``CrossAttentionCell``: ``cell(psi, prev) -> new_prev``, all (B, dim, h, w) with dim = 2M;
    any h, w (Bi-WKV is global, no windows).
    """

    def __init__(self, dim: int, hidden_rate: int = 4, use_checkpoint: bool = False) -> None:
        super().__init__()
        self.dim = dim
        self.proj_in = nn.Conv2d(2 * dim, dim, 1)
        self.block = RWKVBlock(dim, hidden_rate=hidden_rate, use_checkpoint=use_checkpoint)
        self.proj_out = nn.Conv2d(dim, dim, 1)

    def forward(self, x_t: Tensor, h_prev: Tensor) -> Tensor:
        return self.proj_out(self.block(self.proj_in(torch.cat([x_t, h_prev], dim=1))))


class RWKVFusionBlock(RWKVBlock):
    """Bi-RWKV block used by :class:`RWKVFusionNet` (cross-scale context fusion). (B, C, H, W) -> same."""


class RWKVFusionNet(nn.Module):
    """Cross-scale context net replacing the 1x1 ``context_net`` conv: blocks then a 1x1 projection.

    (B, dim, h, w) -> (B, dim, h, w), dim = 2M.
    """

    def __init__(self, dim: int, num_blocks: int = 1, hidden_rate: int = 4, use_checkpoint: bool = False):
        super().__init__()
        self.blocks = nn.Sequential(*_stack(RWKVFusionBlock, dim, num_blocks, hidden_rate, use_checkpoint))
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.blocks(x))


class RWKVSpatialPriorBlock(RWKVBlock):
    """Bi-RWKV block of :class:`RWKVSpatialPrior` (3M channels). (B, C, H, W) -> same."""


class RWKVSpatialPrior(nn.Module):
    """Spatial prior ``psi = branch_2(branch_1(x) * quant_step)`` with Bi-RWKV blocks.

    branch_1: ``depths[0]`` blocks at 3M channels; branch_2: ``depths[1]`` blocks then a 1x1 conv 3M -> 2M.
    x (B, 3M, h, w), quant_step (1, 3M, 1, 1) -> psi (B, 2M, h, w) = [scales | means].
    """

    def __init__(
        self, M: int, depths: tuple[int, int] = (2, 1), hidden_rate: int = 4, use_checkpoint: bool = False
    ) -> None:
        super().__init__()
        d1, d2 = depths
        c = 3 * M
        self.branch_1 = nn.Sequential(*_stack(RWKVSpatialPriorBlock, c, d1, hidden_rate, use_checkpoint))
        self.branch_2 = nn.Sequential(
            *_stack(RWKVSpatialPriorBlock, c, d2, hidden_rate, use_checkpoint), nn.Conv2d(c, 2 * M, 1)
        )

    def forward(self, x: Tensor, quant_step: Tensor) -> Tensor:
        return self.branch_2(self.branch_1(x) * quant_step)


class RWKVSpatialPrior_S1_S2(RWKVSpatialPrior):  # noqa: N801 - name used by the HPCM x RWKV code
    """Prior shared by scales 1 and 2: depths (2, 1)."""

    def __init__(self, M: int, hidden_rate: int = 4, use_checkpoint: bool = False) -> None:
        super().__init__(M, depths=(2, 1), hidden_rate=hidden_rate, use_checkpoint=use_checkpoint)


class RWKVSpatialPrior_S3(RWKVSpatialPrior):  # noqa: N801 - name used by the HPCM x RWKV code
    """Prior of scale 3: depths (3, 2)."""

    def __init__(self, M: int, hidden_rate: int = 4, use_checkpoint: bool = False) -> None:
        super().__init__(M, depths=(3, 2), hidden_rate=hidden_rate, use_checkpoint=use_checkpoint)
