"""The GPU training slot's CPU-testable parts: scripts/gpu_train_prepare.py (crops and held-out split).

The time limit of ``hpcm train`` is tested in tests/test_train.py; scripts/gpu_train.sh itself was dry-run
with DEVICE=cpu (docs/gpu.md).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hpcm.train.data import find_images
from hpcm.train.trainer import split_holdout

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def prep():
    spec = importlib.util.spec_from_file_location(
        "gpu_train_prepare", ROOT / "scripts" / "gpu_train_prepare.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """8 small images in two folders: JPEG 4:2:0 and 4:4:4, PNG, one smaller than the crop."""
    root = tmp_path_factory.mktemp("train")
    rng = np.random.default_rng(0)
    for i in range(8):
        folder = root / ("a" if i < 5 else "b")
        folder.mkdir(exist_ok=True)
        h, w = (40, 56) if i == 3 else (72 + 4 * i, 96)
        yy, xx = np.mgrid[0:h, 0:w]
        arr = np.stack([(xx * 3 + i * 20) % 256, (yy * 5) % 256, rng.integers(0, 256, (h, w))], -1)
        img = Image.fromarray(arr.astype(np.uint8))
        if i % 3 == 2:
            img.save(folder / f"img{i}.png")
        else:
            img.save(folder / f"img{i}.jpg", quality=90, subsampling=0 if i % 2 else 2)
    return root


def _run(prep, data: Path, out: Path, **kw):
    args = dict(holdout=2, crop=64, quality=92, seed=3, downscale_prob=0.5, commit="test")
    args.update(kw)
    return prep.prepare([data], out, **args)


def test_split_excludes_held_out_images_and_copies_them(prep, data, tmp_path):
    manifest = _run(prep, data, tmp_path / "gpu", count=9)
    train, held = split_holdout(find_images([data]), 2)  # what hpcm train --val-holdout 2 holds out
    assert len(train) == 6 and len(held) == 2
    sources = [c[0] for c in manifest["crops"]]
    assert len(sources) == 9 and not set(sources) & {str(p) for p in held}
    assert set(sources) <= {str(p) for p in train}
    assert len(set(sources[:6])) == 6  # one crop per image per pass: the first pass covers every image
    crops = sorted((tmp_path / "gpu" / "train-crops").iterdir())
    assert [p.name for p in crops] == [f"{i:05d}.jpg" for i in range(9)]
    for p in crops:
        with Image.open(p) as im:
            assert im.format == "JPEG" and im.size == (64, 64)
    copies = sorted((tmp_path / "gpu" / "holdout").iterdir())
    assert [c.read_bytes() for c in copies] == [p.read_bytes() for p in held]  # byte-identical, same order
    assert [h["source"] for h in manifest["holdout"]] == [str(p) for p in held]
    on_disk = json.loads((tmp_path / "gpu" / "train-crops.json").read_text())
    assert on_disk["crops"] == manifest["crops"] and on_disk["count"] == 9


def test_crops_are_deterministic_and_a_budget_gives_a_prefix(prep, data, tmp_path):
    _run(prep, data, tmp_path / "one", count=7)
    _run(prep, data, tmp_path / "two", count=7)
    one = sorted((tmp_path / "one" / "train-crops").iterdir())
    two = sorted((tmp_path / "two" / "train-crops").iterdir())
    assert [p.read_bytes() for p in one] == [p.read_bytes() for p in two]
    assert (tmp_path / "one" / "train-crops.json").read_text() == (
        tmp_path / "two" / "train-crops.json"
    ).read_text()
    budget = sum(p.stat().st_size for p in one[:3]) + 10  # room for 3 crops, not 4
    m = _run(prep, data, tmp_path / "budget", byte_budget=budget)
    got = sorted((tmp_path / "budget" / "train-crops").iterdir())
    assert m["count"] == 3 and [p.read_bytes() for p in got] == [p.read_bytes() for p in one[:3]]
    other_seed = _run(prep, data, tmp_path / "seed", count=7, seed=4)
    assert other_seed["crops"] != json.loads((tmp_path / "one" / "train-crops.json").read_text())["crops"]


def test_kodak_is_refused_and_the_cli_prints_the_carry(prep, data, tmp_path, capsys):
    kodak = tmp_path / "kodak"
    kodak.mkdir()
    with pytest.raises(SystemExit, match="Kodak"):
        _run(prep, kodak, tmp_path / "k", count=1)
    out = tmp_path / "gpu"
    argv = ["--data", str(data), "--out", str(out), "--count", "2", "--crop", "64", "--holdout", "2"]
    assert prep.main(argv) == 0
    text = capsys.readouterr().out
    assert "2 crops of 64²" in text and "MiB of 64 MiB" in text
    assert len(list((out / "train-crops").iterdir())) == 2


def test_extra_parts_continue_the_sequence(prep, data, tmp_path):
    """--part K: the next crops after the main set and earlier parts, byte-identical to one longer set."""
    _run(prep, data, tmp_path / "long", count=10)
    out = tmp_path / "gpu"
    _run(prep, data, out, count=4)
    p2 = prep.prepare_part([data], out, 2, byte_budget=0, count=3)
    p3 = prep.prepare_part([data], out, 3, byte_budget=0, count=3)
    assert (p2["start"], p2["count"], p3["start"]) == (4, 3, 7)
    long_crops = {p.name: p.read_bytes() for p in (tmp_path / "long" / "train-crops").iterdir()}
    for k, first in ((2, 4), (3, 7)):
        names = [f"{i:05d}.jpg" for i in range(first, first + 3)]
        part = out / f"crops-part{k}"
        assert sorted(p.name for p in part.glob("*.jpg")) == names
        assert all((part / n).read_bytes() == long_crops[n] for n in names)
    again = prep.prepare_part([data], out, 2, byte_budget=0, count=3)  # redoing a part keeps its place
    assert again["start"] == 4
    with pytest.raises(SystemExit):
        prep.prepare_part([tmp_path], out, 4, byte_budget=0, count=1)  # other data than the main set
