"""Tests for the multi-reference memory bank (hpcm.layers.memory_bank)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from hpcm.layers.memory_bank import (
    MEMORY_PRESETS,
    MULTIREF_ACCURATE,
    MULTIREF_DEFAULT,
    MULTIREF_LIGHT,
    FullContextMemoryBank,
    HierarchicalMemoryManager,
    MemoryBankConfig,
    MemoryBankState,
    compressed_width,
    entries_bytes,
    upsample_nearest_exact,
)

C = 32  # context channels (2M) used throughout: tiny, CPU-friendly
# A miniature HPCM schedule: (scale, grid) for the 10 network steps on a y grid of 8 x 12 (s1: 2x3, s2: 4x6).
SCHEDULE = [("s1", (2, 3))] + [("s2", (4, 6))] * 3 + [("s3", (8, 12))] * 6


def _randomise_fusion(module: nn.Module, seed: int = 1) -> None:
    """Give every zero-initialised last projection random weights so the bank changes its input."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, FullContextMemoryBank):
            with torch.no_grad():
                m.fusion_out.weight.copy_(torch.randn(m.fusion_out.weight.shape, generator=g) * 0.5)
                m.fusion_out.bias.copy_(torch.randn(m.fusion_out.bias.shape, generator=g) * 0.1)


