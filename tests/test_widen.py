"""Function-preserving widening (hpcm.models.widen, ``hpcm widen``)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from hpcm.models.registry import create_model, get_config
from hpcm.models.widen import widen
from hpcm.train.loss import RateDistortionLoss


def _bits(out: dict) -> float:
    return float(sum(-torch.log2(v).sum() for v in out["likelihoods"].values()))


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    narrow = create_model("hpcm-tiny-vr").eval()
    with torch.no_grad():  # distinct per-channel gains, as after training
        narrow.quality_gains.log_gain.add_(0.1 * torch.randn_like(narrow.quality_gains.log_gain))
    # M 64 -> 80 (groups of 8 -> 10), g 32/64/96 -> 48/96/128 (old pass-through channels enter the
    # partial convolutions' range)
    cfg = replace(get_config("hpcm-tiny-vr"), M=80, g_channels=(48, 96, 128))
    return narrow, widen(narrow, cfg, seed=1).eval()


@pytest.mark.parametrize("quality", [1.0, 5.5, 8.0])
def test_widened_model_computes_the_same_function(pair, quality):
    narrow, wide = pair
    assert wide.M == 80
    assert sum(p.numel() for p in wide.parameters()) > sum(p.numel() for p in narrow.parameters())
    x = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a, b = narrow(x, training=False, quality=quality), wide(x, training=False, quality=quality)
    assert torch.allclose(a["x_hat"], b["x_hat"], atol=1e-5, rtol=0)
    # the new latent channels are 0, coded at the smallest scale: almost no bits
    assert _bits(b) == pytest.approx(_bits(a), rel=1e-3)


def test_widened_model_codes_exactly_and_reconstructs_like_the_narrow_one(pair):
    narrow, wide = pair
    x = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(3))
    enc = wide.compress(x, quality=4.0)
    dec = wide.decompress(enc["strings"], enc["shape"], quality=4.0)["x_hat"]
    ref = narrow.decompress(*(lambda e: (e["strings"], e["shape"]))(narrow.compress(x, quality=4.0)),
                            quality=4.0)["x_hat"]
    assert (dec - ref).abs().max() <= 1 / 255


def test_new_channels_receive_gradients(pair):
    _, wide = pair
    wide = wide.train()
    wide.zero_grad()
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(4))
    out = wide(x, quality=torch.tensor([2.0, 7.0]))
    loss = RateDistortionLoss(0.01)(out, x)["loss"]
    loss.backward()
    last = wide.g_a.branch[-1]
    new_rows = torch.ones(80, dtype=torch.bool)
    new_rows[torch.arange(64) // 8 * 10 + torch.arange(64) % 8] = False
    assert last.weight.grad[new_rows].abs().sum() > 0  # y's new channels start learning at once
    wide.eval()


def test_widen_refuses_what_it_cannot_preserve():
    narrow = create_model("hpcm-tiny-vr")
    with pytest.raises(ValueError, match="only M and g_channels"):
        widen(narrow, replace(get_config("hpcm-tiny-vr"), N=96))
    with pytest.raises(ValueError, match="at least as wide"):
        widen(narrow, replace(get_config("hpcm-tiny-vr"), M=56))
    with pytest.raises(ValueError, match="kind 'rwkv'"):
        widen(create_model("hpcm-phase1-tiny"), replace(get_config("hpcm-phase1-tiny"), M=80))


def test_cli_widens_the_shipped_default(tmp_path, capsys):
    from hpcm.cli.main import main
    from hpcm.models.io import load_model, read_weights_metadata

    out = tmp_path / "small.safetensors"
    assert main(["widen", "hpcm-tiny-vr", "--model", "hpcm-small-vr", "-o", str(out)]) == 0
    meta = read_weights_metadata(out)
    assert meta["preset"] == "hpcm-small-vr" and meta["widened_from"]["preset"] == "hpcm-tiny-vr"
    narrow, wide = load_model("hpcm-tiny-vr"), load_model(out)
    assert wide.M == 192
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        a, b = narrow(x, training=False, quality=8.0), wide(x, training=False, quality=8.0)
    assert torch.allclose(a["x_hat"], b["x_hat"], atol=1e-5, rtol=0)
    assert main(["widen", "hpcm-tiny-vr", "--model", "hpcm-small-vr", "-o", str(out)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["widen", "hpcm-tiny-vr", "--model", "hpcm-tiny", "-o", str(tmp_path / "x.safetensors")]) == 1
    assert "cannot widen" in capsys.readouterr().err


def test_cli_widens_to_a_model_factory(tmp_path, monkeypatch, capsys):
    """``--model package.module:factory``, as ``hpcm train --model`` takes it (the GPU width probe's arms)."""
    from hpcm.cli.main import main
    from hpcm.models.io import load_model
    from hpcm.train.trainer import build_model, load_source_state

    (tmp_path / "probe_arms.py").write_text(
        "from dataclasses import replace\n"
        "from hpcm.models.hpcm import HPCM\n"
        "from hpcm.models.registry import hpcm_tiny_vr\n\n\n"
        "def wide_g():\n"
        "    return HPCM(replace(hpcm_tiny_vr(), g_channels=(32, 64, 128)))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "wide.safetensors"
    assert main(["widen", "hpcm-tiny-vr", "--model", "probe_arms:wide_g", "-o", str(out)]) == 0, \
        capsys.readouterr().err
    wide = build_model("probe_arms:wide_g")
    wide.load_state_dict(load_source_state(out))
    narrow = load_model("hpcm-tiny-vr")
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        a, b = narrow(x, training=False, quality=8.0), wide.eval()(x, training=False, quality=8.0)
    assert torch.allclose(a["x_hat"], b["x_hat"], atol=1e-5, rtol=0) and _bits(a) == pytest.approx(_bits(b))
    missing = ["widen", "hpcm-tiny-vr", "--model", "probe_arms:nothing", "-o",
               str(tmp_path / "y.safetensors")]
    assert main(missing) == 1
    assert "cannot import model factory" in capsys.readouterr().err
