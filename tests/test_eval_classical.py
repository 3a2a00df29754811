"""bench-codec reproduces the measured Kodak anchors (same settings, same libraries) on kodim01."""

import json

import pytest

from hpcm.eval.classical import (
    CODECS,
    DEFAULT_QUALITIES,
    ClassicalCodec,
    bench_codec,
    evaluate_codec_image,
    read_rgb,
)
from hpcm.eval.schema import validate_results


@pytest.fixture(scope="module")
def measured(shared_dir):
    return json.loads((shared_dir / "anchors" / "kodak-measured" / "per-image.json").read_text())


@pytest.mark.parametrize(
    "codec, quality",
    [
        (ClassicalCodec("jpeg"), 25),
        (ClassicalCodec("jpeg", chroma="444"), 45),
        (ClassicalCodec("webp"), 30),
        (ClassicalCodec("avif", chroma="420"), 20),
        (ClassicalCodec("avif"), 40),
        (ClassicalCodec("jpeg2000"), 0.3),
        (ClassicalCodec("heic"), 20),
        (ClassicalCodec("heic", tune="psnr"), 17),
    ],
    ids=lambda v: v.name if isinstance(v, ClassicalCodec) else str(v),
)
def test_matches_measured_anchor_on_kodim01(kodak_dir, measured, codec, quality):
    if codec.codec == "heic":
        pytest.importorskip("pillow_heif")
    image = read_rgb(kodak_dir / "kodim01.png")
    record = evaluate_codec_image(codec, image, quality, "kodim01")
    ref = next(e for e in measured[codec.name]["kodim01.png"] if e["quality"] == quality)
    assert record["results"]["bpp"] == pytest.approx(ref["bpp"], rel=1e-9)
    assert record["results"]["psnr-rgb"] == pytest.approx(ref["psnr-rgb"], abs=1e-6)
    assert record["results"]["ms-ssim-rgb"] == pytest.approx(ref["ms-ssim-rgb"], abs=1e-5)


def test_bench_codec_document(kodak_dir):
    paths = sorted(kodak_dir.glob("kodim0[12].png"))
    doc = bench_codec(ClassicalCodec("jpeg"), paths, [10, 50], show_progress=False)
    validate_results(doc)
    assert doc["name"] == "pillow-jpeg420" and doc["quality"] == [10, 50]
    assert "4:2:0" in doc["description"] and "libjpeg" in doc["description"]
    assert len(doc["per_image"]) == 4
    r = doc["results"]
    assert r["bpp"][0] < r["bpp"][1] and r["psnr-rgb"][0] < r["psnr-rgb"][1]
    mean_bpp = sum(p["results"]["bpp"] for p in doc["per_image"] if p["quality"] == 10) / 2
    assert r["bpp"][0] == pytest.approx(mean_bpp)


def test_codec_options_are_checked():
    assert set(DEFAULT_QUALITIES) == set(CODECS)
    with pytest.raises(ValueError):
        ClassicalCodec("webp", chroma="444")
    with pytest.raises(ValueError):
        ClassicalCodec("jpeg", tune="psnr")
    with pytest.raises(ValueError):
        ClassicalCodec("bpg")
    assert ClassicalCodec("avif").name == "pillow-avif444"
    assert ClassicalCodec("heic", tune="psnr").name == "heif-hevc444-tunepsnr"