def _inputs(batch: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per step: (context C, stored psi), both (B, C, h, w)."""
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, C, *hw, generator=g), torch.randn(batch, C, *hw, generator=g))
            for _, hw in SCHEDULE]


def _run(
    mem: HierarchicalMemoryManager, inputs, initial: torch.Tensor | None = None
) -> tuple[list[torch.Tensor], MemoryBankState]:
    """Drive the manager through SCHEDULE the way the model's step loop does; return the fused contexts and
    the pass's state."""
    state = mem.new_state(inputs[0][0].shape[0])
    if initial is not None:  # step 1 (hyper only): store the initial context
        mem.write(state, "s1", initial)
    outs, prev = [], None
    for (scale, _), (ctx, psi) in zip(SCHEDULE, inputs):
        if prev is not None and scale != prev:
            mem.transfer(state, scale)
        prev = scale
        outs.append(mem.read_and_fuse(state, scale, ctx))
        mem.write(state, scale, psi)
    return outs, state


# ---------------------------------------------------------------------------------------------------------
# zero init, fusion
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("hw", [(1, 1), (3, 5), (7, 9), (8, 12)])
@pytest.mark.parametrize("mode", ["topk", "soft"])
def test_zero_init_is_identity(hw, mode):
    bank = FullContextMemoryBank(C, max_refs=3, topk=2, value_resolution=4, mode=mode)
    entries, log = [], []
    for _ in range(3):
        bank.write(entries, torch.randn(2, C, *hw))
    cur = torch.randn(2, C, *hw)
    out = bank.read_and_fuse(entries, cur, log)
    assert len(log) == 1  # a real read happened
    assert torch.equal(out, cur)


def test_manager_zero_init_is_identity_over_schedule():
    mem = HierarchicalMemoryManager(C, MULTIREF_DEFAULT)
    inputs = _inputs(2)
    outs, state = _run(mem, inputs, initial=torch.randn(2, C, 2, 3))
    assert len(state.last_indices) == len(SCHEDULE)
    for out, (ctx, _) in zip(outs, inputs):
        assert torch.equal(out, ctx)


def test_randomised_last_projection_changes_output():
    bank = FullContextMemoryBank(C, max_refs=2, topk=1, value_resolution=4)
    _randomise_fusion(bank)
    entries = []
    bank.write(entries, torch.randn(1, C, 5, 7))
    cur = torch.randn(1, C, 5, 7)
    out = bank.read_and_fuse(entries, cur)
    assert out.shape == cur.shape and torch.isfinite(out).all()
    assert (out - cur).abs().max() > 1e-3


def test_empty_bank_returns_input_object():
    bank = FullContextMemoryBank(C)
    _randomise_fusion(bank)
    cur = torch.randn(1, C, 4, 4)
    log = []
    assert bank.read_and_fuse([], cur, log) is cur
    assert log == []


# ---------------------------------------------------------------------------------------------------------
# buffer, selection, modes
# ---------------------------------------------------------------------------------------------------------


def test_fifo_eviction_and_capacity():
    bank = FullContextMemoryBank(C, max_refs=3)
    xs = [torch.randn(1, C, 4, 4) for _ in range(5)]
    entries = []
    first = [bank.encode(x, entry_id=i) for i, x in enumerate(xs[:3])]
    for e in first:
        assert bank.push(entries, e) is None
    assert bank.push(entries, bank.encode(xs[3], entry_id=3)) is first[0]
    assert bank.push(entries, bank.encode(xs[4], entry_id=4)) is first[1]
    assert len(entries) == 3
    assert [e.entry_id for e in entries] == [2, 3, 4]
    assert entries_bytes(entries) == 3 * 4 * (bank.key_dim + bank.value_dim * 8 * 8)
    assert bank.write(entries, xs[0]).entry_id == 5  # default id: one after the newest


def test_topk_tie_break_lowest_index():
    bank = FullContextMemoryBank(C, max_refs=4, topk=2, value_resolution=2)
    x = torch.randn(1, C, 3, 3)
    entries, log = [], []
    for _ in range(4):  # identical entries: all scores tie exactly
        bank.write(entries, x.clone())
    bank.read_and_fuse(entries, torch.randn(1, C, 3, 3), log)
    assert log[-1].indices.tolist() == [[0, 1]]
    torch.testing.assert_close(log[-1].weights, torch.full((1, 2), 0.5))


def test_select_matches_reference_ranking_with_many_ties():
    g = torch.Generator().manual_seed(3)
    for mode, topk in [("topk", 3), ("soft", 3)]:
        bank = FullContextMemoryBank(C, max_refs=40, topk=topk, mode=mode)
        scores = torch.randint(0, 3, (5, 40), generator=g).float() / 2  # many exact ties
        got = bank.select(scores)
        for b in range(5):
            ref = sorted(range(40), key=lambda i, b=b: (-scores[b, i].item(), i))
            k = 40 if mode == "soft" else topk
            assert got[b].tolist() == ref[:k]


def test_soft_vs_topk():
    torch.manual_seed(0)
    banks = {
        "topk": FullContextMemoryBank(C, max_refs=4, topk=2, value_resolution=4, mode="topk"),
        "topk_all": FullContextMemoryBank(C, max_refs=4, topk=4, value_resolution=4, mode="topk"),
        "soft": FullContextMemoryBank(C, max_refs=4, topk=2, value_resolution=4, mode="soft"),
    }
    state = banks["topk"].state_dict()
    for b in banks.values():
        b.load_state_dict(state)
        _randomise_fusion(b)
    xs = [torch.randn(2, C, 6, 6) for _ in range(4)]
    cur = torch.randn(2, C, 6, 6)
    outs, logs = {}, {}
    for name, b in banks.items():
        entries, logs[name] = [], []
        for x in xs:
            b.write(entries, x)
        outs[name] = b.read_and_fuse(entries, cur, logs[name])
    soft = logs["soft"][-1]
    assert soft.indices.shape == (2, 4) and sorted(soft.indices[0].tolist()) == [0, 1, 2, 3]
    torch.testing.assert_close(soft.weights.sum(1), torch.ones(2))
    assert logs["topk"][-1].indices.shape == (2, 2)
    # top-k over every entry is the soft mode (same ranking, same weights)
    assert torch.equal(outs["topk_all"], outs["soft"])
    assert not torch.equal(outs["topk"], outs["soft"])
    # the top-2 picks are the first two of the soft ranking
    assert torch.equal(logs["topk"][-1].indices, soft.indices[:, :2])


def test_manager_mode_switch():
    mem = HierarchicalMemoryManager(C, MULTIREF_DEFAULT)
    mem.mode = "soft"
    assert all(b.mode == "soft" for b in mem.banks.values()) and mem.config.mode == "soft"
    with pytest.raises(ValueError):
        mem.mode = "hard"


def test_temperature_clamped_and_learnable():
    bank = FullContextMemoryBank(C, temperature=0.1)
    assert isinstance(bank.log_temperature, nn.Parameter)
    torch.testing.assert_close(bank.temperature, torch.tensor(0.1))
    with torch.no_grad():
        bank.log_temperature.fill_(5.0)
    assert bank.temperature.item() == 1.0
    with torch.no_grad():
        bank.log_temperature.fill_(-10.0)
    assert bank.temperature.item() == pytest.approx(0.02)
    fixed = FullContextMemoryBank(C, learnable_temperature=False)
    assert "log_temperature" not in dict(fixed.named_parameters())


# ---------------------------------------------------------------------------------------------------------
# per-image state, causality, transfer
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["topk", "soft"])
def test_per_sample_independence_bitwise(mode):
    mem = HierarchicalMemoryManager(C, MemoryBankConfig(mode=mode, value_resolution=4))
    _randomise_fusion(mem)
    inputs = _inputs(3, seed=5)
    init = torch.randn(3, C, 2, 3)
    with torch.no_grad():
        batched, batched_state = _run(mem, inputs, init)
        for b in range(3):
            alone, state = _run(mem, [(c[b:b + 1], p[b:b + 1]) for c, p in inputs], init[b:b + 1])
            for o_b, o_a in zip(batched, alone):
                assert torch.equal(o_b[b:b + 1], o_a)
            for i_b, i_a in zip(batched_state.last_indices, state.last_indices):
                assert torch.equal(i_b[b:b + 1], i_a)


