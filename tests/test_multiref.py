"""Multi-reference memory bank inside HPCM: decodability, causality, batch independence, identity at init.

Every test uses the ``-tiny`` multiref presets on CPU with the bank "switched on": its zero-initialised last
projections (and, for a stronger effect, the gate) get random weights, so that retrieval changes the entropy
parameters. Real Kodak crops are used where the data matters (exact coding).
"""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest
import torch
from PIL import Image

import hpcm
from hpcm.codec.api import _to_uint8, compress_image, decompress_image, pad_image
from hpcm.layers.memory_bank import FullContextMemoryBank, HierarchicalMemoryManager, MemoryBankState
from hpcm.models import schedule as S
from hpcm.models.hpcm import HPCM, LikelihoodCoder
from hpcm.models.registry import get_config, list_models
from hpcm.models.variants import HPCM_MultiRef_Phase2, multiref_memory

TINY_MULTIREF = sorted(n for n in list_models() if n.startswith("hpcm-multiref-") and n.endswith("-tiny"))
PHASE2 = "hpcm-multiref-phase2-tiny"


# ---------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _one_thread():
    """Pin torch to one thread per test: the Numba Bi-WKV kernel (RWKV cells) shares the OpenMP runtime and
    leaves torch at the machine's thread count, which slows the shared CPU and makes CPU convolutions
    batch-size dependent in the last bit (plain HPCM too), so bitwise batch checks need a fixed count."""
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(1)


def _crop(kodak_dir, name: str = "kodim23", h: int = 128, w: int = 192) -> torch.Tensor:
    """(1, 3, h, w) float crop in [0, 1] of a Kodak image."""
    img = np.asarray(Image.open(kodak_dir / f"{name}.png").convert("RGB"))[:h, :w]
    return torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float() / 255.0


def _activate(model: HPCM, seed: int = 1, scale: float = 0.2) -> None:
    """Random weights for every bank's zero-initialised fusion projection and its gate (bank acts)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.memory.modules():
            if isinstance(m, FullContextMemoryBank):
                for p in (m.fusion_out.weight, m.fusion_out.bias, m.gate.bias):
                    p.copy_(scale * torch.randn(p.shape, generator=g))


class RecordingCoder(LikelihoodCoder):
    """LikelihoodCoder that keeps every step's raw (sigma, mu), each (B, M, h, w), by step index."""

    def __init__(self, training: bool = False) -> None:
        super().__init__(training)
        self.params: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def code(self, step, sigma, mu, mask, y):
        self.params[step.index] = (sigma, mu)
        return super().code(step, sigma, mu, mask, y)


