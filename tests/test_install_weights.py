"""experiments/install_weights.py: shipping exported weights keeps their provenance portable and complete."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

from hpcm.models.io import load_model, save_weights
from hpcm.train.trainer import build_model

ROOT = Path(__file__).resolve().parents[1]


def _installer():
    path = ROOT / "experiments" / "install_weights.py"
    spec = importlib.util.spec_from_file_location("install_weights", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_install_records_totals_of_a_continued_run_and_a_release(tmp_path):
    torch.manual_seed(0)
    model = build_model("hpcm-tiny-vr")
    data = str((ROOT.parent / "shared" / "data" / "train").resolve())  # as the trainer records it
    training = {"step": 120, "crops_seen": 960, "data": [data]}
    src = save_weights(model, tmp_path / "run.safetensors", {"preset": "hpcm-tiny-vr", "training": training})
    installer = _installer()
    folder = tmp_path / "weights"
    dst = installer.install(src, "a test model", folder, before=(1000, 8000))
    doc = json.loads(dst.with_suffix(".json").read_text())
    training = doc["training"]
    assert (training["step"], training["crops_seen"]) == (120, 960)  # the run's own counts stay as they were
    assert (training["total_steps"], training["total_crops_seen"]) == (1120, 8960)
    assert training["data"] == ["../shared/data/train"]  # relative to the repository, not this machine
    assert doc["note"] == "a test model" and doc["trained"] is True
    assert load_model(str(dst)).weights_info["fingerprint"] == doc["fingerprint"]
    releases = json.loads((folder / "RELEASES.json").read_text())["weights"]
    assert [e["fingerprint"] for e in releases] == [doc["fingerprint"]]
    again = installer.install(src, "without lineage", folder)  # a run from scratch: no totals are invented
    assert "total_steps" not in json.loads(again.with_suffix(".json").read_text())["training"]
