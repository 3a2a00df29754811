"""Files written by earlier releases keep decoding: the stored .hpcm fixtures of every format version that
uses the side stream (tests/data, written by tests/data/make_fixtures.py)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

from hpcm.codec import container
from hpcm.codec.api import decode
from hpcm.errors import FormatError
from hpcm.models.io import load_model

DATA = Path(__file__).resolve().parent / "data"
FIXTURES = sorted(DATA.glob("v*.hpcm"))


def _fixture_image() -> np.ndarray:
    spec = importlib.util.spec_from_file_location("make_fixtures", DATA / "make_fixtures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.fixture_image()


def _shipped(header):
    if header.preset == "hpcm-tiny-vr":
        return load_model(header.preset)
    return load_model(header.preset, quality=int(header.quality))


def _weights_from_history(header, tmp_dir: Path):
    """The retired weights that wrote ``header``, from the git history of the weights folder (None without
    git): a fixture written with weights shipped earlier decodes with the release that shipped them."""
    import subprocess

    from hpcm.models.io import WEIGHTS_DIR, bundled_variable_rate_path, bundled_weights_path

    if header.preset == "hpcm-tiny-vr":
        path = bundled_variable_rate_path(header.preset)
    else:
        path = bundled_weights_path(header.preset, int(header.quality))
    root = WEIGHTS_DIR.parents[2]
    rel = path.relative_to(root).as_posix()
    try:
        commits = subprocess.run(["git", "log", "--format=%H", "--", rel], cwd=root, capture_output=True,
                                 text=True, check=True, timeout=60).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    for commit in commits:
        blob = subprocess.run(["git", "show", f"{commit}:{rel}"], cwd=root, capture_output=True, timeout=60)
        if blob.returncode:
            continue
        candidate = tmp_dir / f"{commit[:12]}.safetensors"
        candidate.write_bytes(blob.stdout)
        model = load_model(str(candidate))
        if model.weights_info["fingerprint"] == header.fingerprint_hex:
            return model
    return None


def _model_for(header, tmp_dir: Path):
    """The shipped model, or — for a fixture written with weights since replaced — those weights (the
    shipped model must then refuse the file with the release that decodes it)."""
    model = _shipped(header)
    if model.weights_info["fingerprint"] == header.fingerprint_hex:
        return model
    from hpcm.codec.api import check_model
    from hpcm.errors import ModelMismatchError

    with pytest.raises(ModelMismatchError, match="shipped with hpcm"):
        check_model(header, model)
    old = _weights_from_history(header, tmp_dir)
    if old is None:
        pytest.skip("retired weights, and no git history to take them from")
    return old


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * math.log10(255.0**2 / mse)


def test_fixtures_exist():
    versions = {int(p.name[1 : p.name.index("-")]) for p in FIXTURES}
    assert {2, 3, 4, 5} <= versions


@pytest.mark.parametrize("path", FIXTURES, ids=[p.name for p in FIXTURES])
@pytest.mark.parametrize("threads", [1, 2])
def test_stored_file_decodes(path, threads, tmp_path):
    data = path.read_bytes()
    header, _ = container.unpack(data)
    assert header.version == int(path.name[1 : path.name.index("-")])
    model = _model_for(header, tmp_path)
    image, h, _ = decode(data, model, threads=threads)  # the latent checksum is checked inside
    source = _fixture_image()
    assert image.shape == source.shape
    assert _psnr(image, source) > 20


@pytest.mark.parametrize("path", FIXTURES, ids=[p.name for p in FIXTURES])
def test_stored_file_with_a_corrupt_side_stream_is_refused(path, tmp_path):
    header, streams = container.unpack(path.read_bytes())
    model = _model_for(header, tmp_path)
    side = bytearray(streams[2])
    for i in range(len(side)):
        bad = bytearray(side)
        bad[i] ^= 0x10
        with pytest.raises(FormatError):
            decode(container.pack(header, [streams[0], streams[1], bytes(bad)]), model)
