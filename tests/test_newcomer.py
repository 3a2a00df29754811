"""Defects and rough edges a new user trips over (issue 17): one small CPU test per fix."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hpcm.cli.main import main
from hpcm.codec.atomic import OutputExistsError, atomic_write_bytes, check_output_path
from hpcm.errors import HPCMError

SRC = Path(__file__).resolve().parents[1] / "src"


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(rc: int, err: str, pattern: str) -> None:
    assert rc == 1, err
    lines = [line for line in err.splitlines() if line.startswith("hpcm: error:")]
    assert len(lines) == 1 and pattern in lines[0], err
    assert "Traceback" not in err


@pytest.fixture
def small_png(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "small.png"
    Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(path)
    return path


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


# -- 1: outputs are regular files --------------------------------------------------------------------
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_output_refuses_fifo_and_directory_even_with_force(tmp_path, small_png, capsys):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for force in (False, True):
        with pytest.raises(HPCMError, match="not a regular file"):
            atomic_write_bytes(fifo, b"x", overwrite=force)
    with pytest.raises(HPCMError, match="is a directory"):
        check_output_path(tmp_path, overwrite=True)
    rc, _, err = run(capsys, "compress", small_png, "-o", fifo, "--force")
    one_line_error(rc, err, "not a regular file")
    assert fifo.is_fifo()
    rc, _, err = run(capsys, "decompress", small_png, "-o", tmp_path, "--force")
    one_line_error(rc, err, "is a directory")


def test_force_replaces_a_symlink_not_its_target(tmp_path):
    target = tmp_path / "target.bin"
    target.write_bytes(b"keep")
    link = tmp_path / "link.hpcm"
    link.symlink_to(target)
    with pytest.raises(OutputExistsError, match="symbolic link"):
        atomic_write_bytes(link, b"new")
    dangling = tmp_path / "dangling.hpcm"
    dangling.symlink_to(tmp_path / "missing")
    with pytest.raises(OutputExistsError):
        atomic_write_bytes(dangling, b"new")
    atomic_write_bytes(link, b"new", overwrite=True)
    assert not link.is_symlink() and link.read_bytes() == b"new"
    assert target.read_bytes() == b"keep"


# -- 2: a closed pipe ends a command quietly ---------------------------------------------------------
@pytest.mark.parametrize("argv", [["models"], ["--help"]])
def test_closed_pipe_is_quiet(argv):
    proc = subprocess.Popen([sys.executable, "-m", "hpcm", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=_env())
    proc.stdout.close()  # the reader is gone before the first line is written (like `| head -0`)
    err = proc.stderr.read().decode()
    rc = proc.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert rc in (0, 141)


# -- 3: bench-codec and eval read images by the same rules, with one-line errors naming the file -----
def _rgba(path: Path) -> Path:
    arr = np.full((16, 16, 4), 200, dtype=np.uint8)
    arr[0, 0, 3] = 0
    Image.fromarray(arr, "RGBA").save(path)
    return path


@pytest.mark.parametrize("command", [["bench-codec", "webp"], ["eval", "hpcm-tiny"]])
def test_unreadable_or_transparent_images_name_the_file(tmp_path, small_png, capsys, command):
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    (bad_dir / "broken.png").write_bytes(b"not an image at all")
    rc, _, err = run(capsys, *command, bad_dir, "--quiet")
    one_line_error(rc, err, "broken.png")
    alpha_dir = tmp_path / "alpha"
    alpha_dir.mkdir()
    _rgba(alpha_dir / "see-through.png")
    rc, _, err = run(capsys, *command, alpha_dir, "--quiet")
    one_line_error(rc, err, "see-through.png")
    assert "transparency" in err


# -- 4: AVIF anchors do not depend on the CPUs the process may use -----------------------------------
def test_avif_bitstream_ignores_cpu_affinity(monkeypatch):
    from hpcm.eval.classical import ClassicalCodec

    rng = np.random.default_rng(1)
    image = np.ascontiguousarray(
        np.repeat(np.repeat(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8), 8, 0), 8, 1))
    codec = ClassicalCodec("avif", chroma="420")
    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no CPU affinity on this platform")
    many = codec.encode(image, 20)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert codec.encode(image, 20) == many


# -- 5: a tiny file claiming a huge image is refused before the network runs -------------------------
@pytest.fixture(scope="module")
def tiny_model():
    from hpcm.models.io import load_model

    return load_model("hpcm-tiny", quality=3)


@pytest.fixture(scope="module")
def flat_file(tiny_model) -> bytes:
    from hpcm.codec.api import encode

    return encode(tiny_model, np.full((64, 64, 3), 128, dtype=np.uint8))[0]


def test_streams_too_short_for_the_claimed_size_are_refused(tiny_model, flat_file, monkeypatch):
    import time

    from hpcm.codec import container
    from hpcm.codec.api import decompress_image
    from hpcm.errors import FormatError

    header, streams = container.unpack(flat_file)
    header.height, header.width = 2048, 8192
    header.padded_height, header.padded_width = 2048, 8192
    header.crop_top = header.crop_left = 0
    header.z_shape = (2048 // 64, 8192 // 64)
    forged = container.pack(header, streams)
    assert len(forged) < 200
    monkeypatch.setattr(type(tiny_model), "decompress", lambda *a, **k: pytest.fail("network ran"))
    t0 = time.perf_counter()
    with pytest.raises(FormatError, match="cannot describe a 8192x2048 image"):
        decompress_image(forged, tiny_model)
    assert time.perf_counter() - t0 < 2.0


def test_real_files_pass_the_plausibility_bound(tiny_model, flat_file):
    from hpcm.codec import container
    from hpcm.codec.plausibility import min_stream_bytes

    header, _ = container.unpack(flat_file)  # a flat image: about the smallest file a size can have
    assert 0 <= min_stream_bytes(tiny_model, header.z_shape) <= sum(header.stream_lengths)


def test_decompress_max_pixels(tmp_path, flat_file, capsys):
    path = tmp_path / "flat.hpcm"
    path.write_bytes(flat_file)
    rc, _, err = run(capsys, "decompress", path, "--max-pixels", "4000")
    one_line_error(rc, err, "above --max-pixels 4,000")
    assert not (tmp_path / "flat.png").exists()


# -- 6: the header's thread count is clamped to the cores this process may use -----------------------
def test_header_thread_count_is_clamped(monkeypatch):
    import torch

    from hpcm.codec import api
    from hpcm.codec.container import Header

    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.seen = None

        def decompress(self, strings, shape):
            self.seen = torch.get_num_threads()
            return {"x_hat": torch.zeros(1, 3, 64, 64)}

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    header = Header(preset="x", quality=1, fingerprint=b"\0" * 8, height=64, width=64, padded_height=64,
                    padded_width=64, threads=255, z_shape=(1, 1), stream_lengths=(1, 1), version=1)
    model = Recorder()
    api._decode_streams(model, header, [b"\0", b"\0"])
    assert model.seen == 2
    assert api.decode_threads(1) == 1 and api.decode_threads(0) == 0
    assert api.decode_threads(2, limit=1) == 1


# -- 10: thread count and OpenMP waiting under load --------------------------------------------------
def test_cli_makes_openmp_threads_sleep_unless_told_otherwise(monkeypatch, capsys):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    run(capsys, "models")
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    run(capsys, "models")
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_compress_and_decompress_threads(tmp_path, small_png, capsys):
    import torch

    from hpcm.codec.container import read_header

    out = tmp_path / "t.hpcm"
    before = torch.get_num_threads()
    rc, _, err = run(capsys, "compress", small_png, "-o", out, "--threads", "1")
    assert rc == 0, err
    assert read_header(out.read_bytes()).threads == 1
    torch.set_num_threads(before)
    rc, _, err = run(capsys, "decompress", out, "--threads", "1")
    assert rc == 0, err


# -- 7: a pickle-bearing .pth.tar: one line, no advice to load it unsafely ----------------------------
def test_pickle_checkpoint_one_line_without_unsafe_advice(tmp_path, small_png, capsys):
    import argparse

    import torch

    path = tmp_path / "old.pth.tar"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "args": argparse.Namespace(lr=1e-4)}, path)
    rc, _, err = run(capsys, "compress", small_png, "-o", tmp_path / "x.hpcm", "--checkpoint", path)
    one_line_error(rc, err, "argparse.Namespace")
    assert len(err.strip().splitlines()) == 1 and "weights_only" not in err
    rc, _, err = run(capsys, "export", path, "-o", tmp_path / "x.safetensors")
    one_line_error(rc, err, "is a PyTorch checkpoint")
    assert "header too large" not in err



def test_export_takes_a_safetensors_file_whose_header_length_looks_like_a_torch_signature(tmp_path):
    """A run checkpoint whose 8-byte header length begins with 0x80 (pickle's first byte) or spells "PK"
    is still safetensors (found by the phase study: a 111,999-byte header, 0x1b580)."""
    import json
    import struct

    import pytest

    from hpcm.cli.train import _refuse_torch_checkpoint
    from hpcm.errors import CheckpointError

    for length in (0x1B580, 0x4B50):
        header = json.dumps({"__metadata__": {"pad": ""}}).encode()
        header = header[:-3] + b" " * (length - len(header)) + header[-3:]
        path = tmp_path / f"run-{length:x}.safetensors"
        path.write_bytes(struct.pack("<Q", length) + header)
        _refuse_torch_checkpoint(str(path))  # no error: it is safetensors
    pickle_file = tmp_path / "old.bin"
    pickle_file.write_bytes(b"\x80\x02}q\x00.")
    with pytest.raises(CheckpointError, match="is a PyTorch checkpoint"):
        _refuse_torch_checkpoint(str(pickle_file))

# -- 8: decompress_image accepts a path; other types get a clear TypeError ---------------------------
def test_decompress_image_accepts_a_path(tmp_path, tiny_model, flat_file):
    from hpcm.codec.api import decompress_image

    path = tmp_path / "flat.hpcm"
    path.write_bytes(flat_file)
    expected = decompress_image(flat_file, tiny_model)
    assert np.array_equal(decompress_image(str(path), tiny_model), expected)
    assert np.array_equal(decompress_image(path, tiny_model), expected)
    with pytest.raises(HPCMError, match="cannot read"):
        decompress_image(tmp_path / "missing.hpcm", tiny_model)
    with pytest.raises(TypeError, match="bytes of a .hpcm file or its path"):
        decompress_image(12, tiny_model)


# -- 9: commands that need no model do not load torch ------------------------------------------------
def test_light_commands_do_not_import_torch(tmp_path, flat_file):
    path = tmp_path / "f.hpcm"
    path.write_bytes(flat_file)
    code = (
        "import sys\n"
        "from hpcm.cli.main import main\n"
        f"assert main(['models']) == 0 and main(['info', {str(path)!r}]) == 0\n"
        "from hpcm.cli.main import build_parser\n"
        "build_parser()\n"
        "sys.stdout.flush()\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(),
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "NO-TORCH"


# -- 9: the coding path imports only what coding needs (SciPy alone cost ≈ 0.8 s per call) ----------
def test_compress_and_decompress_import_no_heavy_modules(tmp_path):
    image = tmp_path / "a.png"
    Image.fromarray(np.full((40, 56, 3), 120, np.uint8)).save(image)
    code = (
        "import sys\n"
        "from hpcm.cli.main import main\n"
        f"assert main(['compress', {str(image)!r}, '-o', {str(tmp_path / 'a.hpcm')!r}]) == 0\n"
        f"assert main(['decompress', {str(tmp_path / 'a.hpcm')!r}, '-o', {str(tmp_path / 'b.png')!r}]) == 0\n"
        "heavy = ('scipy', 'matplotlib', 'numba', 'triton', 'bjontegaard', 'pytorch_msssim')\n"
        "heavy = sorted(m for m in heavy if m in sys.modules)\n"
        "print('HEAVY', *heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(),
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "HEAVY"


# -- 21: phase 4 builds the seed-named spatial priors (same weights) ---------------------------------
def test_phase4_builds_named_spatial_priors():
    from hpcm.layers.rwkv import RWKVSpatialPrior_S1_S2, RWKVSpatialPrior_S3
    from hpcm.models.io import initial_model, weights_fingerprint
    from hpcm.models.variants import HPCM_Phase4

    model = initial_model("hpcm-phase4-tiny")
    assert isinstance(model.y_spatial_prior_s1_s2, RWKVSpatialPrior_S1_S2)
    assert isinstance(model.y_spatial_prior_s3, RWKVSpatialPrior_S3)
    assert weights_fingerprint(model) == "d5314dcc86d5a81a"  # unchanged by the named classes
    seed_style = HPCM_Phase4(M=64, N=64)
    assert type(seed_style.y_spatial_prior_s3).__name__ == "RWKVSpatialPrior_S3"


def test_codec_commands_skip_the_interpreter_teardown(tmp_path, flat_file):
    path = tmp_path / "f.hpcm"
    path.write_bytes(flat_file)
    code = (
        "import atexit, sys\n"
        "from hpcm.cli.main import main\n"
        "atexit.register(lambda: print('TEARDOWN'))\n"
        f"sys.argv = ['hpcm', 'info', {str(path)!r}]\n"
        "main()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(),
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "z_shape" in out.stdout and "TEARDOWN" not in out.stdout


# -- 11: the output suffix does not silently decide the format ---------------------------------------
def test_output_suffix_notes(tmp_path, small_png, capsys):
    out = tmp_path / "x.jpg"
    rc, _, err = run(capsys, "compress", small_png, "-o", out)
    assert rc == 0, err
    assert "is an .hpcm file whatever its suffix" in err and out.read_bytes()[:4] == b"HPCM"
    rc, _, err = run(capsys, "decompress", out, "-o", tmp_path / "y.jpg")
    assert rc == 0, err
    assert "JPEG at quality 95, a lossy format" in err
    rc, _, err = run(capsys, "decompress", out, "-o", tmp_path / "y.webp")  # lossless WebP: exact
    assert rc == 0 and "lossy" not in err
    rc, _, err = run(capsys, "decompress", out, "-o", tmp_path / "y.png")
    assert rc == 0 and "lossy" not in err
    exact = np.asarray(Image.open(tmp_path / "y.png"))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "y.webp").convert("RGB")), exact)


# -- 12: the long weights note: once in `hpcm models`, a short line elsewhere ------------------------
def test_weights_note_short_in_codec_full_in_models(tmp_path, small_png, capsys):
    rc, _, err = run(capsys, "compress", small_png, "-o", tmp_path / "x.hpcm")
    assert rc == 0, err
    notes = [line for line in err.splitlines() if "note: weights" in line]
    assert len(notes) == 1 and len(notes[0]) < 160 and "hpcm models" in notes[0]
    rc, out, _ = run(capsys, "models")
    assert " ".join(out.split()).count("hpcm-small-vr, the default model: one variable-rate model") == 1


# -- 13: one size convention (W x H) ------------------------------------------------------------------
def test_info_prints_width_by_height(tmp_path, small_png, capsys):
    out = tmp_path / "x.hpcm"
    rc, stdout, err = run(capsys, "compress", small_png, "-o", out)
    assert rc == 0 and "56x40" in stdout, err
    rc, stdout, _ = run(capsys, "info", out)
    size = next(line for line in stdout.splitlines() if line.startswith("size"))
    assert "56x40" in size


# -- 14: no "(default: None)" after a help text that already names the default -----------------------
@pytest.mark.parametrize("command", ["compress", "decompress", "demo", "info"])
def test_help_defaults_are_said_once(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: None)" not in text and "(default: False)" not in text
    import re

    assert not re.search(r"\(default: [^)]*\) \(default:", text)


# -- 15: the quality range comes from the model's shipped levels -------------------------------------
def test_quality_range_from_shipped_levels(tmp_path, small_png, capsys):
    from hpcm.cli.codec import shipped_quality_range
    from hpcm.models.bundled import qualities

    levels = qualities("hpcm-tiny")
    assert shipped_quality_range("hpcm-tiny") == (levels[0], levels[-1])
    rc, _, err = run(capsys, "compress", small_png, "-o", tmp_path / "x.hpcm", "--model", "hpcm-tiny",
                     "--quality", levels[-1] + 1)
    one_line_error(rc, err, f"quality {levels[0]}" + (f"..{levels[-1]}" if levels[-1] > levels[0] else ""))
    rc, _, err = run(capsys, "compress", small_png, "-o", tmp_path / "y.hpcm", "--quality", 9)  # 1..8
    one_line_error(rc, err, "1..8")
    with pytest.raises(SystemExit):
        main(["compress", "--help"])
    helptext = " ".join(capsys.readouterr().out.split()).replace("- ", "-")  # argparse wraps at hyphens
    shown = f"{levels[0]}" + (f"..{levels[-1]}" if levels[-1] > levels[0] else "")
    assert f"hpcm-tiny: {shown};" in helptext and "hpcm-small-vr: 1..8" in helptext


# -- 16: a tampered verified file: the file or the decoder may be at fault --------------------------
def test_checksum_mismatch_names_the_file_as_a_suspect(tiny_model):
    from hpcm.codec import container
    from hpcm.codec.api import decompress_image, encode
    from hpcm.errors import FormatError

    data = encode(tiny_model, np.full((64, 64, 3), 90, dtype=np.uint8), verify=True)[0]
    header, streams = container.unpack(data)
    header.recon_crc ^= 1
    with pytest.raises(FormatError, match="file was altered") as info:
        decompress_image(container.pack(header, streams), tiny_model)
    assert "decoder" in str(info.value)


# -- 17: a file written with --checkpoint, decoded without it ----------------------------------------
def test_missing_checkpoint_is_suggested(tmp_path, small_png, capsys):
    import torch

    from hpcm.models.io import load_model, save_weights

    model = load_model("hpcm-tiny", quality=3)
    with torch.no_grad():
        model.means_hyper.add_(0.25)
    weights = save_weights(model, tmp_path / "mine.safetensors")
    out = tmp_path / "m.hpcm"
    rc, _, err = run(capsys, "compress", small_png, "-o", out, "--checkpoint", weights)
    assert rc == 0, err
    rc, _, err = run(capsys, "decompress", out)
    one_line_error(rc, err, "--checkpoint PATH")
    assert "model given" not in err


# -- 18: anchors only under results of their data set; the legend beside the plot -------------------
def _results(path: Path, dataset: str | None) -> Path:
    import json

    doc = {"name": f"mine-{dataset}", "description": "",
           "results": {"bpp": [0.2, 0.5, 0.9], "psnr-rgb": [29.0, 32.0, 34.5]}}
    if dataset:
        doc["meta"] = {"dataset": dataset}
    path.write_text(json.dumps(doc))
    return path


def test_plot_draws_anchors_only_for_their_data_set(tmp_path, shared_dir, capsys):
    anchors = shared_dir / "anchors" / "kodak"
    if not anchors.is_dir():
        pytest.skip("no Kodak anchors")
    clic = _results(tmp_path / "clic.json", "clic")
    rc, _, err = run(capsys, "plot", clic, "-o", tmp_path / "a.png", "--anchors", anchors)
    assert rc == 0, err
    assert "anchors not drawn" in err and "0 anchor(s)" in err
    kodak = _results(tmp_path / "kodak.json", "kodak")
    rc, _, err = run(capsys, "plot", kodak, "-o", tmp_path / "b.png", "--anchors", anchors,
                     "--select", "jpeg")
    assert rc == 0 and "1 anchor(s)" in err and "not drawn" not in err


def test_eval_results_name_their_data_set(kodak_dir):
    from hpcm.eval.classical import ClassicalCodec, bench_codec
    from hpcm.eval.plot import dataset_of

    doc = bench_codec(ClassicalCodec("jpeg"), kodak_dir, [50], limit=1, show_progress=False)
    assert doc["meta"]["dataset"] == "kodak" and dataset_of(doc) == "kodak"


def test_plot_legend_does_not_cover_the_curves(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hpcm.eval.plot import plot_rd

    figures = []
    monkeypatch.setattr(plt, "close", lambda fig=None: figures.append(fig))
    doc = {"name": "mine", "description": "", "results": {"bpp": [0.1, 0.3, 0.6, 1.0],
                                                          "psnr-rgb": [27.0, 30.0, 33.0, 35.0]}}
    plot_rd([doc], tmp_path / "rd.png")
    fig = figures[-1]
    fig.canvas.draw()
    ax = fig.axes[0]
    legend, box = ax.get_legend().get_window_extent(), ax.get_window_extent()
    assert legend.x0 >= box.x1  # entirely right of the axes


# -- 20: the profile's bpp says which image it is of -------------------------------------------------
def test_profile_bpp_names_its_image():
    from hpcm.eval.profile import ProfileRow, markdown_table

    row = ProfileRow(model="hpcm-tiny", height=64, width=64, padded=(64, 64), params=1, kmacs_per_pixel=1.0,
                     times={"compress": 0.1}, bpp=0.5)
    table = markdown_table([row])
    assert "synthetic image" in table and "initial (untrained) weights" in table


# -- 19: hpcm train shows progress in logs (no terminal) ---------------------------------------------
def test_train_logs_progress_lines_without_a_terminal(tmp_path, kodak_dir, capsys):
    from hpcm.train.config import TrainConfig
    from hpcm.train.trainer import progress_line, train

    data = tmp_path / "data"
    data.mkdir()
    with Image.open(kodak_dir / "kodim01.png") as im:
        im.convert("RGB").crop((0, 0, 96, 96)).save(data / "a.png")
    cfg = TrainConfig.from_dict(dict(
        model="hpcm-tiny", data=[str(data)], val=None, out=str(tmp_path / "run"), steps=2, batch_size=1,
        patch_size=64, quality=3, num_workers=0, log_every=1, val_every=1000, save_every=1000,
        progress=True, device="cpu"))
    train(cfg)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("hpcm train: step")]
    assert [line.split(",")[0] for line in lines] == ["hpcm train: step 1/2", "hpcm train: step 2/2"]
    assert all(k in lines[0] for k in ("img/s", "loss", "bpp", "PSNR", "ETA"))
    assert "ETA 1:00:00" in progress_line(0, 3600, {}, 1.0)


def test_long_coding_shows_progress_on_a_terminal_only(tiny_model):
    import io

    from hpcm.cli.codec import coding_progress
    from hpcm.codec.api import encode

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    image = np.full((64, 64, 3), 60, dtype=np.uint8)
    term = Terminal()
    with coding_progress(tiny_model, "encoding 64x64", stream=term, delay=0.0, interval=0.001):
        encode(tiny_model, image)
    assert "hpcm: encoding 64x64: context step" in term.getvalue()
    assert term.getvalue().endswith("\r")  # the status line erases itself
    log = io.StringIO()
    with coding_progress(tiny_model, "encoding 64x64", stream=log, delay=0.0, interval=0.001):
        encode(tiny_model, image)
    assert log.getvalue() == ""
    assert not tiny_model.y_spatial_prior_s3._forward_hooks  # hooks removed
