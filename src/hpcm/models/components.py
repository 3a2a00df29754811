"""Choosable context components of the HPCM entropy model.

Each context component of HPCM is picked by a small, frozen spec so that the official baseline,
the RWKV phases and the multi-reference variants are configurations of one model:

- a progressive-fusion *cell* per scale: ``cell(psi, prev) -> new_prev``, all tensors (B, 2M, h, w);
- a cross-scale *context net* per transition: ``net(C) -> C``, (B, 2M, h, w);
- a *spatial prior* per group of scales: ``prior(x, quant_step) -> psi``, x (B, 3M, h, w) -> (B, 2M, h, w).

The builders import their layer modules (and torch) lazily, so a component family that is not used costs
nothing, and the specs (hence the registry and ``hpcm models``) load without torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class CellSpec:
    """Progressive context fusion cell of one scale.

    kind: ``"cross"`` (official windowed ``CrossAttentionCell``) or ``"rwkv"`` (``RWKVContextCell``).
    """

    kind: str = "cross"
    window: int = 8
    heads: int = 32
    hidden_rate: int = 4
    use_checkpoint: bool = False


@dataclass(frozen=True)
class ContextNetSpec:
    """Cross-scale context net (after scattering C to the finer grid).

    kind: ``"conv"`` (official 1x1 conv) or ``"rwkv"`` (``RWKVFusionNet``).
    """

    kind: str = "conv"
    num_blocks: int = 1
    hidden_rate: int = 4
    use_checkpoint: bool = False


@dataclass(frozen=True)
class PriorSpec:
    """Spatial prior ``psi = branch_2(branch_1(x) * quant_step)``.

    kind: ``"dwconv"`` (official DWConvRB stacks) or ``"rwkv"`` (``RWKVSpatialPrior``; with the depths
    of a seed-named prior, that class: (2, 1) ``RWKVSpatialPrior_S1_S2``, (3, 2) ``RWKVSpatialPrior_S3``).
    depths: number of blocks in (branch_1, branch_2) before the final 1x1 3M -> 2M projection.
    """

    kind: str = "dwconv"
    depths: tuple[int, int] = (2, 1)
    hidden_rate: int = 4
    use_checkpoint: bool = False


def build_cell(spec: CellSpec, dim: int) -> nn.Module:
    """Cell for a 2M = ``dim`` channel context."""
    if spec.kind == "cross":
        from hpcm.layers.attention import CrossAttentionCell

        return CrossAttentionCell(dim, dim, window_size=spec.window, num_heads=spec.heads)
    if spec.kind == "rwkv":
        from hpcm.layers.rwkv import RWKVContextCell

        return RWKVContextCell(dim, hidden_rate=spec.hidden_rate, use_checkpoint=spec.use_checkpoint)
    raise ValueError(f"unknown cell kind {spec.kind!r} (expected 'cross' or 'rwkv')")


def build_context_net(spec: ContextNetSpec, dim: int) -> nn.Module:
    """Context net for a 2M = ``dim`` channel context."""
    if spec.kind == "conv":
        from torch import nn

        return nn.Conv2d(dim, dim, kernel_size=1)
    if spec.kind == "rwkv":
        from hpcm.layers.rwkv import RWKVFusionNet

        return RWKVFusionNet(
            dim, num_blocks=spec.num_blocks, hidden_rate=spec.hidden_rate, use_checkpoint=spec.use_checkpoint
        )
    raise ValueError(f"unknown context net kind {spec.kind!r} (expected 'conv' or 'rwkv')")


def build_prior(spec: PriorSpec, M: int) -> nn.Module:
    """Spatial prior mapping 3M -> 2M channels."""
    if spec.kind == "dwconv":
        from hpcm.layers.priors import SpatialPrior

        return SpatialPrior(3 * M, 2 * M, depths=spec.depths)
    if spec.kind == "rwkv":
        from hpcm.layers.rwkv import RWKVSpatialPrior, RWKVSpatialPrior_S1_S2, RWKVSpatialPrior_S3

        # The seed-named classes are RWKVSpatialPrior with fixed depths (same parameters, same init
        # order): build them where the depths match, so seed-style isinstance checks hold (phase 4).
        named = {(2, 1): RWKVSpatialPrior_S1_S2, (3, 2): RWKVSpatialPrior_S3}.get(tuple(spec.depths))
        if named is not None:
            return named(M, hidden_rate=spec.hidden_rate, use_checkpoint=spec.use_checkpoint)
        return RWKVSpatialPrior(
            M, depths=spec.depths, hidden_rate=spec.hidden_rate, use_checkpoint=spec.use_checkpoint
        )
    raise ValueError(f"unknown spatial prior kind {spec.kind!r} (expected 'dwconv' or 'rwkv')")
