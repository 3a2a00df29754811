"""Weights I/O: safetensors + JSON, official .pth.tar loading, fingerprints, deterministic presets."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from hpcm.errors import CheckpointError
from hpcm.models import io as mio
from hpcm.models.hpcm import OFFICIAL_TABLE_KEYS
from hpcm.models.registry import create_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """hpcm-tiny with its deterministic initial weights (the shipped trained weights hidden)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mio, "WEIGHTS_DIR", tmp_path_factory.mktemp("no-bundled-weights"))
        return mio.load_model("hpcm-tiny")


def official_state(model) -> dict[str, torch.Tensor]:
    """What a released checkpoint looks like: no adaptive params, empty entropy-table buffers."""
    state = {k: v.clone() for k, v in model.state_dict().items()
             if not k.startswith("adaptive_params_list.")}
    for key in OFFICIAL_TABLE_KEYS:
        state[key] = torch.empty(0)
    return state


def trained_like(seed: int = 1):
    """A tiny model with non-initial weights (adaptive params too)."""
    torch.manual_seed(seed)
    model = create_model("hpcm-tiny")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return model


def test_initial_weights_are_deterministic_and_leave_global_rng(tiny, no_bundled_weights):
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    again = mio.load_model("hpcm-tiny")
    after = torch.rand(1)
    assert torch.equal(before, after)  # loading did not consume the caller's random stream
    assert again.weights_info["fingerprint"] == tiny.weights_info["fingerprint"]
    assert again.weights_info["trained"] is False
    assert not again.training


def test_fingerprint_tracks_weights_not_tables(tiny):
    fp = mio.weights_fingerprint(tiny)
    tiny.update(force=True)
    assert mio.weights_fingerprint(tiny) == fp
    model = trained_like()
    assert mio.weights_fingerprint(model) != fp
    assert len(fp) == 16


def test_official_checkpoint_missing_adaptive_params_become_ones(tmp_path):
    src = trained_like(seed=2)
    path = tmp_path / "ckpt.pth.tar"
    torch.save(official_state(src), path)
    dst = trained_like(seed=3)
    mio.load_official_checkpoint(dst, path)
    for key, value in official_state(src).items():
        if key not in OFFICIAL_TABLE_KEYS:
            assert torch.equal(dst.state_dict()[key], value), key
    for p in dst.adaptive_params_list:
        assert torch.equal(p, torch.ones_like(p))


def test_official_checkpoint_nested_and_dataparallel(tmp_path):
    src = trained_like(seed=4)
    state = {"module." + k: v for k, v in src.state_dict().items()}
    path = tmp_path / "nested.pth.tar"
    torch.save({"epoch": 3, "state_dict": state, "loss": 0.5}, path)
    dst = create_model("hpcm-tiny")
    mio.load_official_checkpoint(dst, path)
    assert mio.weights_fingerprint(dst) == mio.weights_fingerprint(src)  # adaptive params present: kept


def test_official_checkpoint_wrong_keys(tmp_path):
    src = trained_like()
    state = official_state(src)
    state["g_a.extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "extra.pth.tar")
    with pytest.raises(CheckpointError, match="unexpected key"):
        mio.load_official_checkpoint(create_model("hpcm-tiny"), tmp_path / "extra.pth.tar")

    state = official_state(src)
    del state["g_s.branch.0.weight"]
    torch.save(state, tmp_path / "missing.pth.tar")
    with pytest.raises(CheckpointError, match="missing key"):
        mio.load_official_checkpoint(create_model("hpcm-tiny"), tmp_path / "missing.pth.tar")

    state = official_state(src)
    state["means_hyper"] = torch.zeros(1, 3, 1, 1)
    torch.save(state, tmp_path / "shape.pth.tar")
    with pytest.raises(CheckpointError, match="shape mismatch"):
        mio.load_official_checkpoint(create_model("hpcm-tiny"), tmp_path / "shape.pth.tar")


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_official_checkpoint_never_unpickles_objects(tmp_path, capsys):
    path = tmp_path / "evil.pth.tar"
    with open(path, "wb") as fh:
        pickle.dump({"x": _Evil()}, fh)
    with pytest.raises(CheckpointError):
        mio.load_official_checkpoint(create_model("hpcm-tiny"), path)
    torch.save({"state_dict": {"means_hyper": _Evil()}}, tmp_path / "evil2.pth.tar")
    with pytest.raises(CheckpointError):
        mio.load_official_checkpoint(create_model("hpcm-tiny"), tmp_path / "evil2.pth.tar")
    assert "must never run" not in capsys.readouterr().out
    (tmp_path / "junk.pth.tar").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="cannot load"):
        mio.load_official_checkpoint(create_model("hpcm-tiny"), tmp_path / "junk.pth.tar")


def test_load_model_from_official_checkpoint(tmp_path):
    src = trained_like(seed=5)
    path = tmp_path / "q3.pth.tar"
    torch.save(official_state(src), path)
    model = mio.load_model(path, preset="hpcm-tiny", quality=3)
    assert model.weights_info["trained"] is True and model.weights_info["preset"] == "hpcm-tiny"
    assert model.weights_info["quality"] == 3
    assert torch.equal(model.g_a.branch[0].weight, src.g_a.branch[0].weight)


