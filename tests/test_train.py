"""Tests of hpcm train: data stream, loss, config, a short real run, exact resume, export, errors."""

from __future__ import annotations

import json
import math
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from hpcm.cli.main import main as cli_main
from hpcm.train.config import ConfigError, TrainConfig, dumps_toml, load_toml
from hpcm.train.data import (
    DataError,
    PatchDataset,
    StepBatchSampler,
    ValidationImages,
    find_images,
    pad_to_multiple,
)
from hpcm.train.loss import RateDistortionLoss, lambda_for
from hpcm.train.trainer import LAST, train

TRAIN_IMAGES = ("384022.jpg", "112090.jpg", "48017.jpg")


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory, shared_dir) -> tuple[Path, Path]:
    """A training folder of 3 BSDS500 images (symlinks) and a validation folder of one small Kodak crop."""
    root = tmp_path_factory.mktemp("data")
    train_dir, val_dir = root / "train", root / "val"
    (train_dir / "sub").mkdir(parents=True)
    val_dir.mkdir()
    src = shared_dir / "data" / "train" / "bsds500" / "test"
    for i, name in enumerate(TRAIN_IMAGES):
        target = train_dir / ("sub" if i == 2 else "") / name
        target.symlink_to(src / name)
    with Image.open(shared_dir / "data" / "kodak" / "kodim01.png") as im:
        im.convert("RGB").crop((200, 100, 300, 180)).save(val_dir / "crop.png")  # 100x80: padded to 128
    return train_dir, val_dir


def _cfg(data_dirs, out: Path, **kw) -> TrainConfig:
    train_dir, val_dir = data_dirs
    base = dict(
        model="hpcm-tiny", data=[str(train_dir)], val=str(val_dir), out=str(out), steps=4, batch_size=1,
        patch_size=64, quality=3, num_workers=0, log_every=1, val_every=1000, save_every=1000,
        progress=False, device="cpu",
    )
    base.update(kw)
    return TrainConfig.from_dict(base)


# ------------------------------------------------------------------------------------------- data


def test_find_images_recursive_and_errors(data_dirs, tmp_path):
    files = find_images(data_dirs[0])
    assert sorted(p.name for p in files) == sorted(TRAIN_IMAGES)
    with pytest.raises(DataError, match="does not exist"):
        find_images(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="no JPEG/PNG"):
        find_images(tmp_path / "empty")


def test_sampler_is_a_function_of_the_step():
    full = list(StepBatchSampler(5, 3, seed=7, num_steps=6))
    resumed = list(StepBatchSampler(5, 3, seed=7, num_steps=6, start_step=4))
    assert resumed == full[4:]
    # every epoch visits every image once
    idx = [k[0] for batch in full for k in batch][:15]
    assert sorted(idx[:5]) == sorted(idx[5:10]) == list(range(5))
    # two ranks with batch 3 together read the samples of one process with batch 6
    one = list(StepBatchSampler(5, 6, seed=7, num_steps=3))
    r0 = list(StepBatchSampler(5, 3, seed=7, num_steps=3, rank=0, world_size=2))
    r1 = list(StepBatchSampler(5, 3, seed=7, num_steps=3, rank=1, world_size=2))
    assert [a + b for a, b in zip(r0, r1)] == one
    assert list(StepBatchSampler(5, 3, seed=8, num_steps=2)) != full[:2]


def test_patches_deterministic_small_images_upscaled(tmp_path):
    small = tmp_path / "small.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(small)
    ds = PatchDataset([small], 64, downscale_prob=1.0)
    a, b = ds[(0, 123)], ds[(0, 123)]
    assert a.shape == (3, 64, 64) and a.dtype == torch.float32
    assert torch.equal(a, b) and 0.0 <= float(a.min()) and float(a.max()) <= 1.0
    assert not torch.equal(ds[(0, 124)], a) or not torch.equal(ds[(0, 125)], a)


