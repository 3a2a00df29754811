"""Variable-rate models: quality gains, per-crop λ training, fractional-quality coding."""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import pytest
import torch
from PIL import Image

from hpcm.layers.gain import QualityGains
from hpcm.models.registry import VR_LAMBDAS, create_model
from hpcm.train.config import ConfigError, TrainConfig
from hpcm.train.loss import RateDistortionLoss
from hpcm.train.trainer import split_holdout, train


def test_gains_interpolate_between_anchors():
    g = QualityGains((0.01, 0.02, 0.08), channels=4)
    with torch.no_grad():
        g.log_gain.copy_(torch.arange(12.0).view(3, 4))
    gain, inv = g.gains(torch.tensor([1.0, 2.0, 3.0, 2.5]))
    assert gain.shape == (4, 4, 1, 1)
    assert torch.allclose(gain[:3, :, 0, 0].log(), g.log_gain.detach(), atol=1e-6)
    assert torch.allclose(gain[3, :, 0, 0].log(), g.log_gain[1:].detach().mean(0), atol=1e-6)
    lam = g.lmbda(torch.tensor([1.0, 1.5, 3.0]))
    assert lam[0].item() == pytest.approx(0.01) and lam[2].item() == pytest.approx(0.08)
    assert lam[1].item() == pytest.approx(math.sqrt(0.01 * 0.02), rel=1e-5)
    # initial gains scale the step like 1/sqrt(λ) and invert each other
    h = QualityGains((0.01, 0.04), channels=2)
    gain, inv = h.gains(torch.tensor([1.0, 2.0]))
    assert (gain[1] / gain[0]).flatten().tolist() == pytest.approx([2.0, 2.0], rel=1e-5)
    assert torch.allclose(gain * inv, torch.ones_like(gain))
    assert g.check_quality(2) == 2.0
    for bad in (0.5, 3.5, float("nan")):
        with pytest.raises(ValueError, match="quality must be in 1..3"):
            g.check_quality(bad)
    with pytest.raises(ValueError, match="increasing"):
        QualityGains((0.02, 0.01), 4)


def test_fixed_and_variable_rate_quality_arguments():
    x = torch.rand(1, 3, 64, 64)
    fixed = create_model("hpcm-tiny").eval()
    with pytest.raises(ValueError, match="fixed rate"):
        fixed(x, quality=2.0)
    vr = create_model("hpcm-tiny-vr").eval()
    assert vr.variable_rate and not fixed.variable_rate
    assert vr.config.rate_lambdas == VR_LAMBDAS
    with pytest.raises(ValueError, match="give a quality"):
        vr(x)
    with pytest.raises(ValueError, match="quality must be in"):
        vr(x, quality=9.0)


@pytest.mark.parametrize("quality", [1.0, 3.37, 8.0])
def test_variable_rate_roundtrip_is_exact(quality):
    torch.manual_seed(0)
    model = create_model("hpcm-tiny-vr").eval()
    with torch.no_grad():  # distinct per-channel gains, so a wrong quality would show
        model.quality_gains.log_gain.add_(0.1 * torch.randn_like(model.quality_gains.log_gain))
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        ref = model(x, training=False, quality=quality)["x_hat"].clamp(0, 1)
    enc = model.compress(x, quality=quality)
    dec = model.decompress(enc["strings"], enc["shape"], quality=quality)["x_hat"]
    assert torch.equal(dec, ref)
    other_q = 9.0 - quality if quality != 4.5 else 1.0
    other = model.decompress(enc["strings"], enc["shape"], quality=other_q)["x_hat"]
    assert not torch.equal(other, ref)


def test_higher_quality_spends_more_bits(shared_dir):
    from hpcm.codec.image_io import read_image
    from hpcm.models.io import load_model

    model = create_model("hpcm-tiny-vr").eval()  # fixed-rate trained weights + the initial gains
    model.load_state_dict(load_model("hpcm-tiny", quality=3).state_dict(), strict=False)
    image = read_image(shared_dir / "data" / "kodak" / "kodim23.png")[:128, :128]
    x = torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() / 255
    sizes = [len(model.compress(x, quality=q)["strings"][0]) for q in (1.0, 4.0, 8.0)]
    assert sizes[0] < sizes[1] < sizes[2], sizes


