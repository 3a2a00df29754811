"""Bi-RWKV layers and the HPCM x RWKV context components (spec birwkv.md §4-5, hpcm.md §4.4, §4.7-4.8)."""

from __future__ import annotations

import pytest
import torch

from hpcm.layers.rwkv import (
    ChannelMix,
    OmniShift,
    RWKVBlock,
    RWKVContextCell,
    RWKVFusionNet,
    RWKVSpatialPrior,
    RWKVSpatialPrior_S1_S2,
    RWKVSpatialPrior_S3,
    SpatialMix,
)
from hpcm.models.components import (
    CellSpec,
    ContextNetSpec,
    PriorSpec,
    build_cell,
    build_context_net,
    build_prior,
)
from hpcm.ops import biwkv


def _randomise(m: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p) * 0.5)


def test_omnishift_fused_equals_unfused():
    m = OmniShift(6, alpha_init="randn")
    _randomise(m)
    x = torch.randn(2, 6, 7, 5)
    m.train()
    a = m(x)
    m.eval()
    with torch.no_grad():
        b = m(x)
    assert torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(m.forward_unfused(x), b, atol=1e-5)


def test_omnishift_fusion_never_stale_after_load_and_step():
    m = OmniShift(4)
    x = torch.randn(1, 4, 6, 6)
    m.eval()
    with torch.no_grad():
        m(x)  # builds the cache
    other = OmniShift(4, alpha_init="randn")
    _randomise(other)
    m.load_state_dict(other.state_dict())
    with torch.no_grad():
        assert torch.allclose(m(x), other.forward_unfused(x), atol=1e-5)
    # an optimizer step while in eval mode (in-place update) invalidates the cache too
    opt = torch.optim.SGD(m.parameters(), lr=0.5)
    m.forward_unfused(x).square().sum().backward()
    opt.step()
    with torch.no_grad():
        assert torch.allclose(m(x), m.forward_unfused(x), atol=1e-5)
        assert not torch.allclose(m(x), other.forward_unfused(x), atol=1e-3)


def test_omnishift_ignores_lalic_fused_key():
    m = OmniShift(3)
    sd = m.state_dict()
    sd["conv5x5_reparam.weight"] = torch.randn(3, 1, 5, 5)
    m.load_state_dict(sd)  # strict: the stored fused copy is dropped and re-derived
    assert "conv5x5_reparam.weight" not in m.state_dict()


def test_spatial_mix_uses_biwkv_with_decay_over_t():
    m = SpatialMix(5)
    _randomise(m)
    x = torch.randn(2, 12, 5)
    hw = (3, 4)
    y = m(x, hw)
    xs = m.omni_shift(x.transpose(1, 2).reshape(2, 5, 3, 4)).flatten(2).transpose(1, 2)
    wkv = biwkv(m.decay / 12, m.boost / 12, m.key(xs), m.value(xs), impl="reference")
    assert torch.allclose(y, m.output(torch.sigmoid(m.receptance(xs)) * wkv), atol=1e-5)


def test_spatial_mix_two_pass_is_column_scan():
    m = SpatialMix(4, recurrence=2)
    assert m.decay.shape == (2, 4)
    _randomise(m)
    H, W = 2, 3
    x = torch.randn(1, H * W, 4)
    xs = m.omni_shift(x.transpose(1, 2).reshape(1, 4, H, W)).flatten(2).transpose(1, 2)
    k, v = m.key(xs), m.value(xs)
    y1 = biwkv(m.decay[0] / 6, m.boost[0] / 6, k, v, impl="reference")

    def col(t):  # raster (h, w) -> column-major (w, h) token order
        return t.reshape(1, H, W, 4).transpose(1, 2).reshape(1, H * W, 4)

    y2 = biwkv(m.decay[1] / 6, m.boost[1] / 6, col(k), col(y1), impl="reference")
    y2 = y2.reshape(1, W, H, 4).transpose(1, 2).reshape(1, H * W, 4)
    ref = m.output(torch.sigmoid(m.receptance(xs)) * y2)
    assert torch.allclose(m(x, (H, W)), ref, atol=1e-5)


