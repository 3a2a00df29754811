"""The prepared GPU run (scripts/gpu_check.sh → benchmarks/gpu_suite.py), dry-run on CPU so that a GPU slot is
spent measuring, not debugging: the whole ``--device cpu --quick`` run, its time boxes and crash isolation,
and the summary of a run whose sections failed."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "benchmarks" / "gpu_suite.py"


def _load_suite():
    spec = importlib.util.spec_from_file_location("gpu_suite", SUITE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHON=sys.executable, HPCM_GPU_WHEELS="/nonexistent-wheels",
               HPCM_OFFICIAL_DIR="/nonexistent-official",
               PYTHONWARNINGS="ignore")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    env.update(extra)
    return env


def test_quick_cpu_run_of_the_whole_suite(tmp_path):
    out = tmp_path / "out"
    # time boxes twice the quick defaults: sections end when done, and a loaded CI machine (this test
    # ran beside a training run once: the second training row got 9 s) must not fail the dry run
    boxes = "env=40,pytest_cuda=80,biwkv=50,codec=60,crossdev=20,official=20,profile=50,train=90"
    cmd = ["bash", str(ROOT / "scripts" / "gpu_check.sh"), str(out), "--device", "cpu", "--quick",
           "--boxes", boxes]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "gpu_check: python 3." in proc.stdout
    res = json.loads((out / "results.json").read_text())
    files = sorted(p.name for p in out.iterdir())
    assert files == ["pytest_cuda.log", "results.json", "suite.log", "summary.md"]  # ≤ 8 files come back
    S = res["sections"]
    assert list(S) == ["env", "pytest_cuda", "biwkv", "codec", "crossdev", "official", "profile",
                       "train"]
    assert S["crossdev"]["status"] == "skipped"  # it needs CUDA
    for name, e in S.items():
        assert e["status"] in ("ok", "skipped"), (name, e)
    m = res["meta"]
    assert m["quick"] is True and m["torch"] and m["python"] and m["date_utc"] and "device_name" in m
    # without a GPU every CUDA test is collected and skipped with its reason
    counts = S["pytest_cuda"]["data"]["counts"]
    assert counts.get("skipped", 0) >= 40 and not counts.get("failed") and not counts.get("passed")
    rows = S["biwkv"]["data"]["rows"]
    assert {r["impl"] for r in rows} == {"torch"} and all(r["fwd"]["median_s"] > 0 for r in rows)
    assert S["biwkv"]["data"]["copy_bandwidth"]["best_GBps"] > 0
    if S["codec"]["status"] == "ok":  # constriction installed
        assert all(r["decode_repeatable"] and r["bpp"] > 0 for r in S["codec"]["data"]["rows"])
    assert S["official"]["status"] == "skipped" and "HPCM_OFFICIAL_DIR" in S["official"]["reason"]
    train = S["train"]["data"]["rows"]
    assert [r["compile"] for r in train] == [None, "transforms-eager-backend"]
    assert all(r["images_per_s"] > 0 and r["loss_finite"] for r in train)
    assert train[1]["graph_breaks"] == 0
    assert S["profile"]["data"]["rows"][0]["cpu_ops"] > 100
    text = (out / "summary.md").read_text()
    for heading in ("## Sections", "## Bi-WKV", "## Training throughput", "## Kernel launches"):
        assert heading in text
    assert m["elapsed_s"] < 450  # the suite's default budget


def test_time_box_and_crash_are_isolated(tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, str(SUITE), "--out", str(out), "--device", "cpu", "--quick",
           "--only", "env,official", "--boxes", "env=4"]
    proc = subprocess.run(cmd, env=_env(HPCM_GPU_SUITE_HANG="env", HPCM_GPU_SUITE_CRASH="official",
                                        PYTHONPATH=str(ROOT / "src")),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr[-2000:]
    S = json.loads((out / "results.json").read_text())["sections"]
    assert S["env"]["status"] == "timeout" and S["env"]["seconds"] < 20
    assert S["official"]["status"] == "failed" and "exit" in S["official"]["reason"]
    assert "| env | timeout |" in (out / "summary.md").read_text()


def test_unknown_section_is_refused(tmp_path):
    cmd = [sys.executable, str(SUITE), "--out", str(tmp_path), "--device", "cpu", "--only", "nope"]
    env = _env(PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "unknown sections" in proc.stderr


def test_trace_stats_and_summary_of_failures(tmp_path):
    suite = _load_suite()
    trace = tmp_path / "t.json"
    trace.write_text(json.dumps({"traceEvents": [
        {"cat": "kernel", "name": "a", "ts": 0, "dur": 10},
        {"cat": "kernel", "name": "b", "ts": 5, "dur": 10},  # overlaps a: busy 0..15
        {"cat": "gpu_memcpy", "name": "c", "ts": 100, "dur": 5},
        {"cat": "cuda_runtime", "name": "cudaLaunchKernel", "ts": 0, "dur": 3},
        {"cat": "cuda_driver", "name": "cuLaunchKernel", "ts": 4, "dur": 3},
        {"cat": "cpu_op", "name": "aten::add", "ts": 0, "dur": 3},
    ]}))
    st = suite._trace_stats(trace, wall_s=200e-6)
    assert st["kernels"] == 3 and st["kernel_launch_calls"] == 2 and st["cpu_ops"] == 1
    assert st["gpu_busy_ms"] == pytest.approx(0.020) and st["gpu_busy_fraction"] == pytest.approx(0.1)
    results = {"meta": {"device": "cuda", "device_name": "GPU X"}, "sections": {
        "biwkv": {"status": "failed", "reason": "RuntimeError: 1 of 2 rows failed", "seconds": 3.0, "data": {
            "copy_bandwidth": {"best_GBps": 3000.0},
            "rows": [
                {"shape": [1, 98304, 96], "impl": "triton", "error": "CompilationError: x|y"},
                {"shape": [1, 98304, 96], "impl": "torch", "fwd": {"median_s": 0.01}, "fwd_x_limit": 3.1},
            ]}},
        "codec": {"status": "timeout", "reason": "killed", "seconds": 80, "data": {}},
        "train": {"status": "ok", "reason": None, "seconds": 9, "data": {"rows": [
            {"model": "hpcm-tiny", "batch": 8, "patch": 256, "compile": None, "images_per_s": 50.0}]}},
    }}
    text = suite.summary_markdown(results)
    assert "# GPU suite: GPU X" in text and "| codec | timeout |" in text
    assert "CompilationError: x/y" in text and "| (1, 98304, 96) | torch | 10.00 | 3.10 |" in text


def test_crossdev_workers_cover_every_preset_once():
    from hpcm.models.registry import list_models

    suite = _load_suite()
    named = [p for presets, _ in suite.CROSSDEV_WORKERS for p in presets]
    assert len(named) == len(set(named))
    assert set(named) == set(list_models()) - {"hpcm-large"}


def test_crossdev_subset_is_spread_over_the_workers():
    suite = _load_suite()
    assert suite.crossdev_workers([], 16) == suite.CROSSDEV_WORKERS
    base = ["hpcm-base", "hpcm-phase1", "hpcm-phase2", "hpcm-phase3", "hpcm-phase4", "hpcm-multiref-phase1",
            "hpcm-multiref-phase2"]
    layout = suite.crossdev_workers(base, 16)
    assert len(layout) == 6 and all(t == 2 for _, t in layout)
    assert sorted(p for ps, _ in layout for p in ps) == sorted(base)
    assert suite.crossdev_workers(["hpcm-tiny"], 16) == [(["hpcm-tiny"], 16)]
