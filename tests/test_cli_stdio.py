"""``-`` as standard input / output for ``hpcm compress`` and ``hpcm decompress`` (pipelines)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hpcm.cli.main import main

SRC = Path(__file__).resolve().parents[1] / "src"


def _hpcm(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "hpcm", *args], input=stdin, capture_output=True, env=env,
                          timeout=300)


@pytest.fixture
def png_bytes() -> bytes:
    rng = np.random.default_rng(11)
    yy, xx = np.mgrid[0:48, 0:72]
    image = np.clip(np.stack([xx * 3, yy * 5, xx + yy], 2) + rng.normal(0, 10, (48, 72, 3)), 0, 255)
    buf = io.BytesIO()
    Image.fromarray(image.astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_pipeline_equals_files(png_bytes, tmp_path):
    (tmp_path / "a.png").write_bytes(png_bytes)
    assert main(["compress", str(tmp_path / "a.png"), "--model", "hpcm-tiny-vr"]) == 0
    assert main(["decompress", str(tmp_path / "a.hpcm"), "-o", str(tmp_path / "c.png")]) == 0
    coded = _hpcm("compress", "-", "--model", "hpcm-tiny-vr", stdin=png_bytes)  # stdin -> stdout
    assert coded.returncode == 0, coded.stderr
    assert coded.stdout == (tmp_path / "a.hpcm").read_bytes()
    assert b"<stdin> -> <stdout>" in coded.stderr  # the report goes to stderr, the file alone to stdout
    decoded = _hpcm("decompress", "-", stdin=coded.stdout)
    assert decoded.returncode == 0, decoded.stderr
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(decoded.stdout))),
                                  np.asarray(Image.open(tmp_path / "c.png")))
    # a file to stdout, stdin to a file
    to_stdout = _hpcm("decompress", str(tmp_path / "a.hpcm"), "-o", "-")
    assert to_stdout.returncode == 0 and to_stdout.stdout == decoded.stdout
    from_stdin = _hpcm("decompress", "-", "-o", str(tmp_path / "b.png"), stdin=coded.stdout)
    assert from_stdin.returncode == 0 and b"<stdin> -> " in from_stdin.stdout
    assert (tmp_path / "b.png").read_bytes() == decoded.stdout


def test_bad_streams_and_refusals(png_bytes, tmp_path, capsys):
    bad = _hpcm("compress", "-", "-o", str(tmp_path / "x.hpcm"), stdin=b"not an image")
    assert bad.returncode == 1 and b"<stdin>: not an image file" in bad.stderr
    assert not (tmp_path / "x.hpcm").exists()
    bad = _hpcm("decompress", "-", "-o", str(tmp_path / "x.png"), stdin=b"HPCM\x00 truncated")
    assert bad.returncode == 1 and bad.stderr.count(b"\n") == 1 and not (tmp_path / "x.png").exists()
    (tmp_path / "a.png").write_bytes(png_bytes)
    assert main(["compress", str(tmp_path / "a.png"), "-", "-o", str(tmp_path)]) == 1
    assert "works with one input only" in capsys.readouterr().err
    assert main(["compress", str(tmp_path / "a.png"), str(tmp_path / "a.png"), "-o", "-"]) == 1
    assert "works with one input only" in capsys.readouterr().err


def test_binary_output_refused_on_a_terminal(png_bytes, tmp_path, capsys, monkeypatch):
    (tmp_path / "a.png").write_bytes(png_bytes)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert main(["compress", str(tmp_path / "a.png"), "-o", "-"]) == 1
    assert "refusing to write a .hpcm file to a terminal" in capsys.readouterr().err