def test_new_state_isolates_images_and_reproduces_indices():
    mem = HierarchicalMemoryManager(C, MULTIREF_DEFAULT)
    _randomise_fusion(mem)
    with torch.no_grad():
        ref, ref_state = _run(mem, _inputs(1, seed=7))
        _run(mem, _inputs(1, seed=8))  # another image in between
        again, state = _run(mem, _inputs(1, seed=7))
    assert all(torch.equal(a, b) for a, b in zip(ref, again))
    # "encoder" == "decoder"
    assert all(torch.equal(a, b) for a, b in zip(ref_state.last_indices, state.last_indices, strict=True))


def test_modules_hold_no_per_image_state():
    """A pass leaves nothing on the modules: their attributes are the same objects before and after."""
    mem = HierarchicalMemoryManager(C, MULTIREF_DEFAULT)
    before = {name: dict(vars(m)) for name, m in mem.named_modules()}
    _, state = _run(mem, _inputs(2), initial=torch.randn(2, C, 2, 3))
    assert state.num_writes == len(SCHEDULE) + 1 and state.memory_bytes() > 0
    for name, m in mem.named_modules():
        after = vars(m)
        assert after.keys() == before[name].keys(), name
        assert all(after[k] is v for k, v in before[name].items()), name


def test_foreign_state_and_batch_mismatch_raise():
    mem = HierarchicalMemoryManager(C)
    other = HierarchicalMemoryManager(C, replace_cfg(enabled_scales=("s3",)))
    with pytest.raises(ValueError, match="new_state"):
        mem.read_and_fuse(other.new_state(), "s3", torch.randn(1, C, 4, 4))
    with pytest.raises(ValueError):
        mem.new_state(0)
    state = mem.new_state(2)
    with pytest.raises(ValueError):
        mem.write(state, "s3", torch.randn(1, C, 4, 4))
    with pytest.raises(ValueError):
        mem.read_and_fuse(state, "s9", torch.randn(2, C, 4, 4))


@pytest.mark.parametrize("t", [1, 3, 5])
def test_causality_reads_ignore_later_and_same_step_writes(t):
    mem = HierarchicalMemoryManager(C, MemoryBankConfig(value_resolution=4, mode="soft"))
    _randomise_fusion(mem)
    inputs = _inputs(1, seed=11)
    perturbed = [(c, p + 3.0 * torch.randn_like(p) if i >= t else p) for i, (c, p) in enumerate(inputs)]
    with torch.no_grad():
        ref, ref_state = _run(mem, inputs)
        ids = ref_state.last_entry_ids
        out, _ = _run(mem, perturbed)
    for i in range(t + 1):  # step t's own write happens after its read
        assert torch.equal(ref[i], out[i])
    assert not torch.equal(ref[t + 1], out[t + 1])  # the perturbation is visible one step later
    # step i writes id i; step 0 finds the bank empty, so read j belongs to step j + 1 and sees ids <= j
    assert len(ids) == len(SCHEDULE) - 1
    for j, read_ids in enumerate(ids):
        assert int(read_ids.max()) <= j