def test_downscale_and_unreadable_image(tmp_path, data_dirs):
    ds = PatchDataset(find_images(data_dirs[0]), 64, downscale_prob=1.0, downscale_min=0.3)
    assert ds[(0, 5)].shape == (3, 64, 64)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(DataError, match="broken.jpg"):
        PatchDataset([bad], 64)[(0, 0)]


def test_pad_and_validation_images(data_dirs):
    val = ValidationImages(data_dirs[1], max_images=5)
    assert len(val) == 1
    (_, x), = list(val)
    assert x.shape == (1, 3, 80, 100)
    xp = pad_to_multiple(x, 64)
    assert xp.shape == (1, 3, 128, 128) and torch.equal(xp[..., :80, :100], x)


# ------------------------------------------------------------------------------------- loss / config


def test_loss_terms():
    assert lambda_for(1) == 0.0018 and lambda_for(6, "ms-ssim") == 60.5
    with pytest.raises(ValueError):
        lambda_for(7)
    x = torch.rand(2, 3, 16, 16)
    lik = {"y": torch.full((2, 4, 1, 1), 0.5), "z": torch.full((2, 2, 1, 1), 0.25)}
    out = RateDistortionLoss(0.01)({"x_hat": x + 0.1, "likelihoods": lik}, x)
    npix = 2 * 16 * 16
    assert out["bpp_y"].item() == pytest.approx(2 * 4 * 1 / npix)
    assert out["bpp_z"].item() == pytest.approx(2 * 2 * 2 / npix)
    assert out["mse"].item() == pytest.approx(0.01, rel=1e-4)
    assert out["loss"].item() == pytest.approx(0.01 * 255**2 * 0.01 + out["bpp"].item(), rel=1e-4)


def test_config_precedence_milestones_and_toml(tmp_path):
    cfg = TrainConfig.from_dict({"model": "m", "data": "d", "out": "o", "quality": 2,
                                 "lr_milestones": ["10", "20:5e-6", 30], "lr_gamma": 0.5})
    cfg.validate()
    assert cfg.resolved_lmbda == 0.0035
    assert [cfg.lr_at(s) for s in (0, 10, 20, 30)] == pytest.approx([1e-4, 5e-5, 5e-6, 2.5e-6])
    path = tmp_path / "c.toml"
    path.write_text(dumps_toml(cfg.to_dict()))
    again = TrainConfig.from_dict(load_toml(path))
    assert again.to_dict() == cfg.to_dict()
    with pytest.raises(ConfigError, match="not both"):
        TrainConfig.from_dict({"model": "m", "data": "d", "out": "o", "quality": 2, "lmbda": 0.1}).validate()
    TrainConfig.from_dict({"model": "m", "data": ["d"], "out": "o"}).validate()  # variable rate
    with pytest.raises(ConfigError, match="patch-size"):
        TrainConfig.from_dict({"model": "m", "data": ["d"], "out": "o", "lmbda": 8.0,
                               "metric": "ms-ssim", "patch_size": 128}).validate()
    with pytest.raises(ConfigError, match="unknown"):
        TrainConfig.from_dict({"modle": "m"})
    # CLI flags override the TOML file
    from hpcm.cli.main import build_parser
    from hpcm.cli.train import config_from_args

    args = build_parser().parse_args(["train", "--config", str(path), "--lmbda", "0.02", "--steps", "7"])
    merged = config_from_args(args)
    assert merged.steps == 7 and merged.lmbda == 0.02 and merged.quality is None and merged.model == "m"


# ------------------------------------------------------------------------------------------- runs


def _fixed_batch_loss(model, batch, crit) -> float:
    model.eval()
    with torch.no_grad():
        return float(crit(model(batch, training=False), batch)["loss"])


