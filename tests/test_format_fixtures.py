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


def _model_for(header):
    if header.preset == "hpcm-tiny-vr":
        return load_model(header.preset)
    return load_model(header.preset, quality=int(header.quality))


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * math.log10(255.0**2 / mse)


def test_fixtures_exist():
    versions = {int(p.name[1 : p.name.index("-")]) for p in FIXTURES}
    assert {2, 3} <= versions


@pytest.mark.parametrize("path", FIXTURES, ids=[p.name for p in FIXTURES])
@pytest.mark.parametrize("threads", [1, 2])
def test_stored_file_decodes(path, threads):
    data = path.read_bytes()
    header, _ = container.unpack(data)
    assert header.version == int(path.name[1 : path.name.index("-")])
    model = _model_for(header)
    image, h, _ = decode(data, model, threads=threads)  # the latent checksum is checked inside
    source = _fixture_image()
    assert image.shape == source.shape
    assert _psnr(image, source) > 20


@pytest.mark.parametrize("path", FIXTURES, ids=[p.name for p in FIXTURES])
def test_stored_file_with_a_corrupt_side_stream_is_refused(path):
    header, streams = container.unpack(path.read_bytes())
    model = _model_for(header)
    side = bytearray(streams[2])
    for i in range(len(side)):
        bad = bytearray(side)
        bad[i] ^= 0x10
        with pytest.raises(FormatError):
            decode(container.pack(header, [streams[0], streams[1], bytes(bad)]), model)