def test_per_image_lambda_loss():
    torch.manual_seed(2)
    x = torch.rand(2, 3, 16, 16)
    x_hat = x + 0.05 * torch.randn_like(x)
    lik = {"y": torch.rand(2, 4, 2, 2) * 0.9 + 0.05, "z": torch.rand(2, 2, 1, 1) * 0.9 + 0.05}
    out = {"x_hat": x_hat, "likelihoods": lik}
    fixed = RateDistortionLoss(0.01)(out, x)
    same = RateDistortionLoss(None)(out, x, lmbda=torch.tensor([0.01, 0.01]))
    assert same["loss"].item() == pytest.approx(fixed["loss"].item(), rel=1e-6)
    mixed = RateDistortionLoss(None)(out, x, lmbda=torch.tensor([0.01, 0.1]))
    mse = ((x_hat - x) ** 2).mean(dim=(1, 2, 3))
    rate = sum(torch.log(v).reshape(2, -1).sum(1) for v in lik.values()) / (-math.log(2) * 256)
    expect = ((torch.tensor([0.01, 0.1]) * 255**2 * mse + rate).mean()).item()
    assert mixed["loss"].item() == pytest.approx(expect, rel=1e-5)
    with pytest.raises(ValueError, match="per image"):
        RateDistortionLoss(None)(out, x)


def test_split_holdout_is_deterministic_and_disjoint():
    paths = [Path(f"img{i:03d}.png") for i in range(50)]
    train_paths, held = split_holdout(paths, 5)
    assert len(held) == 5 and len(train_paths) == 45 and not set(held) & set(train_paths)
    assert split_holdout(paths, 5) == (train_paths, held)
    assert held[0] != paths[0] and held[-1] != paths[-1]  # spread over the list, not a prefix
    assert split_holdout(paths, 0) == (paths, [])
    with pytest.raises(ConfigError, match="no training images"):
        split_holdout(paths, 50)


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory, shared_dir) -> Path:
    root = tmp_path_factory.mktemp("vr-data")
    src = shared_dir / "data" / "train" / "bsds500" / "test"
    for name in ("384022.jpg", "112090.jpg", "48017.jpg", "100007.jpg"):
        with Image.open(src / name) as im:  # small copies keep the validation fast
            im.convert("RGB").resize((128, 96)).save(root / name.replace(".jpg", ".png"))
    return root


def _cfg(train_dir: Path, out: Path, **kw) -> TrainConfig:
    base = dict(model="hpcm-tiny-vr", data=[str(train_dir)], out=str(out), steps=4, batch_size=2,
                patch_size=64, num_workers=0, log_every=1, val_every=2, save_every=1000, val_holdout=1,
                progress=False, device="cpu")
    base.update(kw)
    return TrainConfig.from_dict(base)