def test_causality_gradient():
    """The step-t output has exactly zero gradient w.r.t. what steps >= t store."""
    mem = HierarchicalMemoryManager(C, MemoryBankConfig(value_resolution=4, mode="soft"))
    _randomise_fusion(mem)
    inputs = [(c, p.requires_grad_()) for c, p in _inputs(1, seed=12)]
    outs, _ = _run(mem, inputs)
    t = 4
    grads = torch.autograd.grad(outs[t].sum(), [p for _, p in inputs], allow_unused=True)
    for i, g in enumerate(grads):
        if i >= t:
            assert g is None or torch.count_nonzero(g) == 0
    assert grads[t - 1] is not None and torch.count_nonzero(grads[t - 1]) > 0


def test_transfer_moves_entries_with_fifo_eviction():
    cfg = replace_cfg(max_refs_s1=3, max_refs_s2=2, max_refs_s3=4)
    mem = HierarchicalMemoryManager(C, cfg)
    state = mem.new_state(1)
    for _ in range(3):
        mem.write(state, "s1", torch.randn(1, C, 2, 3))
    s1_entries = list(state.entries["s1"])
    mem.transfer(state, "s2")
    assert state.num_entries() == {"s1": 0, "s2": 2, "s3": 0}
    moved = state.entries["s2"]
    assert [e.entry_id for e in moved] == [1, 2]  # target full: oldest evicted first
    for a, b in zip(s1_entries[1:], moved):  # moved unchanged (no resampling)
        assert a.key is b.key and a.value is b.value and b.origin == "s1"
    mem.write(state, "s2", torch.randn(1, C, 4, 6))
    mem.transfer(state, "s3")
    assert [e.entry_id for e in state.entries["s3"]] == [2, 3]
    assert [e.origin for e in state.entries["s3"]] == ["s1", "s2"]
    # a read at s3 uses the transferred entries (keys and values dimension-compatible across scales)
    mem.read_and_fuse(state, "s3", torch.randn(1, C, 8, 12))
    assert sorted(state.last_entry_ids[-1][0].tolist()) == [2, 3]


def test_transfer_disabled_and_skipped_scale():
    mem = HierarchicalMemoryManager(C, replace_cfg(enable_hierarchical_transfer=False))
    state = mem.new_state(1)
    mem.write(state, "s1", torch.randn(1, C, 2, 3))
    mem.transfer(state, "s2")
    assert state.num_entries() == {"s1": 0, "s2": 0, "s3": 0}
    # s2 disabled: s1 entries wait in s1 and move straight to s3
    mem = HierarchicalMemoryManager(C, replace_cfg(enabled_scales=("s1", "s3")))
    assert set(mem.banks) == {"s1", "s3"}
    state = mem.new_state(1)
    mem.write(state, "s1", torch.randn(1, C, 2, 3))
    mem.transfer(state, "s2")
    x = torch.randn(1, C, 4, 6)
    assert mem.read_and_fuse(state, "s2", x) is x
    mem.write(state, "s2", x)  # no bank: no-op
    assert state.num_entries() == {"s1": 1, "s3": 0} and state.num_writes == 1
    mem.transfer(state, "s3")
    assert state.num_entries() == {"s1": 0, "s3": 1}


def test_phase1_s3_only():
    mem = HierarchicalMemoryManager(C, replace_cfg(enabled_scales=("s3",)))
    assert list(mem.banks) == ["s3"]
    outs, state = _run(mem, _inputs(1))
    assert len(state.last_indices) == 5  # six s3 steps, the first finds the bank empty
    assert state.num_entries() == {"s3": 4}
    assert outs[0].shape == (1, C, 2, 3)


# ---------------------------------------------------------------------------------------------------------
# training, shapes, resampling
# ---------------------------------------------------------------------------------------------------------