def test_short_run_lowers_loss_on_fixed_batch(data_dirs, tmp_path):
    from hpcm.models.registry import create_model

    torch.manual_seed(0)
    model = create_model("hpcm-tiny")
    paths = find_images(data_dirs[0])
    batch = torch.stack([PatchDataset(paths, 64)[(i, 99)] for i in range(3)])
    crit = RateDistortionLoss(lambda_for(3))
    before = _fixed_batch_loss(model, batch, crit)
    cfg = _cfg(data_dirs, tmp_path / "run", steps=8, batch_size=2, lr=1e-3, val=None)
    res = train(cfg, model=model)
    after = _fixed_batch_loss(model, batch, crit)
    assert res.step == 8 and not res.interrupted
    assert after < 0.9 * before, (before, after)
    lines = [json.loads(s) for s in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in lines if e["split"] == "train"] == list(range(1, 9))
    assert {"bpp_y", "bpp_z", "psnr", "loss", "images_per_s"} <= set(lines[-1])


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def test_resume_after_sigterm_is_bit_identical(data_dirs, tmp_path):
    a = _cfg(data_dirs, tmp_path / "a", steps=4, val_every=2)
    train(a)

    def stop_at_2(step, _):
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    b = _cfg(data_dirs, tmp_path / "b", steps=4, val_every=2)
    res = train(b, on_step=stop_at_2)
    assert res.interrupted and res.step == 2
    meta = json.loads((tmp_path / "b" / "checkpoint_last.json").read_text())
    assert meta["step"] == 2 and meta["preset"] == "hpcm-tiny" and meta["lmbda"] == 0.0067
    with pytest.raises(ConfigError, match="--resume"):
        train(_cfg(data_dirs, tmp_path / "b", steps=4))
    res2 = train(_cfg(data_dirs, tmp_path / "b", steps=4, val_every=2, resume=True))
    assert res2.step == 4 and not res2.interrupted
    wa, wb = _weights(tmp_path / "a" / "checkpoint_last.safetensors"), _weights(
        tmp_path / "b" / "checkpoint_last.safetensors"
    )
    assert wa.keys() == wb.keys()
    for k in wa:
        if not k.startswith("rng/"):
            assert torch.equal(wa[k], wb[k]), k
    # the metrics log of the resumed run matches the uninterrupted one step for step
    la = [json.loads(s) for s in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(s) for s in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    key = [(e["split"], e["step"], e["loss"]) for e in la]
    assert key == [(e["split"], e["step"], e["loss"]) for e in lb]


def test_sigterm_to_the_process_group_stops_cleanly_with_data_workers(data_dirs, tmp_path):
    """torchrun and batch schedulers signal the whole process group, data workers included: the workers
    survive the signal, so the run stops at the step it reached and saves (no worker-died error)."""
    import multiprocessing

    def group_stop_at_2(step, _):
        if step == 2:
            workers = multiprocessing.active_children()
            assert workers, "the run should have data workers"
            for w in workers:
                os.kill(w.pid, signal.SIGTERM)
            time.sleep(1.0)  # a killed worker would be reported (SIGCHLD) while we wait here
            assert all(w.is_alive() for w in workers)
            os.kill(os.getpid(), signal.SIGTERM)

    cfg = _cfg(data_dirs, tmp_path / "run", steps=6, num_workers=2)
    res = train(cfg, on_step=group_stop_at_2)
    assert res.interrupted and res.stop_reason == "signal" and res.step == 2
    assert json.loads((tmp_path / "run" / "checkpoint_last.json").read_text())["step"] == 2


def test_time_limit_stops_like_sigterm_and_resumes(data_dirs, tmp_path, monkeypatch, capsys):
    """--time-limit: the invocation's clock passes the limit after step 3 (a fake clock, 10 s a reading);
    checkpoint_last is saved at step 3 without a final validation, and --resume finishes the run exactly
    like one that never stopped."""
    import hpcm.train.trainer as T

    a = _cfg(data_dirs, tmp_path / "a", steps=5, val_every=1000)
    train(a)
    readings = iter(range(0, 1000, 10))  # 0 at the start, then 10, 20, 30 after steps 1, 2, 3
    monkeypatch.setattr(T, "_now", lambda: next(readings))
    b = _cfg(data_dirs, tmp_path / "b", steps=5, val_every=1000, time_limit=25)
    res = train(b)
    assert res.interrupted and res.stop_reason == "time-limit" and res.step == 3 and res.last_val == {}
    assert "--time-limit 25 s reached at step 3" in capsys.readouterr().err
    meta = json.loads((tmp_path / "b" / "checkpoint_last.json").read_text())
    assert meta["step"] == 3 and meta["train_config"]["time_limit"] == 25
    assert not (tmp_path / "b" / "checkpoint_best.safetensors").exists()  # no validation on the way out
    monkeypatch.setattr(T, "_now", time.monotonic)
    res2 = train(_cfg(data_dirs, tmp_path / "b", steps=5, val_every=1000, resume=True))
    assert res2.step == 5 and not res2.interrupted and res2.stop_reason is None
    wa = _weights(tmp_path / "a" / "checkpoint_last.safetensors")
    wb = _weights(tmp_path / "b" / "checkpoint_last.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa if not k.startswith("rng/"))
    # a limit already passed during setup still makes one step; a bad limit is a ConfigError
    res3 = train(_cfg(data_dirs, tmp_path / "c", steps=5, val=None, time_limit=1e-6))
    assert res3.step == 1 and res3.stop_reason == "time-limit"
    for bad in (0, -1.0, math.inf):
        with pytest.raises(ConfigError, match="--time-limit"):
            _cfg(data_dirs, tmp_path / "d", time_limit=bad).validate()


def _trainer(cfg: TrainConfig):
    from hpcm.train import distributed as D
    from hpcm.train.trainer import Trainer

    return Trainer(cfg, D.setup(cfg.device))


def test_trainer_one_step_alone(data_dirs, tmp_path):
    """The Trainer's pieces without its loop: setup, then one optimizer step on one batch."""
    trainer = _trainer(_cfg(data_dirs, tmp_path / "run", val=None, lr=1e-3)).setup()
    model = trainer.model
    assert trainer.step == 0 and trainer.lmbda == 0.0067 and trainer.val_images is None
    assert (tmp_path / "run" / "config.toml").exists() and not (tmp_path / "run" / LAST).exists()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = next(iter(trainer.loader))
    assert batch.shape == (1, 3, 64, 64)
    values = trainer.train_step(batch)
    assert trainer.step == 1 and trainer.skipped == 0 and trainer.lr == trainer.cfg.lr_at(0)
    assert {"loss", "bpp", "mse"} <= set(values) and all(math.isfinite(v) for v in values.values())
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("g_a.") for k in changed)
    assert all(trainer.optimizer.state[p] for p in trainer.trainable if p.grad is not None)


@pytest.mark.parametrize("channels_last", [False, True])
def test_trainer_save_then_resume_continues_exactly(data_dirs, tmp_path, channels_last):
    """save() after one step, a resumed Trainer restores step, weights and optimizer, and its next step
    equals the next step of the trainer that never stopped (also with --channels-last)."""
    run = tmp_path / "run"
    first = _trainer(_cfg(data_dirs, run, val=None, channels_last=channels_last)).setup()
    kernels = [p for p in first.model.parameters() if p.dim() == 4 and p.shape[1] > 1 and p.shape[-1] > 1]
    nhwc = [p.is_contiguous(memory_format=torch.channels_last) for p in kernels]
    assert kernels and all(f == channels_last for f in nhwc)
    batches = iter(first.loader)
    first.train_step(next(batches))
    first.save(first.last_path)
    meta = json.loads((run / "checkpoint_last.json").read_text())
    assert meta["step"] == 1 and meta["skipped_steps"] == 0 and meta["preset"] == "hpcm-tiny"

    resumed = _trainer(_cfg(data_dirs, run, val=None, resume=True, channels_last=channels_last)).setup()
    assert resumed.step == 1 and resumed.prior_seconds >= 0
    sa, sb = first.model.state_dict(), resumed.model.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    for pa, pb in zip(first.trainable, resumed.trainable, strict=True):
        for name, value in first.optimizer.state[pa].items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(resumed.optimizer.state[pb][name]))
    va = first.train_step(next(batches))
    vb = resumed.train_step(next(iter(resumed.loader)))
    assert va == vb and first.step == resumed.step == 2
    sa, sb = first.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_cli_export_init_from_and_freeze(data_dirs, tmp_path, capsys):
    train_dir, val_dir = data_dirs
    run = tmp_path / "run"
    rc = cli_main(["train", "--model", "hpcm-tiny", "--data", str(train_dir), "--val", str(val_dir),
                   "--out", str(run), "--steps", "1", "--batch-size", "1", "--patch-size", "64",
                   "--lmbda", "0.01", "--num-workers", "0", "--device", "cpu", "--no-progress"])
    assert rc == 0 and (run / "checkpoint_best.safetensors").exists()
    out = tmp_path / "model.safetensors"
    assert cli_main(["export", str(run / "checkpoint_last.safetensors"), "-o", str(out)]) == 0
    from hpcm.models.io import is_derived_key, load_model

    model = load_model(str(out))
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["lambda"] == 0.01 and meta["training"]["step"] == 1 and meta["preset"] == "hpcm-tiny"
    ck = _weights(run / "checkpoint_last.safetensors")
    learned = {k: v for k, v in model.state_dict().items() if not is_derived_key(k)}
    assert learned and all(torch.equal(v, ck["model/" + k]) for k, v in learned.items())
    # init from the exported weights, training only the hyper-synthesis; everything else stays put
    run2 = tmp_path / "run2"
    rc = cli_main(["train", "--model", "hpcm-tiny", "--data", str(train_dir), "--out", str(run2),
                   "--steps", "1", "--batch-size", "1", "--patch-size", "64", "--quality", "1",
                   "--num-workers", "0", "--device", "cpu", "--init-from", str(out),
                   "--train-only", "h_s*", "--no-progress"])
    assert rc == 0
    ck2 = _weights(run2 / "checkpoint_last.safetensors")
    changed = [k for k in ck2 if k.startswith("model/") and not torch.equal(ck2[k], ck[k])]
    assert changed and all(k.startswith("model/h_s") for k in changed), changed
    assert json.loads((run2 / "init_migration.json").read_text())["copied"]
    # resuming without --init-from keeps the run's origin in its provenance
    rc = cli_main(["train", "--model", "hpcm-tiny", "--data", str(train_dir), "--out", str(run2),
                   "--steps", "2", "--batch-size", "1", "--patch-size", "64", "--quality", "1",
                   "--num-workers", "0", "--device", "cpu", "--train-only", "h_s*", "--no-progress",
                   "--resume"])
    assert rc == 0
    out2 = tmp_path / "model2.safetensors"
    assert cli_main(["export", str(run2 / "checkpoint_last.safetensors"), "-o", str(out2)]) == 0
    recipe = json.loads(out2.with_suffix(".json").read_text())["training"]["recipe"]
    assert recipe["init_from"] == str(out)


