"""Rate control (``hpcm.codec.rate_control``, ``hpcm compress --max-size / --max-bpp / --min-psnr``)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hpcm.cli.main import main
from hpcm.codec import container
from hpcm.codec.api import decode, encode
from hpcm.codec.image_io import read_image
from hpcm.codec.rate_control import (
    RateTarget,
    encode_to_target,
    interpolating_guess,
    last_true,
    quality_levels,
)
from hpcm.errors import HPCMError
from hpcm.eval.metrics import psnr
from hpcm.models.io import load_model


@pytest.fixture(scope="module")
def crop(kodak_dir) -> np.ndarray:
    path = kodak_dir / "kodim23.png"
    if not path.is_file():
        pytest.skip(f"Kodak not found at {kodak_dir}")
    return np.ascontiguousarray(read_image(path)[180:250, 280:370])  # 70x90: padded to the size multiple


@pytest.fixture(scope="module")
def tiny_vr():
    return load_model("hpcm-tiny-vr")


def test_last_true_finds_the_boundary_with_few_calls():
    for count in range(0, 40):
        for boundary in range(-1, count):
            calls: list[int] = []

            def ok(i: int, boundary=boundary, calls=calls) -> bool:
                calls.append(i)
                return i <= boundary

            assert last_true(count, ok) == boundary
            assert len(calls) == len(set(calls)) <= math.ceil(math.log2(count + 1))


def test_interpolating_guess_finds_the_same_boundary_in_fewer_calls():
    rng = np.random.default_rng(0)
    smooth_calls, bisect_calls = [], []
    for trial in range(200):
        count = int(rng.integers(1, 800))
        if trial % 4 == 3:  # adversarial: plateaus and jumps
            curve = np.cumsum(rng.choice([0.0, 0.0, 0.0, 5.0], count))
        else:  # log(size) of a rate curve: smooth, slightly noisy, increasing
            curve = np.log(1000) + np.linspace(0, rng.uniform(0.5, 3), count) + np.cumsum(
                rng.uniform(0, 2e-4, count))
        goal = float(rng.uniform(curve[0] - 0.1, curve[-1] + 0.1))
        for guessing in (False, True):
            values: dict[int, float] = {}
            calls: list[int] = []

            def ok(i: int, values=values, calls=calls, curve=curve, goal=goal) -> bool:
                calls.append(i)
                values[i] = float(curve[i])
                return curve[i] <= goal

            guess = interpolating_guess(values, goal, start=count // 4, slope=0.003) if guessing else None
            found = last_true(count, ok, guess)
            assert found == int(np.sum(curve <= goal)) - 1
            assert len(calls) == len(set(calls)) <= 8 + math.ceil(math.log2(count + 1))
            if trial % 4 != 3:
                (smooth_calls if guessing else bisect_calls).append(len(calls))
    assert np.mean(smooth_calls) < 0.6 * np.mean(bisect_calls)


def test_quality_levels(tiny_vr):
    levels = quality_levels(tiny_vr)
    assert levels[0] == 1.0 and levels[-1] == 8.0 and len(levels) == 701
    assert levels[1] == 1.01 and all(b > a for a, b in zip(levels, levels[1:], strict=False))
    assert quality_levels(load_model("hpcm-tiny", quality=3)) == [None]


def test_target_validation():
    with pytest.raises(ValueError):
        RateTarget()
    with pytest.raises(ValueError):
        RateTarget(max_bytes=10, min_psnr=30.0)
    with pytest.raises(HPCMError, match="positive"):
        RateTarget(max_bytes=0)
    with pytest.raises(HPCMError, match="positive"):
        RateTarget(min_psnr=float("nan"))
    assert RateTarget.from_bpp(0.5, 512, 768).max_bytes == 24576
    assert RateTarget.from_bpp(0.3, 7, 9).max_bytes == 2  # floor: a cap, never exceeded
    with pytest.raises(HPCMError, match="less than one byte"):
        RateTarget.from_bpp(0.01, 8, 8)


def test_max_bytes_gives_the_highest_quality_that_fits(tiny_vr, crop):
    low = len(encode(tiny_vr, crop, quality=1.0)[0])
    high = len(encode(tiny_vr, crop, quality=8.0)[0])
    limit = (low + high) // 2
    res = encode_to_target(tiny_vr, crop, RateTarget(max_bytes=limit))
    assert res.size == len(res.data) <= limit and res.header.quality == res.quality
    assert 1.0 < res.quality < 8.0 and res.encodes <= 8
    # the bisection's invariant: the next level up was coded and did not fit
    assert len(encode(tiny_vr, crop, quality=round(res.quality + 0.01, 2))[0]) > limit
    image, header, _ = decode(res.data, tiny_vr)
    assert image.shape == crop.shape and header.quality == res.quality
    # a limit above the top: the top quality, in a few encodes
    assert encode_to_target(tiny_vr, crop, RateTarget(max_bytes=high + 100)).quality == 8.0


def test_min_psnr_gives_the_lowest_quality_that_reaches_it(tiny_vr, crop):
    lo = psnr(crop, decode(encode(tiny_vr, crop, quality=1.0)[0], tiny_vr)[0])
    hi = psnr(crop, decode(encode(tiny_vr, crop, quality=8.0)[0], tiny_vr)[0])
    goal = (lo + hi) / 2
    res = encode_to_target(tiny_vr, crop, RateTarget(min_psnr=goal))
    assert res.psnr >= goal and psnr(crop, decode(res.data, tiny_vr)[0]) == res.psnr
    below = decode(encode(tiny_vr, crop, quality=round(res.quality - 0.01, 2))[0], tiny_vr)[0]
    assert psnr(crop, below) < goal


def test_unreachable_targets_name_what_the_model_reaches(tiny_vr, crop):
    with pytest.raises(HPCMError, match=r"cannot fit the image in 20 bytes: the lowest quality \(1\) gives"):
        encode_to_target(tiny_vr, crop, RateTarget(max_bytes=20))
    with pytest.raises(HPCMError, match=r"cannot reach 80 dB: the highest quality \(8\) gives \d+\.\d\d dB"):
        encode_to_target(tiny_vr, crop, RateTarget(min_psnr=80.0))


def test_fixed_rate_model_has_one_level(crop):
    model = load_model("hpcm-tiny", quality=3)
    size = len(encode(model, crop)[0])
    res = encode_to_target(model, crop, RateTarget(max_bytes=size))
    assert res.quality is None and res.size == size and res.encodes == 1
    with pytest.raises(HPCMError, match="the lowest quality gives"):
        encode_to_target(model, crop, RateTarget(max_bytes=size - 1))


def test_verified_search_counts_the_check_in_the_size(tiny_vr, crop):
    limit = len(encode(tiny_vr, crop, quality=4.0)[0])
    res = encode_to_target(tiny_vr, crop, RateTarget(max_bytes=limit), verify=True)
    assert res.header.recon_crc is not None and res.size <= limit


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_targets(crop, tmp_path, capsys):
    from PIL import Image

    src = tmp_path / "crop.png"
    Image.fromarray(crop).save(src)
    out = tmp_path / "s.hpcm"
    rc, stdout, err = run(capsys, "compress", src, "-o", out, "--model", "hpcm-tiny-vr", "--max-size", "1k")
    assert rc == 0, err
    assert out.stat().st_size <= 1000 and "meets at most 1000 bytes" in stdout and "encodes" in stdout
    rc, stdout, err = run(capsys, "compress", src, "-o", tmp_path / "b.hpcm", "--model", "hpcm-tiny-vr",
                          "--max-bpp", "0.9")
    assert rc == 0, err
    assert container.unpack((tmp_path / "b.hpcm").read_bytes())[0].bpp() <= 0.9
    rc, stdout, err = run(capsys, "compress", src, "-o", tmp_path / "p.hpcm", "--model", "hpcm-tiny-vr",
                          "--min-psnr", "28")
    assert rc == 0, err
    assert "dB" in stdout
    rc, stdout, err = run(capsys, "decompress", tmp_path / "p.hpcm", "-o", tmp_path / "p.png")
    assert rc == 0, err
    assert psnr(crop, read_image(tmp_path / "p.png")) >= 28
    # unreachable: one clean line, nothing written
    rc, _, err = run(capsys, "compress", src, "-o", tmp_path / "x.hpcm", "--model", "hpcm-tiny-vr",
                     "--max-size", "30")
    assert rc == 1 and err.count("hpcm: error:") == 1 and "cannot fit" in err and "Traceback" not in err
    assert not (tmp_path / "x.hpcm").exists()
    rc, _, err = run(capsys, "compress", src, "-o", tmp_path / "x.hpcm", "--model", "hpcm-tiny-vr",
                     "--max-size", "2k", "--refine", "5")
    assert rc == 1 and "--refine cannot be combined" in err and not (tmp_path / "x.hpcm").exists()
    for bad in (["--max-size", "2k", "--quality", "3"], ["--max-size", "lots"], ["--min-psnr", "-3"],
                ["--max-bpp", "inf"]):
        with pytest.raises(SystemExit) as exc:  # argparse refuses
            main(["compress", str(src), "-o", str(tmp_path / "y.hpcm"), *bad])
        assert exc.value.code == 2
        assert "hpcm compress: error:" in capsys.readouterr().err


def test_byte_size_suffixes():
    from hpcm.cli.codec import _byte_size

    assert [_byte_size(t) for t in ("50000", "50k", "50KB", "48KiB", "1.5M", "2MiB", "10b")] == [
        50000, 50000, 50000, 49152, 1500000, 2097152, 10]