def test_gradient_flows_in_training():
    mem = HierarchicalMemoryManager(C, replace_cfg(mode="soft", value_resolution=4)).train()
    inputs = [(c.requires_grad_(), p.requires_grad_()) for c, p in _inputs(2, seed=2)]
    # at init only the zero-initialised projection receives gradient
    sum(o.square().sum() for o in _run(mem, inputs)[0]).backward()
    b3 = mem.banks["s3"]
    assert b3.fusion_out.weight.grad.abs().sum() > 0
    mem.zero_grad()
    _randomise_fusion(mem)
    init = torch.randn(2, C, 2, 3, requires_grad=True)
    outs, _ = _run(mem, inputs, initial=init)
    sum(o.square().sum() for o in outs).backward()
    for name, p in mem.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        # s1 reads once from a single entry (softmax weight 1: no gradient to its temperature/query)
        if name.startswith(("banks.s2", "banks.s3", "banks.s1.key", "banks.s1.value", "banks.s1.fusion")):
            assert p.grad.abs().sum() > 0, name
    assert inputs[5][1].grad.abs().sum() > 0  # into the stored psi of an earlier step
    assert init.grad.abs().sum() > 0  # through s1 -> s2 -> s3 transfers


@pytest.mark.parametrize("hw", [(1, 1), (1, 7), (3, 5), (9, 4), (16, 20)])
@pytest.mark.parametrize("r", [1, 4, 8])
def test_grid_sizes(hw, r):
    bank = FullContextMemoryBank(C, max_refs=2, topk=2, value_resolution=r)
    _randomise_fusion(bank)
    entries = []
    bank.write(entries, torch.randn(2, C, 5, 5))  # written at another grid size
    bank.write(entries, torch.randn(2, C, *hw))
    cur = torch.randn(2, C, *hw)
    out = bank.read_and_fuse(entries, cur)
    assert out.shape == cur.shape and torch.isfinite(out).all()
    assert entries[1].value.shape == (2, bank.value_dim, r, r)


