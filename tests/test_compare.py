"""hpcm compare: equal-bpp search and the side-by-side picture."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from hpcm.eval.compare import Coded, closest_level, default_crop, side_by_side


def test_closest_level_finds_the_nearest_size():
    calls = []

    def encode(q: float) -> bytes:
        calls.append(q)
        return b"x" * int(10 * q)

    q, data = closest_level(encode, list(range(1, 101)), 333)
    assert q == 33 and len(data) == 330 and len(calls) <= 5
    assert closest_level(encode, [1, 2, 3], 10_000)[0] == 3
    assert closest_level(encode, [5, 6], 0)[0] == 5


def test_side_by_side_layout():
    img = np.zeros((40, 50, 3), np.uint8)
    coded = Coded("c", 1.0, 10, 0.1, 30.0, np.full((40, 50, 3), 255, np.uint8))
    pic = side_by_side(img, [coded, coded], (5, 5, 20, 10), scale=2)
    assert pic.shape == (20 + 18, 3 * 40 + 2 * 6, 3)
    assert default_crop(100, 300) == (22, 0, 256, 100)


def test_cli_compare(shared_dir, tmp_path, capsys):
    from hpcm.cli.main import main

    src = tmp_path / "crop.png"
    with Image.open(shared_dir / "data" / "kodak" / "kodim23.png") as im:
        im.convert("RGB").crop((300, 200, 428, 264)).save(src)
    out = tmp_path / "cmp.png"
    assert main(["compare", str(src), "--bpp", "0.5", "--model", "hpcm-tiny", "--codecs", "webp", "jpeg",
                 "-o", str(out), "--scale", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[0] for ln in lines] == ["hpcm", "pillow-webp", "pillow-jpeg420"]
    webp_bpp = float(lines[1].split("bpp")[0].split()[-1])
    assert webp_bpp == pytest.approx(0.5, abs=0.15)
    with Image.open(out) as pic:
        assert pic.size == (4 * 128 + 3 * 6, 64 + 18)
    assert main(["compare", str(src), "--bpp", "0.5", "-o", str(out)]) == 1  # exists, no --force
    assert "exists" in capsys.readouterr().err
