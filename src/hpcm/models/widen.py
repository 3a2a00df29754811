"""Function-preserving widening: start a wider HPCM from a trained narrower one (Net2Net-style).

A wider model (larger ``M`` and/or ``g_channels``, same depths, kinds, ``N``, heads and anchors) is built
so that it computes **exactly the narrow model's function** at the start, and training then learns to
use the new channels. Every old channel keeps its weights at a new position; the new channels get the
wide model's own initial weights, except that

- nothing new feeds an old channel (weights from new inputs to old outputs are zero), so every old
  activation, and the reconstruction, is unchanged;
- the layers that write the *new latent channels* and their *entropy parameters* start at zero
  (g_a's last layer, h_s's writes into its 2M output, the spatial priors' last layer): the new y
  channels are exactly 0, coded with μ = 0 at the smallest scale, so they cost (almost) no bits.
  g_s reads them with its initial weights, so the gradient reaches them from the first step;
- attention heads keep their count and grow in width: the new query dimensions start at zero and the
  old ones are rescaled by sqrt(new / old head width), so every logit is unchanged.

Channel layouts. The coding schedule splits the M latent channels into 8 contiguous groups
(``hpcm.models.schedule``), so the k-th channel of old group g goes to the k-th channel of new group g;
tensors of width 2M or 3M are concatenations of M-blocks and map block by block. The transforms' own
channels (``g_channels``) keep their old channels first. Partial convolutions keep every old convolved
channel inside the new convolved range; an old pass-through channel that falls into it gets an identity
kernel.

    wide = widen(narrow_model, get_config("hpcm-small-vr"))
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import torch
from torch import Tensor, nn

from hpcm.layers.attention import CrossAttentionCell
from hpcm.layers.conv import PConv
from hpcm.models.config import HPCMConfig

__all__ = ["widen", "check_widenable"]

ChannelMap = Callable[[int, int], Tensor]  # (old size, new size) -> new positions of the old channels (old,)


def _prefix_map(old: int, new: int) -> Tensor:
    """Old channels first: channel c stays at c."""
    return torch.arange(old)


def _latent_map(m_old: int, m_new: int) -> ChannelMap:
    """Blocks of M, each of 8 groups: (block b, group g, k) keeps b, g and k."""
    g_old, g_new = m_old // 8, m_new // 8

    def index(old: int, new: int) -> Tensor:
        c = torch.arange(old)
        block, r = c // m_old, c % m_old
        return block * m_new + (r // g_old) * g_new + r % g_old

    return index


def check_widenable(old: HPCMConfig, new: HPCMConfig) -> None:
    """Raise ``ValueError`` unless ``new`` is ``old`` with larger (or equal) M and g_channels only."""
    old_d, new_d = old.to_dict(), new.to_dict()
    for key in ("M", "g_channels"):
        old_d.pop(key), new_d.pop(key)
    if old_d != new_d:
        diff = sorted(k for k in old_d if old_d[k] != new_d.get(k))
        raise ValueError(f"widen: only M and g_channels may differ; these differ too: {diff}")
    if new.M < old.M or any(n < o for n, o in zip(new.g_channels, old.g_channels, strict=True)):
        raise ValueError("widen: the new model must be at least as wide everywhere")
    if old.memory is not None:
        raise ValueError("widen: models with a memory bank are not supported")
    for spec in (*old.cells, *old.context_nets, old.prior_s12, old.prior_s3):
        if spec.kind not in ("cross", "conv", "dwconv"):
            raise ValueError(f"widen: component kind {spec.kind!r} is not supported (official kinds only)")


def _conv_axes(module: nn.Module) -> tuple[int, int]:
    """(output axis, input axis) of a convolution's weight."""
    return (1, 0) if isinstance(module, nn.ConvTranspose2d) else (0, 1)


@torch.no_grad()
def _embed_conv(old: nn.Module, new: nn.Module, out_map: Tensor, in_map: Tensor) -> None:
    """Old weights at the mapped positions; zero from new inputs to old outputs; new outputs keep init."""
    out_ax, in_ax = _conv_axes(new)
    w = new.weight
    if new.groups != 1:  # depthwise: one input per output, the input axis has size 1
        in_map = torch.arange(w.shape[in_ax])
    rows = w.index_select(out_ax, out_map)
    rows.zero_()
    if out_ax == 0:
        rows[:, in_map] = old.weight
        w[out_map] = rows
    else:
        rows[in_map] = old.weight
        w[:, out_map] = rows
    if new.bias is not None:
        new.bias[out_map] = old.bias


@torch.no_grad()
def _zero_new_outputs(module: nn.Module, out_map: Tensor) -> None:
    """Zero the weights and bias of every output channel that is not an old one."""
    out_ax, _ = _conv_axes(module)
    fresh = torch.ones(module.weight.shape[out_ax], dtype=torch.bool)
    fresh[out_map] = False
    if out_ax == 0:
        module.weight[fresh] = 0
    else:
        module.weight[:, fresh] = 0
    if module.bias is not None:
        module.bias[fresh] = 0


def _module_maps(
    name: str, g_a_last: str, old_cfg: HPCMConfig, new_cfg: HPCMConfig
) -> tuple[ChannelMap, ChannelMap]:
    """(output-axis rule, input-axis rule) for the convolution ``name``."""
    latent = _latent_map(old_cfg.M, new_cfg.M)
    if name == g_a_last:  # transform channels -> y
        return latent, _prefix_map
    if name == "g_s.branch.0":  # ŷ -> transform channels
        return _prefix_map, latent
    rule = _channel_rule(name, old_cfg, new_cfg)
    return rule, rule


