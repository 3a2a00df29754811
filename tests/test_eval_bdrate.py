"""BD-rate / BD-PSNR: exact on constructed curves, and the ecosystem spec's numbers on the stored anchors."""

import json
import math

import pytest

from hpcm.eval.bdrate import bd_compare, bd_curves, format_table, monotone_curve


def _doc(name, bpp, psnr):
    return {"name": name, "description": "", "results": {"bpp": list(bpp), "psnr-rgb": list(psnr)}}


RATES = [0.1, 0.2, 0.4, 0.8, 1.6]
PSNRS = [27.0, 29.5, 32.0, 34.2, 36.1]


@pytest.mark.parametrize("method", ["pchip", "cubic", "akima"])
def test_constructed_curves(method):
    rate, dist, _, _ = bd_curves(RATES, PSNRS, RATES, PSNRS, method=method)
    assert rate == pytest.approx(0.0, abs=1e-9) and dist == pytest.approx(0.0, abs=1e-9)
    rate, _, _, _ = bd_curves(RATES, PSNRS, [0.9 * r for r in RATES], PSNRS, method=method)
    assert rate == pytest.approx(-10.0, abs=1e-6)
    _, dist, _, _ = bd_curves(RATES, PSNRS, RATES, [p + 0.5 for p in PSNRS], method=method)
    assert dist == pytest.approx(0.5, abs=1e-6)


def test_monotone_curve_sorts_and_drops():
    r, d, dropped = monotone_curve([0.4, 0.1, 0.2, 0.3], [30.0, 25.0, 27.0, 26.5])
    assert r.tolist() == [0.1, 0.2, 0.4] and d.tolist() == [25.0, 27.0, 30.0] and dropped == 1


def test_no_overlap_is_nan():
    rate, _, _, _ = bd_curves(RATES, PSNRS, RATES, [p + 20 for p in PSNRS])
    assert math.isnan(rate)


def test_cubic_needs_four_points():
    with pytest.raises(ValueError):
        bd_curves(RATES[:3], PSNRS[:3], RATES, PSNRS, method="cubic")


@pytest.mark.parametrize(
    "test_file, anchor_file, method, expected",
    [  # spec/ecosystem.md §4.3
        ("jpeg.json", "vtm.json", "pchip", 208.5),
        ("jpeg2000.json", "vtm.json", "pchip", 98.0),
        ("hm.json", "vtm.json", "pchip", 23.3),
        ("compressai-mbt2018_mse_cuda.json", "vtm.json", "pchip", 11.0),
        ("paper-elic2022_mse.json", "vtm.json", "pchip", -7.0),
        ("vtm.json", "bpg_444_x265_ycbcr.json", "akima", -18.0),
    ],
)
def test_reproduces_spec_table(shared_dir, test_file, anchor_file, method, expected):
    folder = shared_dir / "anchors" / "kodak"
    anchor = json.loads((folder / anchor_file).read_text())
    res = bd_compare(anchor, json.loads((folder / test_file).read_text()), method=method)
    assert res.bd_rate == pytest.approx(expected, abs=0.06)


def test_ms_ssim_metric_and_table(shared_dir):
    folder = shared_dir / "anchors" / "kodak"
    vtm = json.loads((folder / "vtm.json").read_text())
    jpeg = json.loads((folder / "jpeg.json").read_text())
    res = bd_compare(vtm, jpeg, metric="ms-ssim")
    assert res.bd_rate > 50 and res.bd_dist < 0
    paper = json.loads((folder / "paper-elic2022_mse.json").read_text())
    with pytest.raises(KeyError):
        bd_compare(vtm, paper, metric="ms-ssim")
    table = format_table([res])
    assert "BD-MS-SSIM" in table and "JPEG" in table and f"{res.bd_rate:+.2f}" in table


def test_select_points_by_quality():
    from hpcm.eval.results import select_points

    recs = [{"source": f"im{i}", "name": "m", "description": "", "quality": q, "results": {"bpp": 0.1 * q}}
            for q in (1, 2, 3) for i in range(2)]
    doc = {"name": "m", "description": "", "quality": [1, 2, 3],
           "results": {"bpp": [0.1, 0.2, 0.3], "psnr-rgb": [25.0, 27.0, 29.0]}, "per_image": recs}
    sub = select_points(doc, ["3", "2"])  # labels compare as strings; file order is kept
    assert sub["quality"] == [2, 3] and sub["name"] == "m [q=2,3]"
    assert sub["results"] == {"bpp": [0.2, 0.3], "psnr-rgb": [27.0, 29.0]}
    assert [r["quality"] for r in sub["per_image"]] == [2, 2, 3, 3]
    assert doc["quality"] == [1, 2, 3] and len(doc["per_image"]) == 6  # the input is not changed
    with pytest.raises(ValueError, match="no point with quality 7"):
        select_points(doc, [7])
    with pytest.raises(ValueError, match="no per-point 'quality' list"):
        select_points({"name": "a", "description": "", "results": {"bpp": [0.1], "psnr-rgb": [30.0]}}, [1])