def test_save_and_load_safetensors(tmp_path):
    src = trained_like(seed=6)
    src.weights_info = {"preset": "hpcm-tiny", "quality": 2}
    path = mio.save_weights(src, tmp_path / "w.safetensors", {"lambda": 0.0035, "metric": "mse",
                                                              "training": {"steps": 10}})
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["preset"] == "hpcm-tiny" and meta["quality"] == 2 and meta["lambda"] == 0.0035
    assert meta["config"]["M"] == 64 and meta["fingerprint"] == mio.weights_fingerprint(src)
    model = mio.load_model(path)
    assert model.weights_info["fingerprint"] == meta["fingerprint"]
    assert model.weights_info["quality"] == 2 and model.weights_info["trained"] is True
    # the metadata embedded in the .safetensors header is enough without the sidecar
    path.with_suffix(".json").unlink()
    assert mio.load_model(path).weights_info["fingerprint"] == meta["fingerprint"]
    with pytest.raises(CheckpointError, match="quality 2, not 5"):
        mio.load_model(path, quality=5)


def test_half_storage_halves_the_file_and_loads_as_float32(tmp_path):
    src = trained_like(seed=8)
    src.weights_info = {"preset": "hpcm-tiny", "quality": 3}
    full = mio.save_weights(src, tmp_path / "full.safetensors", {})
    half = mio.save_weights(src, tmp_path / "half.safetensors", {}, half=True)
    assert half.stat().st_size < 0.56 * full.stat().st_size
    meta = json.loads(half.with_suffix(".json").read_text())
    assert meta["storage"] == "float16"
    model = mio.load_model(half)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert meta["fingerprint"] == model.weights_info["fingerprint"] == mio.weights_fingerprint(model)
    assert meta["fingerprint"] != mio.weights_fingerprint(src)  # the conv weights were rounded ...
    src_state, state = src.state_dict(), model.state_dict()
    for key, value in state.items():
        if value.dim() == 4:
            assert torch.allclose(value, src_state[key], rtol=1e-3, atol=1e-7), key
        elif value.is_floating_point():
            assert torch.equal(value, src_state[key]), key  # ... nothing else was (bounds, gains, biases)
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = src.eval()(x, training=False)["x_hat"], model(x, training=False)["x_hat"]
    assert (a - b).abs().max() < 1e-2


def test_half_storage_covers_the_linear_weights_of_rwkv_presets(tmp_path):
    from safetensors import safe_open

    from hpcm.models.registry import create_model

    torch.manual_seed(0)
    src = create_model("hpcm-phase2-tiny").eval()
    full = mio.save_weights(src, tmp_path / "full.safetensors", {})
    half = mio.save_weights(src, tmp_path / "half.safetensors", {}, half=True)
    assert half.stat().st_size < 0.56 * full.stat().st_size
    with safe_open(str(half), "pt") as f:
        dtypes = {k: f.get_slice(k).get_dtype() for k in f.keys()}
        shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}
    linear = [k for k, s in shapes.items() if len(s) == 2 and k.endswith(".weight")]
    assert linear and all(dtypes[k] == "F16" for k in linear)
    assert all(dtypes[k] == "F32" for k, s in shapes.items() if len(s) == 1 and dtypes[k] != "I32")
    model = mio.load_model(half)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    meta = json.loads(half.with_suffix(".json").read_text())
    assert model.weights_info["fingerprint"] == meta["fingerprint"]


def test_safetensors_with_altered_tensors_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    src = trained_like(seed=7)
    path = mio.save_weights(src, tmp_path / "w.safetensors", {})
    state = load_file(str(path))
    state["means_hyper"] = state["means_hyper"] + 1
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match="fingerprint"):
        mio.load_model(path)


def test_load_model_errors(tmp_path):
    with pytest.raises(CheckpointError, match="unknown model"):
        mio.load_model("hpcm-nope")
    with pytest.raises(CheckpointError, match="no such file"):
        mio.load_model(tmp_path / "x.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(CheckpointError):
        mio.load_model(tmp_path / "bad.safetensors")


def test_bundled_weights_are_used_when_present(tmp_path, monkeypatch):
    monkeypatch.setattr(mio, "WEIGHTS_DIR", tmp_path)
    src = trained_like(seed=8)
    src.weights_info = {"preset": "hpcm-tiny", "quality": 3}
    mio.save_weights(src, mio.bundled_weights_path("hpcm-tiny", 3), {"lambda": 0.0067})
    assert mio.bundled_qualities("hpcm-tiny") == [3]
    model = mio.load_model("hpcm-tiny")  # default quality 3
    assert model.weights_info["trained"] is True
    assert model.weights_info["fingerprint"] == mio.weights_fingerprint(src)
    assert model.weights_info["source"] == "bundled:hpcm-tiny-q3"
    with pytest.raises(CheckpointError, match="shipped: 3"):
        mio.load_model("hpcm-tiny", quality=5)