def _latents(model: HPCM, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """y (B, M, h, w) and params = h_s(z-hat) (B, 2M, h, w) as the eval forward computes them."""
    with torch.no_grad():
        y = model.g_a(x)
        z_hat = torch.round(model.h_a(y) - model.means_hyper) + model.means_hyper
        return y, model.h_s(z_hat)


def _eval_pass(model: HPCM, params: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, RecordingCoder]:
    coder = RecordingCoder(False)
    with torch.no_grad():
        y_hat = model.context_pass(params, coder, y)
    return y_hat, coder


def _read_log(state: MemoryBankState) -> list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The reads of one pass: (scale, positions, entry ids, weights)."""
    return [(r.scale, r.indices.clone(), r.entry_ids.clone(), r.weights.clone()) for r in state.read_log]


def _same_logs(a, b) -> bool:
    return len(a) == len(b) and all(
        sa == sb and torch.equal(ia, ib) and torch.equal(ea, eb) and torch.equal(wa, wb)
        for (sa, ia, ea, wa), (sb, ib, eb, wb) in zip(a, b, strict=True)
    )


def _roundtrip(model: HPCM, x: torch.Tensor, memory_states) -> dict:
    """Eval pass, compress, decompress; return the three y-hats, the passes' memory states and read logs."""
    y, params = _latents(model, x)
    states = memory_states(model.memory)
    y_hat, coder = _eval_pass(model, params, y)
    with torch.no_grad():
        enc = model.compress(x)
        dec = model.decompress_latent(enc["strings"], enc["shape"])
    fwd, enc_state, dec_state = states
    return {"y_hat": y_hat, "dec": dec, "fwd": _read_log(fwd), "enc": _read_log(enc_state),
            "dec_log": _read_log(dec_state), "states": states, "coder": coder, "y": y, "params": params}


def _expected_reads(model: HPCM) -> list[str]:
    """Scales of the reads the static schedule makes (a read happens when the scale's bank is non-empty)."""
    cfg = model.memory.config
    held = dict.fromkeys(cfg.enabled_scales, 0)
    out: list[str] = []
    if "s1" in held:
        held["s1"] = 1  # step 1 writes the hyper context
    for step in S.STEPS[1:-1]:  # step 1 only writes; the last step updates no context (no read)
        s = f"s{step.scale}"
        if step.starts_scale and s in held:
            moved = sum(held[c] for c in held if c < s)
            for c in held:
                if c < s:
                    held[c] = 0
            if cfg.enable_hierarchical_transfer:
                held[s] = min(cfg.max_refs(s), held[s] + moved)
        if s in held:
            if held[s]:
                out.append(s)
            held[s] = min(cfg.max_refs(s), held[s] + 1)
    return out


# ---------------------------------------------------------------------------------------------------------
# exact coding
# ---------------------------------------------------------------------------------------------------------


def test_all_tiny_presets_listed():
    assert len(TINY_MULTIREF) == 6 and PHASE2 in TINY_MULTIREF


@pytest.mark.parametrize("name", TINY_MULTIREF)
def test_exact_roundtrip_and_identical_retrieval(name, kodak_dir, memory_states):
    model = hpcm.create_model(name).eval()
    _activate(model)
    r = _roundtrip(model, _crop(kodak_dir), memory_states)
    assert torch.equal(r["dec"], r["y_hat"])
    # retrieval: the same reads, positions, entry ids and weights in forward, compress and decompress
    assert [s for s, *_ in r["fwd"]] == _expected_reads(model)
    assert _same_logs(r["fwd"], r["enc"]) and _same_logs(r["enc"], r["dec_log"])
    # the bank really acts: without it the entropy parameters differ
    bank = model.memory
    model.memory = None
    _, plain = _eval_pass(model, r["params"], r["y"])
    model.memory = bank
    assert any(not torch.equal(plain.params[t][0], r["coder"].params[t][0]) for t in range(2, 12))


def test_step1_write_feeds_the_s1_read(kodak_dir, memory_states):
    """s1 holds the step-1 hyper context, so the step-2 read retrieves it (entry id 0)."""
    model = hpcm.create_model(PHASE2).eval()
    _activate(model)
    r = _roundtrip(model, _crop(kodak_dir, h=64, w=128), memory_states)
    scale, idx, ids, w = r["fwd"][0]
    assert scale == "s1" and idx.tolist() == [[0]] and ids.tolist() == [[0]] and w.tolist() == [[1.0]]
    # reads at steps 2..10, writes at steps 1..10 (step 11's context update would never be read)
    assert len(r["fwd"]) == 9 and all(state.num_writes == 10 for state in r["states"])
    # retrieval is selective somewhere: not every read takes the oldest entries in order
    assert any(i.tolist() != [list(range(i.shape[1]))] for _, i, _, _ in r["fwd"])


def test_rwkv_phase2_cells_with_bank_roundtrip(kodak_dir, memory_states):
    """Seed-style constructor with ``phase="phase2"`` (RWKV cells at s1/s2/s3) plus the bank, tiny widths."""
    tiny = get_config("hpcm-tiny")
    overrides = {f.name: getattr(tiny, f.name) for f in fields(tiny) if f.name not in ("M", "N", "memory")}
    model = HPCM_MultiRef_Phase2(M=tiny.M, N=tiny.N, phase="phase2", value_resolution=4, **overrides).eval()
    assert type(model.attn_s1).__name__ == "RWKVContextCell"
    assert isinstance(model.memory, HierarchicalMemoryManager)
    _activate(model)
    with torch.no_grad():  # first Numba call: compiles and resets torch's thread count (see _one_thread)
        model(torch.rand(1, 3, 64, 64))
    torch.set_num_threads(1)
    r = _roundtrip(model, _crop(kodak_dir, "kodim05", 64, 128), memory_states)
    assert torch.equal(r["dec"], r["y_hat"])
    assert len(r["fwd"]) == 9 and _same_logs(r["fwd"], r["enc"]) and _same_logs(r["enc"], r["dec_log"])


def test_soft_mode_roundtrip(kodak_dir, memory_states):
    model = hpcm.create_model(PHASE2).eval()
    _activate(model)
    model.memory.mode = "soft"
    r = _roundtrip(model, _crop(kodak_dir, "kodim15"), memory_states)
    assert torch.equal(r["dec"], r["y_hat"])
    assert _same_logs(r["fwd"], r["enc"]) and _same_logs(r["enc"], r["dec_log"])
    # soft reads keep every stored entry: s3 starts with the 3 entries moved from s2, then is full (4)
    assert [i.shape[1] for s, i, *_ in r["fwd"] if s == "s3"] == [3, 4, 4, 4, 4]  # steps 6..10


def test_transfer_disabled_roundtrip(kodak_dir, memory_states):
    memory = multiref_memory(("s1", "s2", "s3"), enable_hierarchical_transfer=False)
    model = hpcm.create_model(PHASE2, memory=memory).eval()
    _activate(model)
    r = _roundtrip(model, _crop(kodak_dir, "kodim15"), memory_states)
    assert torch.equal(r["dec"], r["y_hat"])
    assert _same_logs(r["fwd"], r["enc"]) and _same_logs(r["enc"], r["dec_log"])
    # each scale starts empty: the first step of s2 and of s3 finds nothing to read
    assert [s for s, *_ in r["fwd"]] == ["s1", "s2", "s2", "s3", "s3", "s3", "s3"]  # steps 2..10


def test_odd_size_through_codec_api(kodak_dir):
    """A crop that needs padding (100 x 150) decodes to the eval reconstruction of the padded image."""
    model = hpcm.create_model(PHASE2).eval()
    _activate(model)
    img = np.asarray(Image.open(kodak_dir / "kodim23.png").convert("RGB"))[:100, :150].copy()
    data = compress_image(model, img)
    decoded = decompress_image(data, model)
    padded, top, left = pad_image(img, model.size_multiple)
    x = torch.from_numpy(padded.copy()).permute(2, 0, 1)[None].float() / 255.0
    y, params = _latents(model, x)
    y_hat, _ = _eval_pass(model, params, y)
    with torch.no_grad():
        ref = _to_uint8(model.g_s(y_hat))[top : top + 100, left : left + 150]
    assert decoded.shape == img.shape and np.array_equal(decoded, ref)


# ---------------------------------------------------------------------------------------------------------
# causality
# ---------------------------------------------------------------------------------------------------------

CAUSAL_STEPS = (2, 3, 4, 6, 7, 11)  # 3 and 6 start s2 and s3 (transfers)


@pytest.fixture(scope="module")
def causal_setup(kodak_dir):
    torch.manual_seed(0)
    model = hpcm.create_model(PHASE2).eval()
    _activate(model)
    y, params = _latents(model, _crop(kodak_dir, "kodim23", 64, 128))
    steps = S.step_map(model.M, *y.shape[-2:])[None]  # (1, M, h, w) step index per element
    return model, y, params, steps


@pytest.mark.parametrize("t", CAUSAL_STEPS)
def test_causality_perturbation(causal_setup, t):
    """Changing y where steps >= t code leaves steps <= t's sigma and mu bit-identical (and changes later)."""
    model, y, params, steps = causal_setup
    g = torch.Generator().manual_seed(t)
    delta = (3.0 + 4.0 * torch.rand(y.shape, generator=g)) * torch.sign(torch.randn(y.shape, generator=g))
    y_pert = torch.where(steps >= t, y + delta, y)
    _, ref = _eval_pass(model, params, y)
    y_hat, got = _eval_pass(model, params, y_pert)
    for s in range(1, t + 1):
        assert torch.equal(got.params[s][0], ref.params[s][0]), f"sigma of step {s}"
        assert torch.equal(got.params[s][1], ref.params[s][1]), f"mu of step {s}"
    if t < 11:  # control: the perturbation is seen by the step after t
        assert not torch.equal(got.params[t + 1][0], ref.params[t + 1][0])


def test_causality_gradient_in_training(causal_setup):
    """Training mode (STE): d(sigma_t, mu_t)/dy is exactly 0 where steps >= t code, non-zero before."""
    model, y0, params, steps = causal_setup
    model.train()
    try:
        y = y0.clone().requires_grad_(True)
        coder = RecordingCoder(training=True)
        model.context_pass(params, coder, y)
        g = torch.Generator().manual_seed(0)
        for t in CAUSAL_STEPS:
            sigma, mu = coder.params[t]
            loss = (torch.randn(sigma.shape, generator=g) * sigma).sum() + (
                torch.randn(mu.shape, generator=g) * mu).sum()
            (grad,) = torch.autograd.grad(loss, y, retain_graph=True)
            later = (steps >= t).expand_as(grad)
            assert torch.count_nonzero(grad[later]) == 0, f"step {t} depends on y coded at steps >= {t}"
            assert torch.count_nonzero(grad[~later]) > 0, f"step {t} sees no earlier step"
    finally:
        model.eval()


def test_every_bank_parameter_gets_a_gradient(kodak_dir):
    """With the step-1 write every bank (s1 included) is read, so no bank parameter is unused (DDP)."""
    model = hpcm.create_model(PHASE2).train()
    out = model(_crop(kodak_dir, h=64, w=128))
    (-out["likelihoods"]["y"].log().sum()).backward()
    missing = [n for n, p in model.memory.named_parameters() if p.grad is None]
    assert missing == []
    for s in ("s1", "s2", "s3"):  # the zero-initialised projection learns at every scale
        assert torch.count_nonzero(model.memory.banks[s].fusion_out.weight.grad) > 0


# ---------------------------------------------------------------------------------------------------------
# batch independence, identity at init
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["topk", "soft"])
def test_batch_independence_bitwise(kodak_dir, mode, memory_states):
    """An image alone and inside a batch of 2 gives bitwise the same sigma, mu, retrieval (eval)."""
    model = hpcm.create_model(PHASE2).eval()
    _activate(model)
    model.memory.mode = mode
    xa, xb = _crop(kodak_dir, "kodim23", 64, 128), _crop(kodak_dir, "kodim01", 64, 128)
    # context pass from per-image latents: the bank and the context model alone
    (ya, pa), (yb, pb) = _latents(model, xa), _latents(model, xb)
    states = memory_states(model.memory)
    alone = [_eval_pass(model, p, y)[1].params for y, p in ((ya, pa), (yb, pb))]
    _, both = _eval_pass(model, torch.cat((pa, pb)), torch.cat((ya, yb)))
    logs, both_log = [_read_log(states[0]), _read_log(states[1])], _read_log(states[2])
    for i in range(2):
        for t in range(1, 12):
            assert torch.equal(both.params[t][0][i : i + 1], alone[i][t][0])
            assert torch.equal(both.params[t][1][i : i + 1], alone[i][t][1])
        assert [r[1][i : i + 1].tolist() for r in both_log] == [r[1].tolist() for r in logs[i]]
    # the whole model: oneDNN may pick batch-dependent conv kernels in g_a / h_s, so use the plain ones
    with torch.no_grad(), torch.backends.mkldnn.flags(enabled=False):
        la = model(xa)["likelihoods"]["y"]
        lab = model(torch.cat((xa, xb)))["likelihoods"]["y"]
    assert torch.equal(lab[:1], la)


@pytest.mark.parametrize("name", TINY_MULTIREF)
def test_fresh_bank_is_plain_hpcm(name, kodak_dir, memory_states):
    """Zero-initialised fusion: a fresh multiref model equals the same weights without the bank, bitwise."""
    model = hpcm.create_model(name).eval()
    x = _crop(kodak_dir, "kodim07", 64, 128)
    states = memory_states(model.memory)
    with torch.no_grad():
        out = model(x)
        assert len(states) == 1 and len(states[0].read_log) > 0  # the bank really read and fused
        bank, model.memory = model.memory, None
        ref = model(x)
        model.memory = bank
    assert torch.equal(out["likelihoods"]["y"], ref["likelihoods"]["y"])
    assert torch.equal(out["likelihoods"]["z"], ref["likelihoods"]["z"])
    assert torch.equal(out["x_hat"], ref["x_hat"])