def test_upsample_nearest_exact_reference():
    x = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(1, 2, 3, 4)
    for h, w in [(3, 4), (7, 5), (1, 1), (6, 8), (2, 3)]:
        y = upsample_nearest_exact(x, (h, w))
        for i in range(h):
            for j in range(w):
                assert torch.equal(y[0, :, i, j], x[0, :, (i * 3) // h, (j * 4) // w])


def test_keys_are_informative_at_tiny_width():
    """GroupNorm + global pooling must not collapse the key to a constant (>= 2 channels per group)."""
    for ch, ratio in [(8, 8), (16, 8), (12, 4), (128, 4), (192, 8)]:
        bank = FullContextMemoryBank(ch, compress_ratio=ratio)
        assert bank.key_dim == compressed_width(ch, ratio) >= 2
        assert bank.key_dim // bank.key_encoder.norm.num_groups >= 2
        k1 = bank.encode(torch.randn(1, ch, 4, 4)).key
        k2 = bank.encode(torch.randn(1, ch, 4, 4)).key
        assert not torch.allclose(k1, k2)


# ---------------------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------------------


def replace_cfg(**kw) -> MemoryBankConfig:
    """MULTIREF_DEFAULT with some fields changed."""
    return MemoryBankConfig.from_dict({**MULTIREF_DEFAULT.to_dict(), **kw})


def test_config_round_trip_and_presets():
    for cfg in MEMORY_PRESETS.values():
        d = json.loads(json.dumps(cfg.to_dict()))
        assert MemoryBankConfig.from_dict(d) == cfg
    assert [MULTIREF_DEFAULT.max_refs(s) for s in ("s1", "s2", "s3")] == [2, 3, 4]
    assert [MULTIREF_DEFAULT.topk_refs(s) for s in ("s1", "s2", "s3")] == [1, 2, 2]
    assert (MULTIREF_DEFAULT.value_resolution, MULTIREF_DEFAULT.compress_ratio) == (8, 4)
    assert MULTIREF_DEFAULT.enable_hierarchical_transfer and MULTIREF_DEFAULT.temperature == 0.1
    assert [MULTIREF_LIGHT.max_refs(s) for s in ("s1", "s2", "s3")] == [1, 2, 3]
    assert (MULTIREF_LIGHT.compress_ratio, MULTIREF_LIGHT.value_resolution) == (8, 4)
    assert [MULTIREF_ACCURATE.max_refs(s) for s in ("s1", "s2", "s3")] == [3, 4, 6]
    assert [MULTIREF_ACCURATE.topk_refs(s) for s in ("s1", "s2", "s3")] == [2, 3, 3]
    assert (MULTIREF_ACCURATE.compress_ratio, MULTIREF_ACCURATE.value_resolution) == (2, 16)


@pytest.mark.parametrize("bad", [
    {"mode": "hard"}, {"max_refs_s2": 0}, {"topk_refs_s3": 0}, {"enabled_scales": ("s4",)},
    {"enabled_scales": ("s3", "s3")}, {"temperature": 5.0}, {"compress_ratio": 0}, {"nope": 1},
])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        replace_cfg(**bad)


@pytest.mark.parametrize("channels", [16, 128, 192])
@pytest.mark.parametrize("preset", ["default", "light", "accurate"])
def test_presets_build_at_small_widths(channels, preset):
    mem = HierarchicalMemoryManager(channels, MEMORY_PRESETS[preset].to_dict())
    counts = mem.num_parameters(per_scale=True)
    assert set(counts) == {"s1", "s2", "s3"} and mem.num_parameters() == sum(counts.values())
    state = mem.new_state(1)
    mem.write(state, "s3", torch.randn(1, channels, 3, 3))
    out = mem.read_and_fuse(state, "s3", torch.randn(1, channels, 3, 3))
    assert out.shape == (1, channels, 3, 3)


# ---------------------------------------------------------------------------------------------------------
# the model's step-loop seam
# ---------------------------------------------------------------------------------------------------------


def test_seam_adapter_follows_static_schedule():
    """``memory(state, step, C)`` as HPCM's step loop calls it: transfer at scale starts, read, then write."""
    from hpcm.models.schedule import STEPS

    mem = HierarchicalMemoryManager(C, MULTIREF_DEFAULT)
    _randomise_fusion(mem)
    state = mem.new_state()  # batch size bound on first use
    grids = {1: (2, 3), 2: (4, 6), 3: (8, 12)}
    seen = []
    for step in STEPS:
        if not step.uses_network:
            continue
        ctx = torch.randn(2, C, *grids[step.scale])
        out = mem(state, step, ctx)
        assert out.shape == ctx.shape
        seen.append(state.num_entries()[f"s{step.scale}"])
    # s1: 1 write; s2: 1 transferred + 3 writes, capacity 3; s3: 3 transferred + 6 writes, capacity 4
    assert seen == [1, 2, 3, 3, 4, 4, 4, 4, 4, 4]
    assert state.num_writes == 10 and len(state.last_indices) == 9
    with pytest.raises(ValueError):
        mem.write(state, "s3", torch.randn(3, C, 8, 12))  # batch bound to 2


@pytest.mark.slow
def test_inside_hpcm_tiny_identity_and_decodable(memory_states):
    """In the real model: identity at init; randomised bank changes x_hat and decodes with equal indices."""
    from hpcm.models.registry import create_model

    model = create_model("hpcm-tiny").eval()
    x = torch.rand(1, 3, 64, 128)
    with torch.no_grad():
        ref = model(x)["x_hat"]
        model.memory = HierarchicalMemoryManager(2 * model.M, replace_cfg(value_resolution=4))
        assert torch.equal(model(x)["x_hat"], ref)
        _randomise_fusion(model.memory)
        fwd = model(x)["x_hat"]
        assert not torch.equal(fwd, ref)
        states = memory_states(model.memory)
        enc = model.compress(x)
        dec = model.decompress(enc["strings"], enc["shape"])["x_hat"]
    (enc_state, dec_state) = states
    # steps 2..10 read (step 1 writes the hyper context; step 11's context update would never be used)
    assert len(enc_state.last_indices) == 9
    assert all(torch.equal(a, b) for a, b in zip(enc_state.last_indices, dec_state.last_indices, strict=True))
    torch.testing.assert_close(dec, fwd.clamp(0, 1), atol=1e-5, rtol=0)

