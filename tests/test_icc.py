"""ICC colour profiles: read under a policy, carried in the file (header flag 0x04), written to the output."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image, ImageCms

from hpcm.cli.main import main
from hpcm.codec import container
from hpcm.codec.api import decode, encode
from hpcm.codec.image_io import (
    encode_image,
    icc_description,
    icc_write_note,
    read_image_and_profile,
    read_image_with_notes,
)
from hpcm.models.io import load_model


def srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def other_rgb_profile() -> bytes:
    """An RGB profile that is not called sRGB (the built-in sRGB profile, renamed)."""
    data = srgb_profile().replace("sRGB".encode("utf-16-be"), "Wide".encode("utf-16-be"))
    assert icc_description(data) == "Wide built-in"
    return data


def gray_profile() -> bytes:
    data = bytearray(srgb_profile())
    data[16:20] = b"GRAY"
    return bytes(data)


def _retagged(data: bytes, renames: dict[bytes, bytes]) -> bytes:
    """``data`` with tag signatures renamed in its tag table (offset 128: count, then 12-byte entries)."""
    out = bytearray(data)
    for i in range(struct.unpack(">I", data[128:132])[0]):
        at = 132 + 12 * i
        out[at : at + 4] = renames.get(bytes(out[at : at + 4]), bytes(out[at : at + 4]))
    return bytes(out)


def swapped_rgb_profile() -> bytes:
    """sRGB with the red and green primaries exchanged: its pixel (a, b, c) is sRGB's (b, a, c)."""
    data = _retagged(other_rgb_profile(), {b"rXYZ": b"gXYZ", b"gXYZ": b"rXYZ"})
    assert icc_description(data) == "Wide built-in"
    return data


def gray_srgb_curve_profile() -> bytes:
    """A grayscale profile with sRGB's tone curve: its gray v is sRGB's (v, v, v)."""
    data = bytearray(_retagged(other_rgb_profile(), {b"rTRC": b"kTRC"}))
    data[16:20] = b"GRAY"
    return bytes(data)


@pytest.fixture
def image() -> np.ndarray:
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:40, 0:56]
    base = np.stack([xx * 4, yy * 6, (xx + yy) * 2], 2) + rng.normal(0, 12, (40, 56, 3))
    return np.clip(base, 0, 255).astype(np.uint8)


def save_png(path, image: np.ndarray, profile: bytes | None) -> None:
    kwargs = {"icc_profile": profile} if profile is not None else {}
    Image.fromarray(image).save(path, "PNG", **kwargs)


def test_policies(image, tmp_path):
    srgb, wide = srgb_profile(), other_rgb_profile()
    for name, profile in (("srgb", srgb), ("wide", wide), ("none", None), ("gray", gray_profile())):
        save_png(tmp_path / f"{name}.png", image, profile)
    read = {policy: {name: read_image_and_profile(tmp_path / f"{name}.png", icc=policy)
                     for name in ("srgb", "wide", "none", "gray")} for policy in ("auto", "keep", "drop")}
    for policy in read:
        for arr, _, _ in read[policy].values():
            np.testing.assert_array_equal(arr, image)  # the pixels are coded as they are
    assert read["auto"]["srgb"][2] is None and read["auto"]["srgb"][1] == []
    assert read["auto"]["wide"][2] == wide and "'Wide built-in' kept" in read["auto"]["wide"][1][0]
    assert read["keep"]["srgb"][2] == srgb
    assert all(r[2] is None for r in read["drop"].values()) and all(r[1] == [] for r in read["drop"].values())
    assert all(read[p]["none"][2] is None for p in read)
    for policy in ("auto", "keep"):
        arr, notes, kept = read[policy]["gray"]
        assert kept is None and "dropped" in notes[0]
    assert read_image_with_notes(tmp_path / "wide.png")[1] == []  # the old entry point reads no profile
    with pytest.raises(ValueError):
        read_image_and_profile(tmp_path / "wide.png", icc="convert")


