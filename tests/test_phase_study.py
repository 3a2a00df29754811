"""experiments/phase_study.py: markers, BD-rate / delta logic, tables and report on synthetic JSON."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ps():
    spec = importlib.util.spec_from_file_location("phase_study", ROOT / "experiments" / "phase_study.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["phase_study"] = module
    spec.loader.exec_module(module)
    return module


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


def test_markers(ps, tmp_path):
    path = tmp_path / "stage.done.json"
    settings = {"model": "hpcm-tiny", "steps": 3}
    assert not ps.marker_matches(path, settings)
    ps.write_marker(path, settings, seconds=1.5)
    assert ps.marker_matches(path, settings)
    assert not ps.marker_matches(path, {**settings, "steps": 4})
    assert ps.read_json(path)["seconds"] == 1.5
    path.write_text("{torn")
    assert ps.read_json(path) is None and not ps.marker_matches(path, settings)


def test_two_point_bd_rate_is_linear_interpolation(ps):
    base = _doc("base", [(2, 0.30, 28.0), (4, 0.60, 31.0)])
    test = _doc("test", [(2, 0.32, 28.3), (4, 0.62, 31.1)])
    bd = ps.bd_vs_baseline(base, test)
    assert bd["points"] == [2, 2] and bd["note"].startswith("2-point")
    expected = _linear_bd_rate([0.30, 0.60], [28.0, 31.0], [0.32, 0.62], [28.3, 31.1])
    assert bd["bd_rate"] == pytest.approx(expected, abs=1e-3)
    assert bd["overlap_db"] == pytest.approx([28.3, 31.0])


def test_bd_rate_undefined_cases(ps):
    base = _doc("base", [(2, 0.30, 28.0), (4, 0.60, 31.0)])
    apart = _doc("apart", [(2, 0.30, 32.0), (4, 0.60, 34.0)])  # no PSNR overlap
    bd = ps.bd_vs_baseline(base, apart)
    assert bd["bd_rate"] is None and "overlap" in bd["note"]
    flat = _doc("flat", [(2, 0.30, 29.0), (4, 0.60, 28.5)])  # PSNR falls with rate: 1 monotone point
    bd = ps.bd_vs_baseline(base, flat)
    assert bd["bd_rate"] is None and "fewer than 2" in bd["note"]


def test_deltas_summary_tables_and_report(ps, tmp_path):
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
    table = ps.results_table(summary)
    assert "| hpcm-tiny | 1.500 | 40.0 | 0.3000 / 0.6000 | 28.00 / 31.00 | anchor |" in table
    assert "(2-pt)" in table and "| — | — |" in table  # phase1 has no profile row
    assert "-10.0 %" in ps.deltas_table(summary)
    args = ps.parse_args(["--out", str(tmp_path / "out"), "--steps", "5"])
    study = {"settings": ps.study_settings(args), "machine": ps.machine_info(), "command": "x"}
    text = ps.render_report(summary, study, raw_dir_name="phase_study")
    assert "| hpcm-phase1-tiny |" in text and "cannot" in text and study["machine"]["cpu_model"] in text
    empty = ps.render_report(None, study, raw_dir_name="phase_study")
    assert "has not been run yet" in empty and "| hpcm-tiny |" not in empty


def test_resume_guard_and_report_only(ps, tmp_path):
    out, report = tmp_path / "out", tmp_path / "r" / "phase_study.md"
    argv = ["--out", str(out), "--report", str(report), "--variants", "hpcm-tiny"]
    assert ps.main([*argv, "--report-only"]) == 0  # nothing run: protocol only
    assert "has not been run yet" in report.read_text() and not (tmp_path / "r" / "phase_study").exists()
    ps.write_json(out / "study.json", {"settings": {}})
    assert ps.main(argv) == 1  # an existing study needs --resume


def test_merge_points_keeps_order(ps):
    a = _doc("v", [(2, 0.3, 28.0)])
    b = _doc("v", [(4, 0.6, 31.0)])
    merged = ps.merge_points("v", [a, b])
    assert merged["quality"] == [2, 4] and merged["results"]["bpp"] == [0.3, 0.6]
    assert len(merged["per_image"]) == 2 and not math.isnan(merged["results"]["psnr-rgb"][1])


def test_warm_start_settings_command_and_protocol(ps, tmp_path):
    for q in (2, 5):
        (tmp_path / f"init-q{q}.safetensors").write_bytes(bytes([q]) * 10)
    template = str(tmp_path / "init-q{q}.safetensors")
    args = ps.parse_args(["--out", str(tmp_path / "out"), "--init-from", template, "--qualities", "2", "5"])
    s2, s5 = (ps.train_settings(args, "hpcm-phase1-tiny", q) for q in (2, 5))
    assert s2["init_from"]["path"].endswith("init-q2.safetensors")
    assert s2["init_from"]["sha256"] != s5["init_from"]["sha256"]  # per-quality weights, recorded by digest
    cmd = ps.train_command(args, "hpcm-phase1-tiny", 5, resume=False)
    assert cmd[cmd.index("--init-from") + 1] == s5["init_from"]["path"]
    assert "--init-from" not in ps.train_command(args, "hpcm-phase1-tiny", 5, resume=True)
    assert "Warm start" in ps.protocol_text(ps.study_settings(args))
    assert "from scratch" in ps.protocol_text({**ps.study_settings(args), "init_from": None})
    with pytest.raises(SystemExit):  # a missing quality's weights are refused up front
        ps.parse_args(["--init-from", template, "--qualities", "2", "3"])


def test_narrow_overlap_is_flagged(ps):
    base = _doc("base", [(2, 0.15, 25.02), (5, 0.25, 25.24)])
    near = _doc("near", [(2, 0.146, 25.18), (5, 0.254, 25.27)])  # per-λ: ±3 % bpp, +0.03..0.16 dB
    bd = ps.bd_vs_baseline(base, near)
    assert bd["narrow"] and bd["overlap_width_db"] == pytest.approx(0.06) and "per-λ" in bd["note"]
    wide = ps.bd_vs_baseline(_doc("b", [(2, 0.30, 28.0), (4, 0.60, 31.0)]),
                             _doc("t", [(2, 0.32, 28.3), (4, 0.62, 31.1)]))
    assert "narrow" not in wide
    summary = ps.build_summary({"base": base, "near": near}, {}, {}, baseline="base")
    assert "overlap: noise" in ps.results_table(summary)
