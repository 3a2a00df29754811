"""``hpcm compress | decompress | info | demo`` end to end on Kodak (hpcm-tiny, CPU)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hpcm.cli.main import main
from hpcm.codec import container
from hpcm.codec.api import decompress_image
from hpcm.codec.image_io import read_image
from hpcm.models.io import load_model, save_weights

HPCM_SCRIPT = Path(sys.executable).parent / "hpcm"


@pytest.fixture(scope="module")
def kodak_image(kodak_dir) -> Path:
    path = kodak_dir / "kodim23.png"
    if not path.is_file():
        pytest.skip(f"Kodak not found at {kodak_dir}")
    return path


@pytest.fixture
def kodak_crop(kodak_image, tmp_path) -> Path:
    """A 70x90 crop of kodim23 (not a multiple of 64), saved as PNG."""
    arr = read_image(kodak_image)[200:270, 300:390]
    path = tmp_path / "crop.png"
    Image.fromarray(arr).save(path)
    return path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc: int, err: str, pattern: str) -> None:
    assert rc == 1
    lines = [line for line in err.splitlines() if line.startswith("hpcm: error:")]
    assert len(lines) == 1, err
    assert pattern in lines[0], err
    assert "Traceback" not in err


def test_compress_with_latent_refinement(kodak_crop, tmp_path, capsys):
    out = tmp_path / "r.hpcm"
    rc, stdout, err = run(capsys, "compress", kodak_crop, "-o", out, "--model", "hpcm-tiny-vr",
                          "--quality", "7", "--refine", "3")
    assert rc == 0, err
    assert "latent refinement" in stdout and "3 steps" in stdout
    rc, _, err = run(capsys, "decompress", out, "-o", tmp_path / "r.png")
    assert rc == 0, err
    with pytest.raises(SystemExit):  # argparse refuses
        main(["compress", str(kodak_crop), "-o", str(tmp_path / "x.hpcm"), "--refine", "-2"])
    assert "--refine: must be at least 0" in capsys.readouterr().err


def test_full_kodak_image_in_process_then_console_script(kodak_image, tmp_path, capsys):
    out = tmp_path / "k.hpcm"
    rc, stdout, err = run(capsys, "compress", kodak_image, "-o", out, "--quality", "2")  # default model
    assert rc == 0, err
    assert "768x512" in stdout and "bpp" in stdout and "encode" in stdout
    assert "hpcm-small-vr q2 " in stdout  # the shipped variable-rate model at quality 2
    assert "UNTRAINED" not in err and "note: weights hpcm-small-vr" in err
    png = tmp_path / "k.png"
    proc = subprocess.run(
        [str(HPCM_SCRIPT), "decompress", str(out), "-o", str(png)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "decode" in proc.stdout
    decoded = read_image(png)
    assert decoded.shape == (512, 768, 3)
    # another process (default threads: the cores it may use; this one runs 1 thread) loaded the shipped q2
    # weights named in the header and decoded the same latent (checked exactly by the latent checksum);
    # the pixels after g_s may differ by ±1 between thread counts
    expected = decompress_image(out.read_bytes(), load_model("hpcm-small-vr"))
    assert np.abs(decoded.astype(np.int16) - expected.astype(np.int16)).max() <= 1


def test_verify_info_and_default_names(kodak_crop, capsys):
    rc, stdout, err = run(capsys, "compress", kodak_crop, "--model", "hpcm-tiny", "--verify")
    assert rc == 0, err
    assert "verify" in stdout and "matches" in stdout
    hpcm_file = kodak_crop.with_suffix(".hpcm")
    rc, stdout, _ = run(capsys, "info", hpcm_file)
    assert rc == 0 and "hpcm-tiny" in stdout and "90x70 (W x H)" in stdout and "recon_crc" in stdout
    rc, stdout, _ = run(capsys, "info", hpcm_file, "--json")
    info = json.loads(stdout)
    assert info["size"] == [70, 90] and info["padded_size"] == [128, 128]
    assert info["bpp"] == pytest.approx(8 * hpcm_file.stat().st_size / (70 * 90))
    rc, stdout, err = run(capsys, "decompress", hpcm_file, "-o", kodak_crop.with_name("out.png"))
    assert rc == 0, err
    assert read_image(kodak_crop.with_name("out.png")).shape == (70, 90, 3)


def test_decompress_threads_and_corrupt_latent(kodak_crop, tmp_path, capsys):
    from hpcm.codec import container

    out = tmp_path / "t.hpcm"
    assert run(capsys, "compress", kodak_crop, "-o", out, "--model", "hpcm-tiny")[0] == 0
    info = json.loads(run(capsys, "info", out, "--json")[1])
    assert info["version"] == 5 and info["latent_crc"] and len(info["stream_lengths"]) == 3
    assert info["side_tolerances"] == "sigma 0.00015, mu 3e-05"  # a small file: the narrowest μ band
    for threads in ("1", "2"):
        rc, _, err = run(capsys, "decompress", out, "-o", tmp_path / f"t{threads}.png", "--threads", threads)
        assert rc == 0, err
    with pytest.raises(SystemExit):  # argparse refuses
        run(capsys, "decompress", out, "-o", tmp_path / "bad.png", "--threads", "0")
    assert "--threads: must be at least 1" in capsys.readouterr().err
    header, streams = container.unpack(out.read_bytes())
    header.latent_crc ^= 0x10
    forged = tmp_path / "forged.hpcm"
    forged.write_bytes(container.pack(header, streams))
    rc, _, err = run(capsys, "decompress", forged, "-o", tmp_path / "f.png")
    assert_one_line_error(rc, err, "latent checksum")
    assert not (tmp_path / "f.png").exists()


def test_force_protects_existing_files(kodak_crop, tmp_path, capsys):
    out = tmp_path / "c.hpcm"
    assert run(capsys, "compress", kodak_crop, "-o", out, "--model", "hpcm-tiny")[0] == 0
    first = out.read_bytes()
    rc, _, err = run(capsys, "compress", kodak_crop, "-o", out, "--model", "hpcm-tiny", "--padding", "zeros")
    assert_one_line_error(rc, err, "--force")
    assert out.read_bytes() == first
    rc, _, err = run(capsys, "compress", kodak_crop, "-o", out, "--model", "hpcm-tiny", "--padding", "zeros",
                     "--force")
    assert rc == 0, err
    assert out.read_bytes() != first
    png = tmp_path / "c.png"
    png.write_bytes(b"precious")
    rc, _, err = run(capsys, "decompress", out, "-o", png)
    assert_one_line_error(rc, err, "--force")
    assert png.read_bytes() == b"precious"
    assert run(capsys, "decompress", out, "-o", png, "--force")[0] == 0
    assert read_image(png).shape == (70, 90, 3)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: b"", "bad magic"),
        (lambda d: b"GIF89a" + d, "bad magic"),
        (lambda d: d[:4] + b"\x09" + d[5:], "unsupported .hpcm format version 9"),
        (lambda d: d[: len(d) // 2], "truncated"),
        (lambda d: d[:-30] + bytes([d[-30] ^ 0x10]) + d[-29:], "checksum"),
    ],
)
def test_bad_files_give_one_line_errors(kodak_crop, tmp_path, capsys, mutate, message):
    good = tmp_path / "g.hpcm"
    assert run(capsys, "compress", kodak_crop, "-o", good, "--model", "hpcm-tiny")[0] == 0
    bad = tmp_path / "bad.hpcm"
    bad.write_bytes(mutate(good.read_bytes()))
    rc, _, err = run(capsys, "decompress", bad, "-o", tmp_path / "bad.png")
    assert_one_line_error(rc, err, message)
    assert not (tmp_path / "bad.png").exists()
    rc, _, err = run(capsys, "info", bad)
    assert_one_line_error(rc, err, message)


def test_missing_and_unreadable_inputs(kodak_crop, tmp_path, capsys):
    rc, _, err = run(capsys, "decompress", tmp_path / "none.hpcm")
    assert_one_line_error(rc, err, "no such file")
    (tmp_path / "x.png").write_bytes(b"no image")
    rc, _, err = run(capsys, "compress", tmp_path / "x.png", "--model", "hpcm-tiny")
    assert_one_line_error(rc, err, "not an image")
    rc, _, err = run(capsys, "compress", kodak_crop, "-o", tmp_path / "y.hpcm", "--model", "no-such-model")
    assert_one_line_error(rc, err, "unknown model")
    rc, _, err = run(capsys, "compress", kodak_crop, "-o", tmp_path / "y.hpcm", "--device", "cuda:0")
    assert rc == 1 and "Traceback" not in err


def test_checkpoint_identity(kodak_crop, tmp_path, capsys):
    model = load_model("hpcm-tiny")
    with torch.no_grad():
        model.means_hyper.add_(0.5)
    model.weights_info = {"preset": "hpcm-tiny", "quality": 4}
    weights = save_weights(model, tmp_path / "mine.safetensors", {"lambda": 0.013})
    out = tmp_path / "m.hpcm"
    rc, stdout, err = run(capsys, "compress", kodak_crop, "-o", out, "--checkpoint", weights)
    assert rc == 0, err
    assert "q4" in stdout and "UNTRAINED" not in err
    rc, _, err = run(capsys, "decompress", out, "-o", tmp_path / "a.png")
    assert_one_line_error(rc, err, "with weights")  # the preset's own weights differ
    rc, _, err = run(capsys, "decompress", out, "-o", tmp_path / "a.png", "--checkpoint", weights)
    assert rc == 0, err
    # a file claiming a model that is not a preset
    header, streams = container.unpack(out.read_bytes())
    header.preset = "my-model"
    (tmp_path / "x.hpcm").write_bytes(container.pack(header, streams))
    rc, _, err = run(capsys, "decompress", tmp_path / "x.hpcm", "-o", tmp_path / "x.png")
    assert_one_line_error(rc, err, "--checkpoint")


def test_transparency_refused_unless_asked(tmp_path, capsys):
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., 3] = 128
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    rc, _, err = run(capsys, "compress", tmp_path / "t.png", "--model", "hpcm-tiny")
    assert_one_line_error(rc, err, "transparency")
    rc, _, err = run(capsys, "compress", tmp_path / "t.png", "--model", "hpcm-tiny", "--alpha", "white")
    assert rc == 0, err
    assert "white" in err


def test_demo(kodak_crop, tmp_path, capsys, no_bundled_weights):
    rc, stdout, err = run(capsys, "demo", kodak_crop, "--model", "hpcm-tiny", "--out-dir", tmp_path / "d")
    assert rc == 0, err
    assert "UNTRAINED" in stdout and "PSNR" in stdout and "bpp" in stdout and "decode" in stdout
    assert (tmp_path / "d" / "crop.hpcm").is_file() and (tmp_path / "d" / "crop.decoded.png").is_file()


@pytest.mark.parametrize("command", ["compress", "decompress", "info", "demo"])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert "usage: hpcm " + command in capsys.readouterr().out


def test_several_files_one_model_load(kodak_image, tmp_path, capsys):
    arr = read_image(kodak_image)
    srcs = []
    for i, (y, x) in enumerate([(0, 0), (100, 200), (300, 500)]):
        srcs.append(tmp_path / f"img{i}.png")
        Image.fromarray(arr[y : y + 48, x : x + 64]).save(srcs[-1])
    (tmp_path / "bad.png").write_bytes(b"not an image")
    rc, stdout, err = run(capsys, "compress", *srcs, tmp_path / "bad.png", "--model", "hpcm-tiny-vr",
                          "--quality", "4")
    assert rc == 1  # one failed, the others were written
    assert err.count("hpcm: error:") == 1 and f"{tmp_path / 'bad.png'}:" in err and "Traceback" not in err
    assert "3 of 4 files done, 1 failed" in stdout and stdout.count("model load") == 1
    assert all(s.with_suffix(".hpcm").is_file() for s in srcs) and not (tmp_path / "bad.hpcm").exists()
    outdir = tmp_path / "out"
    outdir.mkdir()
    rc, stdout, err = run(capsys, "decompress", *(s.with_suffix(".hpcm") for s in srcs), "-o", outdir)
    assert rc == 0, err
    assert "3 of 3 files done" in stdout and stdout.count("model load") == 1
    for s in srcs:
        decoded = read_image(outdir / s.name)
        assert decoded.shape == (48, 64, 3)
        np.testing.assert_array_equal(decoded, decompress_image(s.with_suffix(".hpcm"),
                                                                load_model("hpcm-tiny-vr")))
    # existing outputs are refused before any work (no --force), and -o must be a folder
    rc, _, err = run(capsys, "decompress", *(s.with_suffix(".hpcm") for s in srcs), "-o", outdir)
    assert rc == 1 and "exists" in err and err.count("hpcm: error:") == 1
    rc, _, err = run(capsys, "compress", *srcs, "-o", tmp_path / "x.hpcm")
    assert_one_line_error(rc, err, "must name an existing folder")
    (tmp_path / "sub").mkdir()
    Image.fromarray(arr[:8, :8]).save(tmp_path / "sub" / "img0.png")
    rc, _, err = run(capsys, "compress", srcs[0], tmp_path / "sub" / "img0.png", "-o", outdir, "--force")
    assert_one_line_error(rc, err, "would both be written to")