def test_variable_rate_training_resumes_exactly(train_dir, tmp_path):
    res = train(_cfg(train_dir, tmp_path / "a"))
    assert res.step == 4
    assert {f"q{k}/psnr" for k in range(1, 9)} <= set(res.last_val) and res.last_val["images"] == 1
    meta = json.loads((tmp_path / "a" / "checkpoint_last.json").read_text())
    assert meta["lmbda"] is None and meta["rate_lambdas"] == pytest.approx(list(VR_LAMBDAS))

    def stop_at_2(step, _):
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    assert train(_cfg(train_dir, tmp_path / "b"), on_step=stop_at_2).interrupted
    train(_cfg(train_dir, tmp_path / "b", resume=True))
    la = [json.loads(s) for s in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(s) for s in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    key = [(e["split"], e["step"], e["loss"]) for e in la]
    assert key == [(e["split"], e["step"], e["loss"]) for e in lb]


def test_variable_rate_config_errors(train_dir, tmp_path):
    with pytest.raises(ConfigError, match="variable-rate"):
        train(_cfg(train_dir, tmp_path / "c", lmbda=0.01))
    with pytest.raises(ConfigError, match="not a variable-rate model"):
        train(_cfg(train_dir, tmp_path / "d", model="hpcm-tiny"))
    with pytest.raises(ConfigError, match="1..8 for hpcm-tiny-vr"):
        train(_cfg(train_dir, tmp_path / "f", quality=9, steps=2))
    with pytest.raises(ConfigError, match="quality must be 1..6"):  # fixed-rate: HPCM's λ table
        train(_cfg(train_dir, tmp_path / "g", model="hpcm-tiny", quality=7, steps=2))
    # one quality of a variable-rate model, also above HPCM's six λ (the model's own anchors)
    one = train(_cfg(train_dir, tmp_path / "e", quality=7, steps=2))
    terms = ("bpp", "bpp_y", "bpp_z", "loss", "mse", "psnr")
    assert {k for k in one.last_val if k.startswith("q")} == {"q7/" + k for k in terms}


def test_codec_api_and_cli_code_the_chosen_quality(shared_dir, tmp_path, capsys):
    from hpcm.cli.main import main
    from hpcm.codec.api import coding_quality, decode, encode
    from hpcm.codec.image_io import read_image
    from hpcm.errors import HPCMError
    from hpcm.models.io import load_model

    image = read_image(shared_dir / "data" / "kodak" / "kodim23.png")[200:270, 300:390]
    model = load_model("hpcm-tiny-vr")
    assert coding_quality(model, None) == 3.0 and coding_quality(model, 2.004) == 2.0
    with pytest.raises(HPCMError, match="quality must be in 1..8"):
        coding_quality(model, 8.5)
    low, high = (encode(model, image, quality=q, verify=True) for q in (1, 8))
    assert low[1].quality == 1 and high[1].quality == 8
    for data, header, _ in (low, high):
        decoded, again, _ = decode(data, model)
        assert decoded.shape == image.shape and again.quality == header.quality
    data, header, _ = encode(model, image, quality=2.57)  # format v2 keeps fractional qualities
    decoded, again, _ = decode(data, model)
    assert header.quality == again.quality == 2.57 and decoded.shape == image.shape
    fixed = load_model("hpcm-tiny", quality=3)
    assert coding_quality(fixed, None) is None and coding_quality(fixed, 3) is None
    with pytest.raises(HPCMError, match="quality 3 only"):
        encode(fixed, image, quality=4)
    # CLI: the quality goes to the encoder, the decoder takes it from the header
    src = tmp_path / "crop.png"
    from PIL import Image as PILImage

    PILImage.fromarray(image).save(src)
    for q in ("2", "7.5"):
        out = tmp_path / f"q{q}.hpcm"
        assert main(["compress", str(src), "-o", str(out), "--model", "hpcm-tiny-vr", "--quality", q]) == 0
        assert main(["decompress", str(out), "-o", str(tmp_path / f"q{q}.png")]) == 0
    sizes = [(tmp_path / f"q{q}.hpcm").stat().st_size for q in ("2", "7.5")]
    assert sizes[0] < sizes[1]
    capsys.readouterr()
    assert main(["compress", str(src), "-o", str(tmp_path / "x.hpcm"), "--model", "hpcm-tiny",
                 "--quality", "2.5"]) == 1
    assert "variable-rate" in capsys.readouterr().err


def test_eval_codes_fractional_qualities_of_a_variable_rate_model(shared_dir, tmp_path):
    from hpcm.errors import HPCMError
    from hpcm.eval.runner import evaluate

    data = tmp_path / "set"
    data.mkdir()
    with Image.open(shared_dir / "data" / "kodak" / "kodim23.png") as im:
        im.convert("RGB").crop((300, 200, 364, 264)).save(data / "crop.png")
    doc = evaluate(["hpcm-tiny-vr"], data, qualities=[1, 8], show_progress=False)
    assert doc["quality"] == [1, 8]
    assert doc["results"]["bpp"][0] < doc["results"]["bpp"][1]
    est = evaluate(["hpcm-tiny-vr"], data, qualities=[2.5], estimate=True, show_progress=False)
    assert est["quality"] == [2.5]
    with pytest.raises(HPCMError, match="variable-rate"):
        evaluate(["hpcm-tiny"], data, qualities=[2.5], show_progress=False)


def test_export_records_provenance(train_dir, tmp_path):
    from hpcm.cli.main import main

    train(_cfg(train_dir, tmp_path / "run", steps=2, val_holdout=0))
    out = tmp_path / "vr.safetensors"
    assert main(["export", str(tmp_path / "run" / "checkpoint_last.safetensors"), "-o", str(out)]) == 0
    training = json.loads(out.with_suffix(".json").read_text())["training"]
    assert training["crops_seen"] == 4 and training["train_seconds"] > 0 and "cores" in training["machine"]
    assert training["rate_lambdas"] == pytest.approx(list(VR_LAMBDAS))
    assert training["checkpoint"] == "run/checkpoint_last.safetensors"  # no absolute path of this machine
    from hpcm.models.io import load_model

    assert load_model(str(out)).variable_rate
    half = tmp_path / "vr-half.safetensors"
    ckpt = str(tmp_path / "run" / "checkpoint_last.safetensors")
    assert main(["export", ckpt, "-o", str(half), "--half"]) == 0
    assert half.stat().st_size < 0.6 * out.stat().st_size and load_model(str(half)).variable_rate
