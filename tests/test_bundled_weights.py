"""Shipped trained weights (`src/hpcm/weights`): manifest, size limit, metadata, default model, RD order."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import torch

from hpcm.codec.image_io import read_image
from hpcm.models import io as mio
from hpcm.models.bundled import DEFAULT_MODEL
from hpcm.train.loss import lambda_for

FIXED_RATE = "hpcm-tiny"  # of the five fixed-rate models, q3 still ships (the format fixtures use it)
MAX_BYTES = 32 * 1024 * 1024  # one file (experiments/install_weights.py has the same limit)
MAX_FOLDER_BYTES = 48 * 1024 * 1024  # all of them: the working tree a GPU call carries must stay < 64 MiB


def manifest() -> dict[str, str]:
    """``SHA256SUMS`` as {file name: hex digest}."""
    entries = {}
    for line in (mio.WEIGHTS_DIR / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split("  ", 1)
        entries[name] = digest
    return entries


def test_manifest_lists_every_shipped_file_with_its_digest():
    files = {p.name for p in mio.WEIGHTS_DIR.iterdir() if p.suffix in (".safetensors", ".json")}
    entries = manifest()
    assert set(entries) == files
    for name, digest in entries.items():
        data = (mio.WEIGHTS_DIR / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest, name
        if name.endswith(".safetensors"):
            assert len(data) <= MAX_BYTES, name
    assert sum((mio.WEIGHTS_DIR / name).stat().st_size for name in entries) <= MAX_FOLDER_BYTES


def test_fixed_rate_model_ships_quality_3_and_names_the_release_of_the_others(capsys):
    """hpcm-tiny q3 still ships (files written with it and the format fixtures decode); q1, q2, q4, q5 were
    retired for the default model's room: asking for them names the release that shipped them."""
    import pytest

    from hpcm.cli.main import main
    from hpcm.errors import CheckpointError

    assert mio.bundled_qualities(FIXED_RATE) == [3]
    model = mio.load_model(FIXED_RATE, quality=3)
    info = model.weights_info
    assert info["trained"] is True and info["quality"] == 3 and info["source"] == f"bundled:{FIXED_RATE}-q3"
    assert math.isclose(info["lambda"], lambda_for(3, "mse")) and info["metric"] == "mse"
    training = info["training"]
    assert training["step"] > 0 and training["recipe"]["batch_size"] > 0
    assert all("kodak" not in d.lower() for d in training["data"])  # never trained on the test set
    assert info["note"]
    assert mio.load_model(FIXED_RATE).weights_info["quality"] == 3
    for q in (1, 2, 4, 5):
        shipped_with = f"{FIXED_RATE} q{q} was shipped with hpcm commit [0-9a-f]{{12}}"
        with pytest.raises(CheckpointError, match=shipped_with):
            mio.load_model(FIXED_RATE, quality=q)
    assert main(["compress", "nonexistent.png", "--model", FIXED_RATE, "--quality", "2"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "q2 was shipped with hpcm commit" in err[0] and "--checkpoint" in err[0]


def test_default_model_is_the_trained_variable_rate_model():
    model = mio.load_model(DEFAULT_MODEL)
    info = model.weights_info
    assert model.variable_rate and model.quality_gains.quality_range == (1.0, 8.0)
    assert info["trained"] is True and info["source"] == f"bundled:{DEFAULT_MODEL}" and info["note"]
    training = info["training"]
    assert training["step"] > 0 and training["crops_seen"] > 0
    assert all("kodak" not in d.lower() for d in training["data"])  # never trained on the test set


def test_default_model_orders_its_qualities_in_rate_and_distortion(kodak_dir):
    """Higher quality → more bits and higher PSNR on a Kodak crop (model estimate), at 6 points of 1..8."""
    x = torch.from_numpy(read_image(kodak_dir / "kodim23.png")[128:256, 256:384].copy())
    x = x.permute(2, 0, 1)[None].float() / 255.0
    model = mio.load_model(DEFAULT_MODEL)
    points = []
    for q in (1.0, 2.0, 3.5, 5.0, 6.5, 8.0):
        with torch.no_grad():
            out = model(x, quality=q)
        bits = sum(-torch.log2(lk).sum().item() for lk in out["likelihoods"].values())
        mse = torch.mean((out["x_hat"].clamp(0, 1) - x) ** 2).item()
        points.append((bits / (128 * 128), 10 * math.log10(1 / mse)))
    bpp, psnr = np.array(points).T
    assert np.all(np.diff(bpp) > 0) and np.all(np.diff(psnr) > 0), points


def test_files_of_retired_weights_name_the_release_that_decodes_them(kodak_dir, tmp_path, capsys):
    """Shipped weights stay addressable: a file whose fingerprint belongs to weights shipped earlier (and
    since replaced) gets an error naming the release that shipped them, not just 'wrong model'."""
    import json

    from hpcm.cli.main import main
    from hpcm.codec import container
    from hpcm.codec.api import compress_image

    releases = json.loads(mio.RELEASES_FILE.read_text())["weights"]
    shipped_now = {mio.load_model(FIXED_RATE, quality=q).weights_info["fingerprint"]
                   for q in mio.bundled_qualities(FIXED_RATE)}
    assert shipped_now <= {e["fingerprint"] for e in releases}  # every shipped file is on record
    retired = next(e for e in releases if e["fingerprint"] not in shipped_now and e["quality"] == 3)
    image = read_image(kodak_dir / "kodim23.png")[:64, :64]
    header, streams = container.unpack(compress_image(mio.load_model(FIXED_RATE, quality=3), image))
    header.fingerprint = bytes.fromhex(retired["fingerprint"])
    path = tmp_path / "old.hpcm"
    path.write_bytes(container.pack(header, streams))
    assert main(["decompress", str(path), "-o", str(tmp_path / "old.png")]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("hpcm: error:")]
    assert len(errors) == 1 and retired["release"] in errors[0] and "--checkpoint" in errors[0]