def test_channel_mix_formula():
    m = ChannelMix(4, hidden_rate=2)
    assert m.key.out_features == 8
    m.eval()
    x = torch.randn(1, 6, 4)
    with torch.no_grad():
        xs = m.omni_shift(x.transpose(1, 2).reshape(1, 4, 2, 3)).flatten(2).transpose(1, 2)
        ref = torch.sigmoid(m.receptance(xs)) * m.value(torch.relu(m.key(xs)) ** 2)
        assert torch.allclose(m(x, (2, 3)), ref, atol=1e-6)


def test_block_residual_and_layer_scale():
    blk = RWKVBlock(8, hidden_rate=2)
    assert torch.equal(blk.gamma1, torch.ones(8))
    x = torch.randn(2, 8, 3, 5)
    with torch.no_grad():
        blk.gamma1.zero_()
        blk.gamma2.zero_()
    assert torch.equal(blk(x), x)
    keys = set(blk.state_dict())
    expected = {"att.decay", "att.boost", "att.omni_shift.alpha", "ffn.key.weight", "ln1.weight", "gamma2"}
    assert expected <= keys


@pytest.mark.parametrize("impl", ["torch", "auto"])
def test_checkpoint_gives_same_gradients(impl):
    torch.manual_seed(1)
    a = RWKVBlock(8, hidden_rate=2, impl=impl)
    b = RWKVBlock(8, hidden_rate=2, use_checkpoint=True, impl=impl)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 8, 4, 3)
    grads = []
    for m in (a, b):
        xi = x.clone().requires_grad_()
        m(xi).square().sum().backward()
        grads.append([xi.grad] + [p.grad for p in m.parameters()])
    for ga, gb in zip(*grads):
        assert torch.allclose(ga, gb, atol=1e-6)


def test_context_cell_drop_in_signature_any_grid():
    dim = 8
    cell = build_cell(CellSpec(kind="rwkv", hidden_rate=2), dim)
    assert isinstance(cell, RWKVContextCell)
    for h, w in [(3, 5), (1, 1), (4, 4)]:
        psi, prev = torch.randn(2, dim, h, w), torch.randn(2, dim, h, w)
        out = cell(psi, prev)
        assert out.shape == prev.shape and torch.isfinite(out).all()


def test_fusion_net_shape_and_blocks():
    net = build_context_net(ContextNetSpec(kind="rwkv", num_blocks=2, hidden_rate=2), 8)
    assert isinstance(net, RWKVFusionNet) and len(net.blocks) == 2
    x = torch.randn(1, 8, 4, 6)
    assert net(x).shape == x.shape


def test_spatial_prior_shapes_and_quant_step():
    M = 4
    prior = build_prior(PriorSpec(kind="rwkv", depths=(2, 1), hidden_rate=2), M)
    assert isinstance(prior, RWKVSpatialPrior)
    assert len(prior.branch_1) == 2 and len(prior.branch_2) == 2  # 1 block + 1x1 conv
    x = torch.randn(2, 3 * M, 5, 3)
    q = torch.ones(1, 3 * M, 1, 1)
    psi = prior(x, q)
    assert psi.shape == (2, 2 * M, 5, 3)
    # quant_step multiplies branch_1's output
    q2 = torch.rand(1, 3 * M, 1, 1) + 0.5
    assert torch.allclose(prior(x, q2), prior.branch_2(prior.branch_1(x) * q2))
    assert [len(p.branch_1) for p in (RWKVSpatialPrior_S1_S2(M), RWKVSpatialPrior_S3(M))] == [2, 3]
    assert len(RWKVSpatialPrior_S3(M).branch_2) == 3


def test_eval_and_train_agree_and_backward_runs():
    cell = RWKVContextCell(8, hidden_rate=2)
    psi, prev = torch.randn(1, 8, 3, 4), torch.randn(1, 8, 3, 4)
    out_train = cell(psi, prev)
    out_train.sum().backward()
    assert all(p.grad is not None for p in cell.parameters())
    cell.eval()
    with torch.no_grad():
        assert torch.allclose(cell(psi, prev), out_train, atol=1e-5)
