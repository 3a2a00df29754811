"""hpcm-tiny: forward shapes, odd grids, training gradients, attention padding, exact encode/decode."""

from __future__ import annotations

import json
import math

import pytest
import torch

from hpcm.layers.attention import CrossAttentionCell
from hpcm.models import schedule as S
from hpcm.models.config import HPCMConfig
from hpcm.models.hpcm import HPCM, LikelihoodCoder
from hpcm.models.reference_weights import apply_reference_weights
from hpcm.models.registry import create_model, get_config, list_models


@pytest.fixture(scope="module")
def tiny() -> HPCM:
    torch.manual_seed(0)
    model = create_model("hpcm-tiny").eval()
    apply_reference_weights(model, factor=0.9)  # active enough to give many non-zero symbols
    return model


@pytest.mark.parametrize("hw", [(64, 64), (128, 192), (192, 64)])
def test_forward_shapes_eval(tiny, hw):
    x = torch.rand(2, 3, *hw)
    with torch.no_grad():
        out = tiny(x)
    h, w = hw
    assert out["x_hat"].shape == (2, 3, h, w)
    assert out["likelihoods"]["y"].shape == (2, tiny.M, h // 16, w // 16)
    assert out["likelihoods"]["z"].shape == (2, tiny.N, h // 64, w // 64)
    for lik in out["likelihoods"].values():
        assert torch.isfinite(lik).all() and (lik > 0).all() and (lik <= 1).all()


def test_batch_items_are_independent(tiny):
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        both = tiny(x)
        one = tiny(x[1:])
    assert torch.allclose(both["x_hat"][1:], one["x_hat"], atol=1e-5)
    assert torch.allclose(both["likelihoods"]["y"][1:], one["likelihoods"]["y"], rtol=1e-4, atol=1e-7)


def test_rejects_sizes_not_multiple(tiny):
    assert tiny.size_multiple == 64
    with pytest.raises(ValueError):
        tiny(torch.rand(1, 3, 64, 96))


def test_training_forward_backward():
    torch.manual_seed(1)
    model = create_model("hpcm-tiny").train()
    x = torch.rand(2, 3, 64, 128)
    out = model(x)
    n = x.shape[0] * x.shape[2] * x.shape[3]
    bpp = sum(torch.log(v).sum() for v in out["likelihoods"].values()) / (-math.log(2) * n)
    loss = 0.01 * 255**2 * torch.mean((out["x_hat"] - x) ** 2) + bpp
    loss.backward()
    grads = {k: p.grad for k, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for k, g in grads.items()), [
        k for k, g in grads.items() if g is None
    ]
    # the context model and every adaptor / adaptive param are reached by the rate gradient
    reached = ("y_spatial_prior_adaptor_list_s3.5.weight", "attn_s1.conv_k.weight", "adaptive_params_list.9")
    for key in reached:
        assert grads[key].abs().sum() > 0, key


def test_training_flag_overrides_mode(tiny):
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        a = tiny(x, training=False)["likelihoods"]["y"]
        b = tiny(x, training=False)["likelihoods"]["y"]
        c = tiny(x, training=True)["likelihoods"]["y"]
    assert torch.equal(a, b) and not torch.equal(a, c)


def _reference_window_attention(cell: CrossAttentionCell, psi: torch.Tensor, prev: torch.Tensor):
    """Loop over windows; each window uses only its real positions (the definition of the padding)."""
    q, k, v = cell.conv_q(psi), cell.conv_k(prev), cell.conv_v(prev)
    b, c, h, w = q.shape
    ws, nh, d = cell.window_size, cell.num_heads, cell.head_dim
    out = torch.zeros_like(q)
    for r0 in range(0, h, ws):
        for c0 in range(0, w, ws):
            sl = (slice(None), slice(None), slice(r0, r0 + ws), slice(c0, c0 + ws))
            qw, kw, vw = (t[sl] for t in (q, k, v))
            hh, ww = qw.shape[-2:]
            qh, kh, vh = (t.reshape(b, nh, d, hh * ww) for t in (qw, kw, vw))
            att = torch.softmax(qh.transpose(-1, -2) @ kh / math.sqrt(d), dim=-1)  # (b, nh, T, T)
            o = (att @ vh.transpose(-1, -2)).transpose(-1, -2)
            out[sl] = o.reshape(b, c, hh, ww)
    return out + cell.conv_out(psi)


@pytest.mark.parametrize("hw", [(8, 8), (16, 8), (5, 7), (12, 9), (3, 3)])
def test_cross_attention_matches_window_loop(hw):
    torch.manual_seed(0)
    cell = CrossAttentionCell(32, 32, window_size=4, num_heads=4).double()
    psi = torch.randn(2, 32, *hw, dtype=torch.float64)
    prev = torch.randn(2, 32, *hw, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(cell(psi, prev), _reference_window_attention(cell, psi, prev), atol=1e-12)


def _eval_y_hat(model: HPCM, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        y = model.g_a(x)
        z_hat = torch.round(model.h_a(y) - model.means_hyper) + model.means_hyper
        return y, model.context_pass(model.h_s(z_hat), LikelihoodCoder(False), y)


@pytest.mark.parametrize("hw", [(128, 192), (64, 64)])
def test_decoded_y_hat_equals_eval_forward(tiny, hw):
    torch.manual_seed(3)
    x = torch.rand(1, 3, *hw)
    y, y_hat = _eval_y_hat(tiny, x)
    assert int((torch.round(y - y_hat) != 0).sum()) == 0  # ŷ = round(y - μ) + μ
    enc = tiny.compress(x)
    assert enc["shape"] == (hw[0] // 64, hw[1] // 64)
    assert all(isinstance(s, bytes) and s for s in enc["strings"])
    decoded = tiny.decompress_latent(enc["strings"], enc["shape"])
    assert torch.equal(decoded, y_hat)
    # non-trivial: many coded z symbols and a non-trivial y stream
    with torch.no_grad():
        z_sym = torch.round(tiny.h_a(y) - tiny.means_hyper)
    assert int((z_sym != 0).sum()) > 0
    assert len(enc["strings"][0]) > 100
    with torch.no_grad():
        x_hat = tiny(x)["x_hat"].clamp(0, 1)
    assert torch.equal(tiny.decompress(enc["strings"], enc["shape"])["x_hat"], x_hat)


def test_decoder_never_needs_y(tiny):
    x = torch.rand(1, 3, 64, 128)
    enc = tiny.compress(x)
    def fail(*args):
        raise AssertionError("the decoder ran g_a")

    handle = tiny.g_a.register_forward_hook(fail)
    try:
        tiny.decompress(enc["strings"], enc["shape"])
    finally:
        handle.remove()


def test_memory_seam_called_after_every_cell_update():
    class Recorder(torch.nn.Module):
        """A ContextMemory whose per-pass state is the list of the steps it saw."""

        def __init__(self) -> None:
            super().__init__()
            self.states: list[list[int]] = []

        def new_state(self) -> list[int]:
            self.states.append([])
            return self.states[-1]

        def write_initial(self, state: list[int], step: S.Step, C: torch.Tensor) -> None:
            state.append(step.index)

        def forward(self, state: list[int], step: S.Step, C: torch.Tensor) -> torch.Tensor:
            state.append(step.index)
            return C

    model = create_model("hpcm-tiny").eval()
    model.memory = Recorder()
    with torch.no_grad():
        model(torch.rand(1, 3, 64, 64))
        model(torch.rand(1, 3, 64, 64))
    # one state per pass: step 1's write, then steps 2..10 (step 11 updates no context: nothing would read it)
    assert model.memory.states == [list(range(1, 11))] * 2


def test_config_roundtrip_and_registry():
    assert {"hpcm-base", "hpcm-large", "hpcm-tiny"} <= set(list_models())
    for name in ("hpcm-base", "hpcm-large", "hpcm-tiny"):
        cfg = get_config(name)
        assert HPCMConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    large = get_config("hpcm-large")
    assert large.g_depths == (2, 2, 8)
    assert large.prior_s12.depths == (2, 2) and large.prior_s3.depths == (4, 3)
    over = get_config("hpcm-tiny", M=32, g_depths=[1, 1, 1])
    assert over.M == 32 and over.g_depths == (1, 1, 1)
    with pytest.raises(ValueError):
        get_config("hpcm-tiny", not_a_field=1)
    with pytest.raises(ValueError):
        HPCMConfig(M=36)
    with pytest.raises(KeyError):
        create_model("no-such-model")


def test_training_after_inference_mode_coding():
    """Index/mask caches filled under inference_mode must not break a later training step."""
    model = create_model("hpcm-tiny")
    x = torch.rand(1, 3, 64, 128)
    S._TENSOR_CACHE.clear()
    with torch.inference_mode():
        model.eval()(x)
    model.train()
    out = model(x)
    out["x_hat"].mean().backward()
    assert model.g_a.branch[0].weight.grad is not None


def test_transforms_run_channels_last_and_return_the_models_layout(tiny):
    """g_a / g_s run their convolutions in channels-last layout (faster with oneDNN) and return contiguous
    tensors (channels-last only for a model converted to it), whatever the input's strides: the encoder's
    h_a / h_s / step loop then compute in the decoder's layout. g_s's "contiguous" layout is the plain
    module call, bit for bit (older files' checksums)."""
    import copy

    from hpcm.layers.conv import run_in_layout

    torch.manual_seed(1)
    y = torch.randn(1, tiny.M, 4, 6)
    with torch.no_grad():
        plain = tiny.g_s.branch(y)
        assert torch.equal(tiny.g_s(y, "contiguous"), plain)
        fast = tiny.g_s(y)
        assert fast.is_contiguous() and torch.allclose(fast, plain, rtol=1e-5, atol=1e-5)
        out = tiny.g_s(y.contiguous(memory_format=torch.channels_last))
        assert out.is_contiguous() and torch.equal(out, fast)
        x = torch.rand(1, 64, 96, 3).permute(0, 3, 1, 2)  # an HWC image: channels-last strides
        y_a = tiny.g_a(x)
        assert y_a.is_contiguous() and torch.equal(y_a, tiny.g_a(x.contiguous()))
        # the codec's image tensor: HWC permuted, then unsqueezed (channels-last with a batch stride of 3)
        x_api = torch.rand(64, 96, 3).permute(2, 0, 1).unsqueeze(0)
        assert torch.equal(tiny.g_a(x_api), tiny.g_a(x_api.clone(memory_format=torch.channels_last)))
        converted = copy.deepcopy(tiny.g_a).to(memory_format=torch.channels_last)
        y_c = converted(x)
        assert y_c.is_contiguous(memory_format=torch.channels_last) and not y_c.is_contiguous()
    with pytest.raises(ValueError, match="unknown memory layout"):
        run_in_layout(tiny.g_s.branch, y, "nhwc")
