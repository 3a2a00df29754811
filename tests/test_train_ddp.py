"""Two-process DistributedDataParallel training on CPU (gloo) through ``torchrun -m hpcm train``."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")


def _torchrun_train(tmp_path: Path, shared_dir: Path, *args: str) -> tuple[list[str], Path]:
    """The command of a two-rank hpcm-tiny run on two training images (gloo), and its run folder."""
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    data = tmp_path / "data"
    data.mkdir()
    for name in ("384022.jpg", "112090.jpg"):
        (data / name).symlink_to(shared_dir / "data" / "train" / "bsds500" / "test" / name)
    run = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "hpcm", "train", "--model", "hpcm-tiny", "--data", str(data), "--out", str(run),
        "--batch-size", "1", "--patch-size", "64", "--quality", "2", "--device", "cpu", "--log-every", "1",
        "--no-progress", *args,
    ]
    return cmd, run


def test_ddp_two_processes_gloo(tmp_path, shared_dir):
    val = tmp_path / "val"
    val.mkdir()
    for name in ("100007.jpg", "100039.jpg", "108004.jpg"):  # 3 images: shards of 2 and 1
        (val / name).symlink_to(shared_dir / "data" / "train" / "bsds500" / "test" / name)
    cmd, run = _torchrun_train(tmp_path, shared_dir, "--steps", "2", "--num-workers", "0", "--val", str(val))
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((run / "checkpoint_last.json").read_text())
    assert meta["step"] == 2 and meta["world_size"] == 2
    log = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
    train_log = [e for e in log if e["split"] == "train"]
    assert [e["step"] for e in train_log] == [1, 2]  # rank 0 alone writes
    assert train_log[0]["images_per_s"] > 0
    # the final validation was shared by the ranks: its means are those of one process on all 3 images
    (final,) = [e for e in log if e["split"] == "val"]
    assert final["step"] == 2 and final["images"] == 3
    from hpcm.train.checkpoint import model_state, read_checkpoint
    from hpcm.train.data import ValidationImages
    from hpcm.train.loss import RateDistortionLoss, lambda_for
    from hpcm.train.trainer import build_model, evaluate

    model = build_model("hpcm-tiny")
    model.load_state_dict(model_state(read_checkpoint(run / "checkpoint_last.safetensors")[0]))
    alone = evaluate(model, ValidationImages(val), RateDistortionLoss(lambda_for(2)),
                     device=torch.device("cpu"))
    for key in ("loss", "bpp", "mse", "psnr"):
        assert final[key] == pytest.approx(alone[key], rel=1e-6), key
    # only rank 0 wrote: no stray temporary files, one set of outputs
    assert sorted(p.name for p in run.iterdir()) == [
        "checkpoint_best.json", "checkpoint_best.safetensors", "checkpoint_last.json",
        "checkpoint_last.safetensors", "config.toml", "metrics.jsonl",
    ]
    weights = load_file(str(run / "checkpoint_last.safetensors"))
    assert all(torch.isfinite(v).all() for k, v in weights.items() if v.is_floating_point())
    shutil.rmtree(run)


def test_sigterm_to_torchrun_stops_the_ranks_with_their_save(tmp_path, shared_dir):
    """torchrun passes SIGTERM to each rank's whole process group, data workers included; the workers
    ignore it, so the ranks stop at one step and save it (before the fix the workers died first)."""
    cmd, run = _torchrun_train(tmp_path, shared_dir, "--steps", "100000", "--num-workers", "1",
                               "--save-every", "100000")
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        log = run / "metrics.jsonl"
        while not (log.exists() and len(log.read_text().splitlines()) >= 2):
            assert proc.poll() is None and time.monotonic() < deadline, "the run did not start"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "stopped at step" in err, err[-3000:]
    meta = json.loads((run / "checkpoint_last.json").read_text())
    steps = [json.loads(s)["step"] for s in log.read_text().splitlines()]
    assert meta["step"] == steps[-1] >= 2
