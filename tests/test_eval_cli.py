"""The measurement commands through the ``hpcm`` entry point."""

import json

import numpy as np
import pytest
from PIL import Image

from hpcm.cli import measure
from hpcm.cli.main import main
from hpcm.eval.results import load_results


@pytest.fixture(scope="module")
def crops(kodak_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("kodak_cli")
    for name in ("kodim01", "kodim02"):
        with Image.open(kodak_dir / f"{name}.png") as im:
            Image.fromarray(np.asarray(im.convert("RGB"))[:256, :256]).save(folder / f"{name}.png")
    return folder


def test_choices_match_library():
    from hpcm.eval.bdrate import METHODS
    from hpcm.eval.classical import CODECS

    assert measure.CODECS == CODECS and measure.METHODS == METHODS


def test_bench_plot_bdrate(kodak_dir, tmp_path, capsys):
    jpeg = tmp_path / "jpeg.json"
    webp = tmp_path / "webp.json"
    assert main(["bench-codec", "jpeg", str(kodak_dir), "-q", "10,30", "50", "--limit", "2",
                 "-o", str(jpeg)]) == 0
    assert main(["bench-codec", "webp", str(kodak_dir), "-q", "20", "50", "80", "--limit", "2",
                 "-o", str(webp)]) == 0
    doc = load_results(jpeg)
    assert doc["quality"] == [10, 30, 50] and len(doc["per_image"]) == 6
    assert [p["source"] for p in doc["per_image"][:2]] == ["kodim01", "kodim02"]

    png = tmp_path / "rd.png"
    assert main(["plot", str(jpeg), str(webp), "-o", str(png), "--metric", "both", "--select", "jpeg", "webp",
                 "--title", "two images"]) == 0
    assert png.stat().st_size > 10_000
    assert main(["plot", str(jpeg), "-o", str(tmp_path / "b.png"), "--no-anchors"]) == 0

    capsys.readouterr()
    assert main(["bdrate", str(jpeg), str(webp), "--metric", "psnr", "--json"]) == 0
    out = capsys.readouterr().out
    assert "pillow-webp" in out and "BD-rate" in out
    numbers = json.loads(out[out.index("["):])
    assert numbers[0]["test"] == "pillow-webp" and numbers[0]["bd_rate"] < 0  # WebP beats JPEG

    assert main(["bdrate", str(jpeg), str(webp), "--quality", "50,80", "--json"]) == 0
    out = capsys.readouterr().out
    two = json.loads(out[out.index("\n[") + 1:])[0]
    assert two["test"] == "pillow-webp [q=50,80]" and two["bd_rate"] != numbers[0]["bd_rate"]
    assert main(["bdrate", str(jpeg), str(webp), "--quality", "99"]) == 1
    assert "no point with quality 99" in capsys.readouterr().err

    assert main(["bdrate", str(jpeg), str(tmp_path / "missing.json")]) == 1


def test_eval_cli(crops, tmp_path):
    pytest.importorskip("hpcm.codec.api")
    out = tmp_path / "tiny.json"
    argv = ["eval", "hpcm-tiny", str(crops), "--estimate", "--limit", "1", "-o", str(out), "--quiet"]
    assert main(argv) == 0
    doc = load_results(out)
    assert doc["name"] == "hpcm-tiny" and len(doc["per_image"]) == 1
    assert doc["meta"]["points"][0]["trained"] is True and doc["quality"] == [3]  # shipped weights, default q
    assert main(["eval", str(crops)]) == 1
    assert main(["eval", "hpcm-tiny", str(tmp_path / "nowhere")]) == 1
    assert main(["eval", "hpcm-tiny", "-q", "2", str(crops)]) == 1  # -q swallowed the folder: clear error


def test_eval_cli_with_latent_refinement(crops, tmp_path):
    out = tmp_path / "refined.json"
    argv = ["eval", "hpcm-tiny-vr", str(crops), "-q", "8", "--limit", "1", "--refine", "2", "-o", str(out),
            "--quiet"]
    assert main(argv) == 0
    doc = load_results(out)
    assert doc["meta"]["refine_steps"] == 2 and "latent refinement 2 steps" in doc["description"]
    with pytest.raises(SystemExit) as exc:  # argparse refuses, as hpcm compress --refine -1 does
        main(["eval", "hpcm-tiny-vr", str(crops), "--refine", "-1"])
    assert exc.value.code == 2
    assert main(["eval", "hpcm-tiny-vr", str(crops), "--refine", "2", "--estimate"]) == 1


def test_profile_cli(tmp_path, capsys):
    assert main(["profile", "hpcm-tiny", "--sizes", "256", "--repeat", "1", "--no-codec", "-o",
                 str(tmp_path / "prof")]) == 0
    table = capsys.readouterr().out
    assert "| hpcm-tiny | 256×256 |" in table
    assert (tmp_path / "prof" / "profile.json").exists() and (tmp_path / "prof" / "latency.png").exists()
    assert main(["profile", "no-such-model", "--sizes", "256"]) == 1