def test_srgb_policy_converts_the_pixels(image, tmp_path):
    save_png(tmp_path / "swapped.png", image, swapped_rgb_profile())
    arr, notes, kept = read_image_and_profile(tmp_path / "swapped.png", icc="srgb")
    assert kept is None and notes == ["colours converted from ICC profile 'Wide built-in' to sRGB"]
    assert np.abs(arr.astype(int) - image[:, :, [1, 0, 2]]).max() <= 2  # red and green exchanged
    # alpha survives the conversion (and is then handled by the alpha policy)
    rgba = np.concatenate([image, np.full(image.shape[:2] + (1,), 255, np.uint8)], 2)
    rgba[0, 0, 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "swapped-a.png", icc_profile=swapped_rgb_profile())
    arr_a, _, _ = read_image_and_profile(tmp_path / "swapped-a.png", icc="srgb", alpha="drop")
    np.testing.assert_array_equal(arr_a, arr)
    # grayscale pixels through a gray profile: three equal channels
    gray = image[:, :, 0]
    Image.fromarray(gray, "L").save(tmp_path / "gray.png", icc_profile=gray_srgb_curve_profile())
    arr_g, notes_g, kept_g = read_image_and_profile(tmp_path / "gray.png", icc="srgb")
    assert kept_g is None and "converted" in notes_g[0]
    assert np.abs(arr_g.astype(int) - gray[:, :, None]).max() <= 2
    # sRGB, untagged and mismatched profiles leave the pixels alone
    save_png(tmp_path / "srgb.png", image, srgb_profile())
    save_png(tmp_path / "none.png", image, None)
    save_png(tmp_path / "gray-on-rgb.png", image, gray_profile())
    for name, note in (("srgb", None), ("none", None), ("gray-on-rgb", "does not describe RGB pixels")):
        arr_n, notes_n, kept_n = read_image_and_profile(tmp_path / f"{name}.png", icc="srgb")
        np.testing.assert_array_equal(arr_n, image)
        assert kept_n is None and (notes_n == [] if note is None else note in notes_n[0])


def test_written_images_carry_the_profile(image, tmp_path):
    wide = other_rgb_profile()
    for fmt in ("PNG", "WEBP", "TIFF", "JPEG"):
        assert Image.open(io.BytesIO(encode_image(image, fmt, wide))).info.get("icc_profile") == wide
    assert "icc_profile" not in Image.open(io.BytesIO(encode_image(image, "PNG"))).info
    assert icc_write_note(tmp_path / "x.png", wide) is None
    assert icc_write_note(tmp_path / "x.bmp", None) is None
    assert "BMP cannot carry" in icc_write_note(tmp_path / "x.bmp", wide)


def test_container_roundtrip(image):
    model = load_model("hpcm-tiny")
    wide = other_rgb_profile()
    plain, plain_header, _ = encode(model, image)
    data, header, _ = encode(model, image, verify=True, icc_profile=wide)
    assert len(data) == len(plain) + 4 + len(wide) + 4  # length field + profile; + the recon CRC
    parsed, _ = container.unpack(data)
    assert parsed.icc_profile == wide and parsed.flags & container.FLAG_ICC
    assert parsed.header_size == header.header_size
    assert parsed.as_dict()["icc_profile_bytes"] == len(wide)
    decoded, dec_header, _ = decode(data, model)
    np.testing.assert_array_equal(decoded, decode(plain, model)[0])
    assert dec_header.icc_profile == wide and plain_header.icc_profile is None
    # length fields and version 1: tests/test_metadata.py::test_each_block_is_checked (every block)


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_carries_the_profile_to_the_decoded_image(image, tmp_path, capsys):
    wide = other_rgb_profile()
    src = tmp_path / "wide.png"
    save_png(src, image, wide)
    rc, _, err = run(capsys, "compress", src, "-o", tmp_path / "w.hpcm", "--model", "hpcm-tiny-vr")
    assert rc == 0, err
    assert "'Wide built-in' kept" in err
    rc, out, err = run(capsys, "info", tmp_path / "w.hpcm")
    assert rc == 0 and "Wide built-in" in out and f"icc_profile_bytes  {len(wide)}" in out
    rc, _, err = run(capsys, "decompress", tmp_path / "w.hpcm", "-o", tmp_path / "w.png")
    assert rc == 0, err
    assert Image.open(tmp_path / "w.png").info.get("icc_profile") == wide
    rc, _, err = run(capsys, "decompress", tmp_path / "w.hpcm", "-o", tmp_path / "w.bmp")
    assert rc == 0 and "BMP cannot carry the image's ICC profile" in err
    rc, _, err = run(capsys, "compress", src, "-o", tmp_path / "d.hpcm", "--model", "hpcm-tiny-vr",
                     "--icc", "drop")
    assert rc == 0 and "kept" not in err
    assert container.read_header((tmp_path / "d.hpcm").read_bytes()).icc_profile is None
    rc, _, err = run(capsys, "decompress", tmp_path / "d.hpcm", "-o", tmp_path / "d.png")
    assert rc == 0 and "icc_profile" not in Image.open(tmp_path / "d.png").info
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "d.png")),
                                  np.asarray(Image.open(tmp_path / "w.png")))
    rc, _, err = run(capsys, "compress", src, "-o", tmp_path / "s.hpcm", "--model", "hpcm-tiny-vr",
                     "--icc", "srgb")
    assert rc == 0 and "converted from ICC profile 'Wide built-in' to sRGB" in err
    assert container.read_header((tmp_path / "s.hpcm").read_bytes()).icc_profile is None
