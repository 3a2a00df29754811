"""hpcm.eval.study (the phase study's analysis): markers, BD-rate / delta logic, seed spread, convergence,
tables and report on synthetic JSON; the driver experiments/phase_study.py once as a subprocess."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hpcm.eval import study as ps

ROOT = Path(__file__).resolve().parents[1]


def _doc(name: str, points: list[tuple[int, float, float]]) -> dict:
    """CompressAI-schema document with one synthetic per-image record per (quality, bpp, psnr)."""
    from hpcm.eval.results import aggregate

    pts = []
    for q, bpp, psnr in points:
        rec = {"source": "kodim01", "name": name, "description": "synthetic", "quality": q,
               "results": {"bpp": bpp, "psnr-rgb": psnr, "ms-ssim-rgb": 0.9, "ms-ssim-db-rgb": 10.0,
                           "encoding_time": 0.1, "decoding_time": 0.2}}
        pts.append((q, [rec]))
    return aggregate(name, "synthetic", pts)


def _linear_bd_rate(ra, da, rt, dt) -> float:
    """Two-point BD-rate by hand: log-rate linear in PSNR, averaged over the overlapping PSNR range."""
    lo, hi = max(min(da), min(dt)), min(max(da), max(dt))
    grid = np.linspace(lo, hi, 20001)
    la = np.interp(grid, da, np.log(ra))
    lt = np.interp(grid, dt, np.log(rt))
    return float((np.exp(np.trapezoid(lt - la, grid) / (hi - lo)) - 1) * 100)


def test_markers(tmp_path):
    path = tmp_path / "stage.done.json"
    settings = {"model": "hpcm-tiny", "steps": 3}
    assert not ps.marker_matches(path, settings)
    ps.write_marker(path, settings, seconds=1.5)
    assert ps.marker_matches(path, settings)
    assert not ps.marker_matches(path, {**settings, "steps": 4})
    assert ps.read_json(path)["seconds"] == 1.5
    path.write_text("{torn")
    assert ps.read_json(path) is None and not ps.marker_matches(path, settings)


def test_two_point_bd_rate_is_linear_interpolation():
    base = _doc("base", [(2, 0.30, 28.0), (4, 0.60, 31.0)])
    test = _doc("test", [(2, 0.32, 28.3), (4, 0.62, 31.1)])
    bd = ps.bd_vs_baseline(base, test)
    assert bd["points"] == [2, 2] and bd["note"].startswith("2-point")
    expected = _linear_bd_rate([0.30, 0.60], [28.0, 31.0], [0.32, 0.62], [28.3, 31.1])
    assert bd["bd_rate"] == pytest.approx(expected, abs=1e-3)
    assert bd["overlap_db"] == pytest.approx([28.3, 31.0])


def test_bd_rate_undefined_cases():
    base = _doc("base", [(2, 0.30, 28.0), (4, 0.60, 31.0)])
    apart = _doc("apart", [(2, 0.30, 32.0), (4, 0.60, 34.0)])  # no PSNR overlap
    bd = ps.bd_vs_baseline(base, apart)
    assert bd["bd_rate"] is None and "overlap" in bd["note"]
    flat = _doc("flat", [(2, 0.30, 29.0), (4, 0.60, 28.5)])  # PSNR falls with rate: 1 monotone point
    bd = ps.bd_vs_baseline(base, flat)
    assert bd["bd_rate"] is None and "fewer than 2" in bd["note"]


def _study(**overrides) -> dict:
    """A settings dict as the driver builds it."""
    s = {"variants": list(ps.VARIANTS), "seeds": [1, 2], "all_seeds": False, "qualities": [2, 5],
         "variable_rate": False, "steps": 100, "batch_size": 8, "patch_size": 256, "lr": 1e-4,
         "lr_milestones": [], "downscale_prob": 0.5, "val_holdout": 16, "val_every": None,
         "init_from": "src/hpcm/weights/hpcm-tiny-q{q}.safetensors", "data": ["/data/train"],
         "kodak": "/data/kodak", "limit": None, "threads": 1, "jobs": 2, "device": "cpu"}
    return {**s, **overrides}


def test_deltas_summary_tables_and_render_study():
    docs = {"hpcm-tiny": _doc("hpcm-tiny", [(2, 0.30, 28.0), (4, 0.60, 31.0)]),
            "hpcm-phase1-tiny": _doc("hpcm-phase1-tiny", [(2, 0.27, 28.2), (4, 0.57, 31.2)])}
    deltas = ps.per_quality_deltas(docs["hpcm-tiny"], docs["hpcm-phase1-tiny"])
    assert [d["quality"] for d in deltas] == [2, 4]
    assert deltas[0]["dbpp_pct"] == pytest.approx(-10.0) and deltas[0]["dpsnr_db"] == pytest.approx(0.2)
    profiles = {"hpcm-tiny": {"row": {"params": 1_500_000, "kmacs_per_pixel": 40.0,
                                      "times": {"compress": 0.5, "decompress": 0.6},
                                      "peak_mib": {"compress": 100.0, "decompress": 120.0}}}}
    trains = {"hpcm-tiny": {2: {"seconds": 10.0, "final_train": {"loss": 3.0}}}}
    summary = ps.build_summary(docs, profiles, trains)
    assert "bd" not in summary["variants"]["hpcm-tiny"]
    assert summary["variants"]["hpcm-phase1-tiny"]["bd"]["bd_rate"] < 0
    assert summary["variants"]["hpcm-phase1-tiny"]["bd"]["vs_noise"] == "unknown"  # no seed spread given
    table = ps.results_table(summary)
    assert "| hpcm-tiny | 1.500 | 40.0 | 0.3000 / 0.6000 | 28.00 / 31.00 | anchor |" in table
    assert "(2-pt)" in table and "| — | — |" in table  # phase1 has no profile row
    assert "-10.0 %" in ps.deltas_table(summary)
    settings = {"variants": ["hpcm-tiny", "hpcm-phase1-tiny"], "qualities": [2, 4], "steps": 5,
                "batch_size": 8, "patch_size": 128, "lr": 1e-4, "seed": 0, "threads": 1, "jobs": 1,
                "limit": None, "init_from": None, "profile_size": [512, 768], "profile_repeat": 3}
    study = {"settings": settings, "machine": ps.machine_info(), "command": "x"}
    text = ps.render_study(summary, study, raw_dir_name="phase_study")
    assert "| hpcm-phase1-tiny |" in text and "cannot" in text and study["machine"]["cpu_model"] in text
    assert "from scratch" in text
    empty = ps.render_study(None, study, raw_dir_name="phase_study")
    assert "has not been run yet" in empty and "| hpcm-tiny |" not in empty
    assert "Warm start" in ps.protocol_text({**settings, "init_from": "w-q{q}.safetensors"})


def test_driver_report_only_and_resume_guard(tmp_path):
    out, report = tmp_path / "out", tmp_path / "r" / "phase_study.md"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    argv = [sys.executable, str(ROOT / "experiments" / "phase_study.py"), "--out", str(out),
            "--report", str(report), "--variants", "hpcm-tiny", "--steps", "10", "--variable-rate"]
    res = subprocess.run([*argv, "--report-only"], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    text = report.read_text()
    assert "NOT reached" in text and "--steps 10" in text and "## Cost at Base widths" in text
    assert not (tmp_path / "r" / "phase_study").exists()  # nothing measured: no raw folder
    ps.write_json(out / "study.json", {"settings": {}})
    res = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 1 and "--resume" in res.stderr  # an existing study needs --resume


def test_merge_points_keeps_order():
    a = _doc("v", [(2, 0.3, 28.0)])
    b = _doc("v", [(4, 0.6, 31.0)])
    merged = ps.merge_points("v", [a, b])
    assert merged["quality"] == [2, 4] and merged["results"]["bpp"] == [0.3, 0.6]
    assert len(merged["per_image"]) == 2 and not math.isnan(merged["results"]["psnr-rgb"][1])


def test_arms_runs_and_train_command(tmp_path):
    s = _study()
    arms = ps.study_arms(s)
    assert arms[:2] == [("hpcm-tiny", 1), ("hpcm-tiny", 2)] and len(arms) == 7  # baseline twice, 5 others
    assert len(ps.study_arms({**s, "all_seeds": True})) == 12
    assert ps.arm_label("hpcm-tiny", 2, s) == "hpcm-tiny@seed2"
    assert ps.arm_label("hpcm-tiny", 1, s) == "hpcm-tiny"
    assert ps.run_dir(tmp_path, "hpcm-tiny", 2, 5) == tmp_path / "hpcm-tiny" / "seed2" / "q5"
    init = {"5": {"path": "/w/init-q5.safetensors", "sha256": "ab"}}
    cmd = ps.train_command(s, tmp_path, "hpcm-phase2-tiny", 1, 5, resume=False, python="py", init_files=init)
    opt = {cmd[i]: cmd[i + 1] for i in range(len(cmd) - 1) if cmd[i].startswith("--")}
    assert opt["--patch-size"] == "256" and opt["--quality"] == "5" and opt["--seed"] == "1"
    assert opt["--val-holdout"] == "16" and opt["--val-every"] == "10" and "--val" not in cmd
    assert opt["--init-from"] == "/w/init-q5.safetensors" and opt["--model"] == "hpcm-phase2-tiny"
    assert "--init-from" not in ps.train_command(s, tmp_path, "hpcm-tiny", 1, 5, resume=True, python="py",
                                                 init_files=init)
    st = ps.train_settings(s, "hpcm-tiny", 2, 5, init)
    assert st["seed"] == 2 and st["lmbda"] == pytest.approx(0.025) and st["init_from"]["sha256"] == "ab"
    vr = {**s, "variable_rate": True}
    assert ps.train_qualities(vr) == [None] and ps.run_dir(tmp_path, "a", 1, None).name == "vr"
    cmd = ps.train_command(vr, tmp_path, "hpcm-phase2-tiny", 1, None, resume=False, python="py")
    assert "--quality" not in cmd and cmd[cmd.index("--model") + 1] == "hpcm.eval.study:vr:hpcm-phase2-tiny"
    est = ps.budget_estimate(s, {v: 0.01 for v in s["variants"][:-1]},
                             done_steps={"hpcm-tiny/seed1/q2": 100})
    assert est["runs"] == 14 and est["missing_speed"] == ["hpcm-multiref-phase2-tiny"]
    assert est["cpu_hours"] == pytest.approx(11 * 100 / 0.01 / 3600)
    assert est["cpu_hours_total"] == pytest.approx(12 * 100 / 0.01 / 3600)  # from step 0, done or not


def test_variable_rate_factory_through_the_trainer_hook():
    from hpcm.train.trainer import build_model

    model = build_model("hpcm.eval.study:vr:hpcm-tiny")
    assert model.quality_gains is not None and model.preset == "hpcm-tiny+vr"
    assert model.config.rate_lambdas[0] == pytest.approx(0.0018)
    with pytest.raises(AttributeError):
        ps.__getattr__("nothing")


def test_convergence_from_the_validation_log():
    log = [{"split": "val", "step": st, "psnr": p, "bpp": b, "loss": lo}
           for st, p, b, lo in [(20, 27.0, 0.30, 1.0), (80, 28.00, 0.300, 0.80), (90, 28.02, 0.301, 0.79),
                                (100, 28.03, 0.301, 0.79)]]
    c = ps.convergence(log)
    assert c["from_step"] == 80 and c["to_step"] == 100 and c["converged"] is True
    assert c["per_quality"][0]["dpsnr_db"] == pytest.approx(0.03)
    moving = [*log[:-1], {"split": "val", "step": 100, "psnr": 28.2, "bpp": 0.30, "loss": 0.7}]
    assert ps.convergence(moving)["converged"] is False
    assert ps.convergence(log[-1:])["converged"] is None  # nothing at or before 80 % of the steps
    assert ps.convergence([])["note"] == "no validation in the log"
    vr = [{"step": st, "q1/psnr": p, "q1/bpp": 0.1, "q1/loss": 1.0, "q2/psnr": p + 2, "q2/bpp": b,
           "q2/loss": 1.0, "psnr": p + 1} for st, p, b in [(40, 26.0, 0.2), (100, 26.01, 0.25)]]
    c = ps.convergence(vr)
    assert [r["quality"] for r in c["per_quality"]] == ["q1", "q2"]
    assert c["converged"] is False  # q2's bpp moved by +25 %
    train = [{"split": "train", "step": st, "lr": lr} for st, lr in [(60, 1e-4), (80, 1e-4), (90, 1e-5)]]
    assert ps.convergence(log, train_log=train)["lr_window"] == [1e-5, 1e-4]  # the rate at step 80 counts
    assert ps.convergence(log, train_log=train[2:])["lr_window"] == [1e-5, 1e-5]
    assert "lr_window" not in ps.convergence(log)


def test_seed_spread_marks_bd_rates():
    base1 = _doc("hpcm-tiny", [(2, 0.30, 28.0), (5, 0.60, 31.0)])
    base2 = _doc("hpcm-tiny@seed2", [(2, 0.305, 28.02), (5, 0.61, 31.0)])
    noise = ps.seed_spread([base1, base2])
    assert noise["seeds"] == 2 and 0 < noise["bd_rate_abs"] < 5
    assert noise["dpsnr_abs_db"] == pytest.approx(0.02)
    assert ps.seed_spread([base1]) is None
    far = _doc("far", [(2, 0.25, 28.3), (5, 0.50, 31.3)])
    near = _doc("near", [(2, 0.301, 28.0), (5, 0.601, 31.0)])
    summary = ps.build_summary({"hpcm-tiny": base1, "far": far, "near": near}, {}, {}, noise=noise)
    assert summary["variants"]["far"]["bd"]["vs_noise"] == "exceeds"
    assert summary["variants"]["near"]["bd"]["vs_noise"] == "within"
    assert "exceeds the seed spread" in ps.results_table(summary)


def _cost_doc() -> dict:
    env = {"device": "cpu", "cpu_model": "Test CPU", "logical_cpus": 2, "torch_threads": 1, "torch": "x"}
    rows = []
    for name, enc, dec, pe, pd in [("hpcm-base", 10.0, 12.0, 400.0, 500.0),
                                   ("hpcm-phase2", 13.0, 12.0, 300.0, 600.0),
                                   ("hpcm-multiref-phase2", 11.0, 13.2, 420.0, 520.0)]:
        rows.append({"model": name, "width": 768, "height": 512, "encode_s": 3 * enc, "decode_s": 3 * dec,
                     "encode_cpu_s": enc, "decode_cpu_s": dec,
                     "peak_encode_mib": pe, "peak_decode_mib": pd, "params": 68.5e6,
                     "kmacs_per_pixel": 918.6, "deterministic": True})
    return {"baseline": "hpcm-base", "environment": env, "repeat": 1, "warmup": 1, "rows": rows,
            "loadavg_start": [4.0, 4.0, 4.0], "loadavg_end": [5.0, 5.0, 5.0], "note": "busy machine."}


def test_cost_table_and_claims_paragraph():
    table = ps.cost_table(_cost_doc())
    assert "Base widths (M=320, N=256)" in table and "busy machine." in table
    row = ("| hpcm-phase2 | 768×512 | 68.50 | 918.6 (+0 %) | 13.00 / 39.00 | 12.00 / 36.00 | 300 / 600 | "
           "+30 % / +0 % | -25 % / +20 % |")
    assert row in table and "Δ CPU time enc / dec" in table
    wall_only = _cost_doc()
    for r in wall_only["rows"]:
        del r["encode_cpu_s"], r["decode_cpu_s"]
    assert "| — / 39.00 |" in ps.cost_table(wall_only) and "Δ time enc / dec" in ps.cost_table(wall_only)
    assert "time −35 %" in table and "rd −5…−8 % BD-rate" in table
    text = ps.claims_paragraph(_cost_doc(), None, rd_reached=False)
    assert "time claim is **not borne out**" in text and "memory claim is **not borne out**" in text
    assert "CPU time +30 % (encode)" in text
    assert "not answered yet" in text and "+10 % / +10 %" in text


def test_render_report_states_the_budget_is_not_reached():
    s = _study()
    speed = {"steps_per_s": {v: 0.05 for v in s["variants"]}, "note": "busy"}
    current = {"settings": s, "command": "python experiments/phase_study.py --jobs 2",
               "speed": speed, "estimate": ps.budget_estimate(s, speed["steps_per_s"]),
               "convergence": {"hpcm-tiny/seed1/q2": ps.convergence([])}}
    prev = {"hpcm-tiny": _doc("hpcm-tiny", [(2, 0.3, 28.0), (5, 0.6, 31.0)])}
    prev_summary = ps.build_summary(prev, {}, {})
    prev_study = {"settings": {"variants": ["hpcm-tiny"], "qualities": [2, 5], "steps": 200,
                               "batch_size": 8, "patch_size": 128, "lr": 3e-4, "seed": 1, "threads": 1,
                               "jobs": 2, "limit": None, "init_from": None, "profile_size": [512, 768],
                               "profile_repeat": 3},
                  "machine": {"cpu_model": "Test CPU"}, "command": "old"}
    text = ps.render_report(current, _cost_doc(), (prev_summary, prev_study), raw_dir_name="phase_study")
    assert "**The RD budget of issue 20 (item 1) is NOT reached.**" in text
    assert "python experiments/phase_study.py --jobs 2 --resume" in text
    assert "20.0 s/step" in text and "Measured CPU time per training step" in text
    assert "## Cost at Base widths" in text and "## The seeds' claims" in text
    assert "## Session 2" in text and "### Results" in text and "\n## Results" not in text
    assert "held out of training" in text and "never Kodak" in text
    assert "--seeds 1 --val-holdout 0" in text and "--report runs/phase_study.md" in text


def test_render_report_reached_with_a_warm_start_says_what_the_criterion_means():
    s = _study(variants=["hpcm-tiny", "hpcm-phase2-tiny"])
    pts = [(2, 0.3, 28.0), (5, 0.6, 31.0)]
    docs = {"hpcm-tiny": _doc("hpcm-tiny", pts),
            "hpcm-tiny@seed2": _doc("hpcm-tiny@seed2", [(q, b * 1.002, p) for q, b, p in pts]),
            "hpcm-phase2-tiny": _doc("hpcm-phase2-tiny", [(q, b * 1.02, p) for q, b, p in pts])}
    noise = ps.seed_spread([docs["hpcm-tiny"], docs["hpcm-tiny@seed2"]])
    summary = ps.build_summary(docs, {}, {}, baseline="hpcm-tiny", noise=noise)
    flat = [{"step": 80, "psnr": 28.0, "bpp": 0.3, "loss": 1.0}, {"step": 100, "psnr": 28.01, "bpp": 0.3,
                                                                   "loss": 1.0}]
    moving = [{"step": 80, "psnr": 27.0, "bpp": 0.4, "loss": 1.2}, {"step": 100, "psnr": 27.2, "bpp": 0.38,
                                                                     "loss": 1.1}]
    conv = {"hpcm-tiny/seed1/q2": ps.convergence(flat), "hpcm-tiny/seed2/q2": ps.convergence(flat),
            "hpcm-phase2-tiny/seed1/q2": ps.convergence(moving)}
    speed = {"steps_per_s": {v: 0.5 for v in s["variants"]}, "note": "quiet"}
    done = {f"{v}/seed{k}/q{q}": 100 for v, k in ps.study_arms(s) for q in (2, 5)}
    current = {"settings": s, "command": "python experiments/phase_study.py", "summary": summary,
               "convergence": conv, "speed": speed, "steps": done,
               "estimate": ps.budget_estimate(s, speed["steps_per_s"], done_steps=done)}
    text = ps.render_report(current, None, None, raw_dir_name="phase_study")
    assert "CPU-hours** (one core per run, validation not included), all of them run" in text
    assert "The RD budget of issue 20 is reached" in text and "upper bound at this budget" in text
    assert "at the budget where the baseline has stopped moving" in text
    assert "Still moving" in text and "`hpcm-phase2-tiny`" in text
    cold = ps.render_report({**current, "settings": {**s, "init_from": None}}, None, None,
                            raw_dir_name="phase_study")
    assert "is reached" in cold and "upper bound" not in cold


def test_narrow_overlap_is_flagged():
    base = _doc("base", [(2, 0.15, 25.02), (5, 0.25, 25.24)])
    near = _doc("near", [(2, 0.146, 25.18), (5, 0.254, 25.27)])  # per-λ: ±3 % bpp, +0.03..0.16 dB
    bd = ps.bd_vs_baseline(base, near)
    assert bd["narrow"] and bd["overlap_width_db"] == pytest.approx(0.06) and "per-λ" in bd["note"]
    wide = ps.bd_vs_baseline(_doc("b", [(2, 0.30, 28.0), (4, 0.60, 31.0)]),
                             _doc("t", [(2, 0.32, 28.3), (4, 0.62, 31.1)]))
    assert "narrow" not in wide
    summary = ps.build_summary({"base": base, "near": near}, {}, {}, baseline="base")
    assert "overlap: noise" in ps.results_table(summary)


def test_gpu_cost_import_and_table():
    from hpcm.eval import study as S

    def row(model, enc, dec, peak=200.0):
        return {"model": model, "encode": {"median_s": enc}, "decode": {"median_s": dec},
                "encode_peak_MiB": peak, "decode_peak_MiB": peak, "bpp": 0.1, "extra": 1}

    results = {"meta": {"device_name": "GPU X", "torch": "2.x", "date_utc": "2026-01-01T00:00:00Z"},
               "sections": {"codec": {"data": {
                   "rows": [row("hpcm-base", 0.10, 0.08), row("hpcm-phase2", 0.12, 0.04, 100.0),
                            {"model": "hpcm-phase4", "error": "boom"}],
                   "rows_1536x1024": [row("hpcm-base", 0.4, 0.3)]}}}}
    doc = S.gpu_cost_from_suite(results, "x/results.json")
    assert list(doc["sizes"]) == ["768x512", "1536x1024"]
    assert [r["model"] for r in doc["sizes"]["768x512"]] == ["hpcm-base", "hpcm-phase2"]
    assert "extra" not in doc["sizes"]["768x512"][0]
    table = S.gpu_cost_table(doc)
    assert "| hpcm-phase2 | 768×512 | 120.0 | 40.0 | 100 / 100 | +20 % / -50 % | -50 % |" in table
    assert table.index("| hpcm-base | 768×512") < table.index("| hpcm-base | 1536×1024")
    assert "decode -50 %, encode +20 %, peak memory -50 %" in S.gpu_phase2_sentence(doc)
    with pytest.raises(ValueError):
        S.gpu_cost_from_suite({"sections": {}}, "empty.json")


def test_pack_and_unpack_run_folders(tmp_path, monkeypatch):
    """What a GPU slot brings back: one tar per run, cut under 15 MiB, ≤ 8 files; restored byte for byte."""
    out = tmp_path / "out"
    runs = [("hpcm-tiny", 1, None), ("hpcm-phase4-tiny", 1, None)]
    rng = np.random.default_rng(0)
    for v, seed, q in runs:
        run = ps.run_dir(out, v, seed, q)
        run.mkdir(parents=True)
        (run / "model.safetensors").write_bytes(rng.bytes(3000 if v == "hpcm-tiny" else 30000))
        (run / "train.done.json").write_text('{"x": 1}')
        (run / "checkpoint_last.safetensors").write_bytes(b"adam")  # not packed
    ps.write_json(out / "study.json", {"settings": {}})
    monkeypatch.setattr(ps, "PACK_PART", 12000)  # tars come in blocks of 10240 bytes
    files = ps.pack_run_folders(out, runs, tmp_path / "pack")
    names = sorted(p.name for p in files)
    assert "hpcm-tiny-seed1-vr.tar" in names and "study.json" in names
    parts = [n for n in names if n.startswith("hpcm-phase4")]
    assert len(parts) >= 3
    assert parts == [f"hpcm-phase4-tiny-seed1-vr.tar.part{i:02d}" for i in range(len(parts))]
    back = tmp_path / "back"
    assert ps.unpack_run_folders(tmp_path / "pack", back) == 2
    for v, seed, q in runs:
        a, b = ps.run_dir(out, v, seed, q), ps.run_dir(back, v, seed, q)
        assert (b / "model.safetensors").read_bytes() == (a / "model.safetensors").read_bytes()
        assert (b / "train.done.json").exists() and not (b / "checkpoint_last.safetensors").exists()
    monkeypatch.setattr(ps, "PACK_FILES", 2)
    with pytest.raises(ps.StudyError):
        ps.pack_run_folders(out, runs, tmp_path / "pack2")
    import tarfile

    bad = tmp_path / "bad"
    bad.mkdir()
    with tarfile.open(bad / "x.tar", "w") as tar:
        tar.add(out / "study.json", arcname="../escape/model.json")
    with pytest.raises(ps.StudyError):
        ps.unpack_run_folders(bad, tmp_path / "back2")


def test_rd_claims_read_phase2_and_the_bank_against_the_seed_spread():
    pts = [(q, 0.1 * q, 25.0 + q) for q in (1, 2, 3, 4)]
    docs = {"hpcm-tiny": _doc("hpcm-tiny", pts),
            "hpcm-tiny@seed2": _doc("hpcm-tiny@seed2", [(q, b * 1.01, p) for q, b, p in pts]),
            "hpcm-phase2-tiny": _doc("hpcm-phase2-tiny", [(q, b, p + 0.4) for q, b, p in pts]),
            "hpcm-multiref-phase2-tiny": _doc("hpcm-multiref-phase2-tiny",
                                              [(q, b * 0.99, p) for q, b, p in pts]),
            "hpcm-phase4-tiny": _doc("hpcm-phase4-tiny", [(q, b * 1.5, p - 1) for q, b, p in pts])}
    noise = ps.seed_spread([docs["hpcm-tiny"], docs["hpcm-tiny@seed2"]])
    summary = ps.build_summary(docs, {}, {}, baseline="hpcm-tiny", noise=noise)
    moving = {"hpcm-phase4-tiny/seed1/vr": {"converged": False}, "hpcm-tiny/seed1/vr": {"converged": True}}
    text = ps.claims_paragraph(None, summary, rd_reached=False, conv=moving)
    assert "provisional" in text and "+0.400 dB PSNR at equal quality" in text
    assert "Phase 2 (claimed +0.3 dB)" in text and "the claim is **met** at this budget." in text
    # the bank's −1 % is within the 1 % spread and short of −5 %: not borne out
    assert "(claimed -8…-5 % BD-rate): BD-rate -1.00 % (within the seed spread)" in text
    assert "**not borne out**" in text.split("Multi-reference")[1]
    assert "Other arms: hpcm-phase4-tiny BD-rate" in text
    assert "Still moving" in text and "`hpcm-phase4-tiny`" in text
    reached = ps.claims_paragraph(None, summary, rd_reached=True, conv={})
    assert "where the baseline has stopped moving" in reached and "Still moving" not in reached
    base_moving = ps.claims_paragraph(None, summary, rd_reached=False,
                                      conv={"hpcm-tiny/seed1/vr": {"converged": False}})
    assert "the baseline included" in base_moving


def test_plot_deltas_marks_an_arm_far_beyond_the_rest(tmp_path, monkeypatch):
    import matplotlib.axes

    from hpcm.eval.plot import plot_deltas

    pts = [(q, 0.1 * q, 25.0 + q) for q in (1, 2, 3)]
    docs = {"hpcm-tiny": _doc("hpcm-tiny", pts),
            "hpcm-tiny@seed2": _doc("hpcm-tiny@seed2", [(q, b * 1.01, p) for q, b, p in pts]),
            "hpcm-phase1-tiny": _doc("hpcm-phase1-tiny", [(q, b * 1.02, p - 0.1) for q, b, p in pts]),
            "hpcm-phase4-tiny": _doc("hpcm-phase4-tiny", [(q, b * 1.6, p - 1) for q, b, p in pts])}
    summary = ps.build_summary(docs, {}, {}, baseline="hpcm-tiny",
                               noise=ps.seed_spread([docs["hpcm-tiny"], docs["hpcm-tiny@seed2"]]))
    labels: list[str] = []
    real_plot = matplotlib.axes.Axes.plot
    monkeypatch.setattr(matplotlib.axes.Axes, "plot",
                        lambda self, *a, **k: labels.append(k.get("label")) or real_plot(self, *a, **k))
    out = plot_deltas(summary, tmp_path / "d.png", title="t")
    assert out.stat().st_size > 1000
    assert labels.count("hpcm-phase4-tiny (off scale)") == 2 and labels.count("hpcm-phase1-tiny") == 2