def test_cli_bad_data_gives_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_bytes(b"\x89PNG broken")
    args = ["train", "--model", "hpcm-tiny", "--out", str(tmp_path / "r"), "--steps", "1",
            "--patch-size", "64", "--quality", "1", "--device", "cpu", "--num-workers", "0"]
    assert cli_main([*args, "--data", str(bad)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot read image" in err[0] and "x.png" in err[0]
    assert cli_main([*args, "--data", str(tmp_path / "missing")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_example_configs_parse():
    root = Path(__file__).resolve().parents[1] / "configs"
    files = sorted(root.glob("*.toml"))
    assert files
    for f in files:
        cfg = TrainConfig.from_dict(load_toml(f))
        cfg.validate()


def test_grad_checkpoint_same_gradients_and_migration_between_variants():
    pytest.importorskip("hpcm.layers.rwkv")
    from hpcm.models.components import CellSpec
    from hpcm.models.migrate import migrate
    from hpcm.models.registry import create_model
    from hpcm.train.trainer import enable_grad_checkpointing

    torch.manual_seed(0)
    base = create_model("hpcm-tiny")
    cells = (CellSpec(window=4, heads=8), CellSpec(window=8, heads=8), CellSpec(kind="rwkv", hidden_rate=2))
    variant = create_model("hpcm-tiny", cells=cells)  # phase-1 style: RWKV cell at s3
    report = migrate(base.state_dict(), variant)
    assert report.copied and any(k.startswith("attn_s3") for k in report.dropped)
    assert any(k.startswith("attn_s3") for k in report.initialised)
    assert not any(k.startswith("attn_s3") for k in report.copied)

    x = torch.rand(1, 3, 64, 64)
    crit = RateDistortionLoss(0.01)

    def grads() -> dict[str, torch.Tensor]:
        variant.zero_grad()
        torch.manual_seed(1)
        crit(variant(x, training=True), x)["loss"].backward()
        return {n: p.grad.clone() for n, p in variant.named_parameters() if p.grad is not None}

    plain = grads()
    assert enable_grad_checkpointing(variant)
    ckpt = grads()
    assert plain.keys() == ckpt.keys()
    for k in plain:
        torch.testing.assert_close(plain[k], ckpt[k], rtol=1e-5, atol=1e-6)


class _PoisonableCodec(torch.nn.Module):
    """A minimal model honouring the forward contract; ``poison`` makes its output NaN."""

    size_multiple = 16

    def __init__(self) -> None:
        super().__init__()
        self.enc = torch.nn.Conv2d(3, 4, 16, stride=16)
        self.dec = torch.nn.ConvTranspose2d(4, 3, 16, stride=16)
        self.poison = False

    def forward(self, x, training=None):
        y = self.enc(x)
        y = y + (torch.rand_like(y) - 0.5 if (self.training if training is None else training) else 0)
        lik = torch.sigmoid(-y.abs() + 3).clamp_min(1e-9)
        x_hat = self.dec(y)
        if self.poison:
            x_hat = x_hat * float("nan")
        return {"x_hat": x_hat, "likelihoods": {"y": lik, "z": torch.ones(x.shape[0], 1, 1, 1)}}


def test_non_finite_step_is_skipped_and_counted(data_dirs, tmp_path):
    model = _PoisonableCodec()
    snapshots = {}

    def hook(step, values):
        snapshots[step] = {k: v.clone() for k, v in model.state_dict().items()}
        model.poison = step == 2  # the third step (step index 2) gets NaN output

    cfg = _cfg(data_dirs, tmp_path / "r", model="custom", steps=5, val=None, patch_size=32)
    res = train(cfg, model=model, on_step=hook)
    assert res.skipped_steps == 1 and res.step == 5
    for k in snapshots[2]:
        assert torch.equal(snapshots[2][k], snapshots[3][k])  # no update at the poisoned step
    assert not torch.equal(snapshots[3]["enc.weight"], snapshots[4]["enc.weight"])
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())
    meta = json.loads((tmp_path / "r" / "checkpoint_last.json").read_text())
    assert meta["skipped_steps"] == 1


def test_ms_ssim_loss():
    x = torch.rand(1, 3, 192, 192)
    lik = {"y": torch.full((1, 4, 12, 12), 0.5)}
    crit = RateDistortionLoss(8.73, "ms-ssim")
    same = crit({"x_hat": x, "likelihoods": lik}, x)
    assert same["ms_ssim"].item() == pytest.approx(1.0, abs=1e-5)
    noisy = crit({"x_hat": (x + 0.1 * torch.randn_like(x)).clamp(0, 1), "likelihoods": lik}, x)
    assert noisy["loss"].item() == pytest.approx(8.73 * (1 - noisy["ms_ssim"].item()) + noisy["bpp"].item())
    assert noisy["loss"] > same["loss"]


def test_amp_bf16_keeps_likelihoods_float32(data_dirs, tmp_path, monkeypatch, capsys):
    from hpcm.entropy.ggm import GGM
    from hpcm.models.registry import create_model
    from hpcm.train.amp import Float32Likelihood, keep_likelihoods_fp32

    torch.manual_seed(0)
    model = create_model("hpcm-tiny")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert keep_likelihoods_fp32(model) == 1 and keep_likelihoods_fp32(model) == 0
    em = model.entropy_estimation
    assert isinstance(em, Float32Likelihood) and isinstance(em, GGM)
    assert model.state_dict().keys() == state.keys()  # same checkpoints with and without AMP
    x = torch.rand(1, 3, 64, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, training=True)
    assert out["x_hat"].dtype == torch.bfloat16  # the networks do run in bf16
    assert all(v.dtype == torch.float32 for v in out["likelihoods"].values())
    # outside autocast the float32 path is unchanged, bit for bit
    ref = create_model("hpcm-tiny")
    ref.load_state_dict(state)
    ref.eval()
    model.eval()
    with torch.no_grad():
        a, b = model(x)["likelihoods"]["y"], ref(x)["likelihoods"]["y"]
    assert torch.equal(a, b)

    # the trainer applies it with --amp bf16 (2 steps on CPU autocast), warning where the CPU emulates bf16
    import hpcm.train.trainer as trainer_module
    from hpcm.train.amp import cpu_bf16_is_emulated

    assert isinstance(cpu_bf16_is_emulated(), bool)
    monkeypatch.setattr(trainer_module, "cpu_bf16_is_emulated", lambda: True)
    cfg = _cfg(data_dirs, tmp_path / "run", steps=2, val=None, amp="bf16")
    res = train(cfg, model=create_model("hpcm-tiny"))
    assert res.step == 2 and res.skipped_steps == 0 and math.isfinite(res.last_train["loss"])
    assert "no native bf16" in capsys.readouterr().err
    monkeypatch.setattr(trainer_module, "cpu_bf16_is_emulated", lambda: False)
    train(_cfg(data_dirs, tmp_path / "run2", steps=1, val=None, amp="bf16"), model=create_model("hpcm-tiny"))
    assert "no native bf16" not in capsys.readouterr().err


def test_amp_bf16_keeps_image_convs_float32():
    """--amp bf16: the convolutions reading and writing the image run in float32, nothing else changes."""
    from hpcm.models.registry import create_model
    from hpcm.train.amp import Float32Conv, prepare_bf16

    torch.manual_seed(0)
    model = create_model("hpcm-tiny")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert prepare_bf16(model) == {"likelihoods": 1, "image_convs": 2}
    assert prepare_bf16(model) == {"likelihoods": 0, "image_convs": 0}
    swapped = [n for n, m in model.named_modules() if isinstance(m, Float32Conv)]
    assert len(swapped) == 2 and swapped[0].startswith("g_a.") and swapped[1].startswith("g_s.")
    assert model.state_dict().keys() == state.keys()
    x = torch.rand(1, 3, 64, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, training=True)
        first = model.get_submodule(swapped[0])(x)
    assert out["x_hat"].dtype == torch.float32 and first.dtype == torch.float32
    ref = create_model("hpcm-tiny")
    ref.load_state_dict(state)
    model.eval(), ref.eval()
    with torch.no_grad():
        assert torch.equal(model(x)["x_hat"], ref(x)["x_hat"])  # unchanged without autocast


def test_resume_checks_the_global_batch(data_dirs, tmp_path):
    """1 process x 8 may continue as 2 x 4 (same sample stream); 1 x 4 may not."""
    from hpcm.errors import CheckpointError
    from hpcm.train.trainer import _check_resumable

    cfg = _cfg(data_dirs, tmp_path / "run", batch_size=4)
    meta = {"train_config": {**cfg.to_dict(), "batch_size": 8}, "world_size": 1, "lmbda": cfg.resolved_lmbda}
    _check_resumable(cfg, meta, world_size=2)
    with pytest.raises(CheckpointError, match="global batch differs"):
        _check_resumable(cfg, meta, world_size=1)
    with pytest.raises(CheckpointError, match="patch_size differs"):
        _check_resumable(_cfg(data_dirs, tmp_path / "run", batch_size=4, patch_size=128), meta, world_size=2)


# ------------------------------------------------------------------------------------ weight average


def test_weight_average_update_rule_and_swap():
    from hpcm.train.ema import WeightAverage

    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    start = {k: v.clone() for k, v in net.state_dict().items()}
    ema = WeightAverage(net, 0.9)
    with torch.no_grad():
        net.weight.add_(1.0)
    ema.update(net)
    assert ema.updates == 1
    assert torch.allclose(ema.averages[ema.names.index("weight")], 0.9 * start["weight"] + 0.1 * net.weight)
    with ema.applied_to(net):
        assert torch.allclose(net.weight, start["weight"] + 0.1)
    assert torch.equal(net.weight, start["weight"] + 1.0)  # the trained weights are back
    other = WeightAverage(torch.nn.Linear(3, 2), 0.9)
    other.load(ema.state_tensors(), ema.updates)
    assert all(torch.equal(a, b) for a, b in zip(ema.averages, other.averages, strict=True))
    with pytest.raises(KeyError):
        other.load({}, 0)
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(net, 1.0)


def test_ema_resumes_exactly_and_exports(data_dirs, tmp_path, capsys):
    """--ema: the average is checkpointed and a resumed run continues it exactly; a run without one may
    take it up on --resume; `hpcm export --ema` writes the average, and refuses a checkpoint without one."""
    from hpcm.train.ema import PREFIX

    run = tmp_path / "run"
    first = _trainer(_cfg(data_dirs, run, val=None, ema=0.5, lr=1e-3)).setup()
    batches = iter(first.loader)
    first.train_step(next(batches))
    first.save(first.last_path)
    meta = json.loads((run / "checkpoint_last.json").read_text())
    assert meta["ema"] == {"decay": 0.5, "updates": 1, "since_step": 0}
    resumed = _trainer(_cfg(data_dirs, run, val=None, ema=0.5, lr=1e-3, resume=True)).setup()
    assert resumed.ema.updates == 1
    first.train_step(next(batches))
    resumed.train_step(next(iter(resumed.loader)))
    for a, b in zip(first.ema.averages, resumed.ema.averages, strict=True):
        assert torch.equal(a, b)
    w = dict(first.model.named_parameters())
    assert any(not torch.equal(a, w[n]) for n, a in zip(first.ema.names, first.ema.averages, strict=True))
    resumed.save(resumed.last_path)

    out = tmp_path / "avg.safetensors"
    assert cli_main(["export", str(run / LAST), "-o", str(out), "--ema"]) == 0
    from hpcm.models.io import load_model

    exported = dict(load_model(str(out)).named_parameters())
    ck = _weights(run / LAST)
    assert all(torch.equal(exported[k[len(PREFIX):]], v) for k, v in ck.items() if k.startswith(PREFIX))
    provenance = json.loads(out.with_suffix(".json").read_text())["training"]
    assert provenance["weights"]["ema"]["updates"] == 2 and provenance["recipe"]["ema"] == 0.5

    plain = tmp_path / "plain"
    t = _trainer(_cfg(data_dirs, plain, val=None)).setup()
    t.train_step(next(iter(t.loader)))
    t.save(t.last_path)
    capsys.readouterr()
    assert cli_main(["export", str(plain / LAST), "-o", str(tmp_path / "x.safetensors"), "--ema"]) == 1
    assert "holds no weight average" in capsys.readouterr().err
    taken_up = _trainer(_cfg(data_dirs, plain, val=None, ema=0.9, resume=True)).setup()
    assert "starts at step 1" in capsys.readouterr().err
    w = dict(taken_up.model.named_parameters())
    assert all(torch.equal(a, w[n]) for n, a in zip(taken_up.ema.names, taken_up.ema.averages, strict=True))


def test_ema_is_validated_beside_the_weights(data_dirs, tmp_path):
    train(_cfg(data_dirs, tmp_path / "run", steps=2, val_every=1, ema=0.9))
    lines = [json.loads(s) for s in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in lines if e["split"] == "val_ema"] == [1, 2]
    with pytest.raises(ConfigError, match="--ema"):
        _cfg(data_dirs, tmp_path / "bad", ema=1.5).validate()