def _channel_rule(name: str, old_cfg: HPCMConfig, new_cfg: HPCMConfig) -> ChannelMap:
    """The layout of a module's own channels: the transforms' (old first) or the latent's (by group)."""
    return _prefix_map if name.startswith(("g_a.", "g_s.")) else _latent_map(old_cfg.M, new_cfg.M)


#: h_s's convolutions that write its output stream: the up-convolutions and each residual block's last layer.
_H_S_WRITE = re.compile(r"h_s\.branch\.\d+(\.branch\.3)?")


def _index_of(size_old: int, size_new: int, rule: ChannelMap) -> Tensor:
    return torch.arange(size_old) if size_old == size_new else rule(size_old, size_new)


@torch.no_grad()
def widen(narrow: nn.Module, config: HPCMConfig, *, seed: int = 0) -> nn.Module:
    """A model of ``config`` that computes exactly what ``narrow`` (an :class:`HPCM`) computes.

    ``config`` may differ from ``narrow.config`` only in ``M`` and ``g_channels`` (:func:`check_widenable`).
    New channels take the initial weights of ``HPCM(config)`` under ``torch.manual_seed(seed)``.
    """
    from hpcm.models.hpcm import HPCM

    old_cfg: HPCMConfig = narrow.config
    check_widenable(old_cfg, config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        wide = HPCM(config)
    g_a_last = f"g_a.branch.{len(wide.g_a.branch) - 1}"
    latent = _latent_map(old_cfg.M, config.M)
    old_modules = dict(narrow.named_modules())
    done: set[str] = set()

    for name, module in wide.named_modules():
        if not isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
            continue
        old = old_modules[name]
        out_rule, in_rule = _module_maps(name, g_a_last, old_cfg, config)
        out_ax, in_ax = _conv_axes(module)
        out_map = _index_of(old.weight.shape[out_ax], module.weight.shape[out_ax], out_rule)
        in_map = _index_of(old.weight.shape[in_ax] * old.groups, module.weight.shape[in_ax] * module.groups,
                           in_rule)
        _embed_conv(old, module, out_map, in_map)
        done.update(f"{name}.{p}" for p, _ in module.named_parameters(recurse=False))
        if name == g_a_last or name.endswith(".branch_2.1"):
            _zero_new_outputs(module, out_map)  # the new latent channels / their σ, μ start at 0
        if _H_S_WRITE.fullmatch(name) and module.weight.shape[out_ax] == 2 * config.M:
            _zero_new_outputs(module, out_map)  # every write into h_s's 2M output stream

    for name, module in wide.named_modules():
        if isinstance(module, PConv):
            _fix_partial_conv(name, module, old_modules[name], old_cfg, config)
        elif isinstance(module, CrossAttentionCell):
            _keep_logits(module, old_modules[name])

    # per-channel vectors: adaptive quantisation steps, quality gains; (1, N) hyper vectors are unchanged
    old_params = dict(narrow.named_parameters())
    for name, param in wide.named_parameters():
        if name in done:
            continue
        src = old_params[name]
        if src.shape == param.shape:
            param.copy_(src)
            continue
        axis = next(i for i, (a, b) in enumerate(zip(src.shape, param.shape, strict=True)) if a != b)
        index = _index_of(src.shape[axis], param.shape[axis], latent)
        if name.startswith("quality_gains."):  # new channels: every quality's mean log-gain
            param.copy_(src.mean(dim=axis, keepdim=True).expand_as(param))
        param.index_copy_(axis, index, src)
    for name, buf in wide.named_buffers():
        src = narrow.get_buffer(name)
        if src.shape == buf.shape:
            buf.copy_(src)
    wide.weights_info = {}
    return wide


@torch.no_grad()
def _fix_partial_conv(name: str, new: PConv, old: PConv, old_cfg: HPCMConfig, new_cfg: HPCMConfig) -> None:
    """Keep old convolved channels convolved; old pass-through channels now in range get an identity."""
    full = _index_of(old.channels, new.channels, _channel_rule(name, old_cfg, new_cfg))
    if bool((full[: old.conv_ch] >= new.conv_ch).any()):
        raise ValueError(f"widen: {name}: a convolved channel would leave the convolved range")
    for c in full[old.conv_ch :].tolist():
        if c < new.conv_ch:
            new.pconv.weight[c] = 0
            new.pconv.weight[c, c, 1, 1] = 1
            new.pconv.bias[c] = 0


@torch.no_grad()
def _keep_logits(new: CrossAttentionCell, old: CrossAttentionCell) -> None:
    """Same head count, wider heads: new query dims 0, old ones scaled so q·k/sqrt(d) is unchanged."""
    if new.num_heads != old.num_heads:
        raise ValueError("widen: attention cells must keep their number of heads")
    if new.head_dim == old.head_dim:
        return
    fresh = torch.ones(new.hidden_dim, dtype=torch.bool)
    index = _latent_map(old.hidden_dim // 2, new.hidden_dim // 2)(old.hidden_dim, new.hidden_dim)
    fresh[index] = False
    factor = math.sqrt(new.head_dim / old.head_dim)
    new.conv_q.weight[fresh] = 0
    new.conv_q.bias[fresh] = 0
    new.conv_q.weight[index] *= factor
    new.conv_q.bias[index] *= factor
