"""Shipped trained weights (`src/hpcm/weights`): manifest, size limit, metadata, default model, RD order."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import torch

from hpcm.cli.codec import DEFAULT_MODEL
from hpcm.codec.image_io import read_image
from hpcm.models import io as mio
from hpcm.train.loss import lambda_for

FIXED_RATE = "hpcm-tiny"  # the five fixed-rate models, shipped beside the variable-rate default
MAX_BYTES = 10 * 1024 * 1024


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


def test_fixed_rate_model_ships_at_least_four_trained_qualities():
    qualities = mio.bundled_qualities(FIXED_RATE)
    assert len(qualities) >= 4
    for q in qualities:
        model = mio.load_model(FIXED_RATE, quality=q)
        info = model.weights_info
        assert info["trained"] is True and info["quality"] == q
        assert info["source"] == f"bundled:{FIXED_RATE}-q{q}"
        assert math.isclose(info["lambda"], lambda_for(q, "mse")) and info["metric"] == "mse"
        training = info["training"]
        assert training["step"] > 0 and training["recipe"]["batch_size"] > 0
        assert all("kodak" not in d.lower() for d in training["data"])  # never trained on the test set
        assert info["note"]
    assert mio.load_model(FIXED_RATE).weights_info["quality"] == mio.DEFAULT_QUALITY


def test_default_model_is_the_trained_variable_rate_model():
    model = mio.load_model(DEFAULT_MODEL)
    info = model.weights_info
    assert model.variable_rate and model.quality_gains.quality_range == (1.0, 8.0)
    assert info["trained"] is True and info["source"] == f"bundled:{DEFAULT_MODEL}" and info["note"]
    training = info["training"]
    assert training["step"] > 0 and training["crops_seen"] > 0
    assert all("kodak" not in d.lower() for d in training["data"])  # never trained on the test set


def test_shipped_qualities_are_ordered_in_rate_and_distortion(kodak_dir):
    """Higher quality (larger λ) → more bits and higher PSNR on a Kodak crop (model estimate)."""
    x = torch.from_numpy(read_image(kodak_dir / "kodim23.png")[128:256, 256:384].copy())
    x = x.permute(2, 0, 1)[None].float() / 255.0
    points = []
    for q in mio.bundled_qualities(FIXED_RATE):
        model = mio.load_model(FIXED_RATE, quality=q)
        with torch.no_grad():
            out = model(x)
        bits = sum(-torch.log2(lk).sum().item() for lk in out["likelihoods"].values())
        mse = torch.mean((out["x_hat"].clamp(0, 1) - x) ** 2).item()
        points.append((bits / (128 * 128), 10 * math.log10(1 / mse)))
    bpp, psnr = np.array(points).T
    assert np.all(np.diff(bpp) > 0), points
    assert psnr[-1] > psnr[0], points


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
