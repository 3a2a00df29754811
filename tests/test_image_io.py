"""Reading images of every supported kind into (H, W, 3) uint8, and writing them back."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hpcm.codec import container
from hpcm.codec.image_io import ImageNote, read_image, read_image_with_notes, write_image
from hpcm.errors import HPCMError, ImageError

RNG = np.random.default_rng(1)


def rgb(h=5, w=7) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def save(tmp_path: Path, im: Image.Image, name: str, **kw) -> Path:
    p = tmp_path / name
    im.save(p, **kw)
    return p


def png16_rgb(arr: np.ndarray) -> bytes:
    """A 48-bit RGB PNG written by hand (Pillow cannot write one)."""
    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + arr[i].astype(">u2").tobytes() for i in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def test_rgb_png_exact(tmp_path):
    a = rgb()
    out = read_image(save(tmp_path, Image.fromarray(a), "a.png"))
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3)
    np.testing.assert_array_equal(out, a)


def test_grayscale_replicated(tmp_path):
    g = RNG.integers(0, 256, (4, 6), dtype=np.uint8)
    out = read_image(save(tmp_path, Image.fromarray(g, "L"), "g.png"))
    np.testing.assert_array_equal(out, np.repeat(g[:, :, None], 3, axis=2))
    bw = Image.fromarray(g > 128).convert("1")
    out = read_image(save(tmp_path, bw, "b.png"))
    assert set(np.unique(out)) <= {0, 255}


def test_palette_expanded(tmp_path):
    a = rgb(6, 6)
    p = Image.fromarray(a).quantize(8)
    out = read_image(save(tmp_path, p, "p.png"))
    np.testing.assert_array_equal(out, np.asarray(p.convert("RGB")))


def test_palette_with_transparency_refused(tmp_path):
    p = Image.fromarray(rgb(6, 6)).quantize(8)
    path = save(tmp_path, p, "pt.png", transparency=0)
    with pytest.raises(ImageError, match="transparency"):
        read_image(path)


def test_opaque_alpha_dropped_silently(tmp_path, recwarn):
    a = rgb()
    rgba = np.concatenate([a, np.full((5, 7, 1), 255, np.uint8)], axis=2)
    out, notes = read_image_with_notes(save(tmp_path, Image.fromarray(rgba, "RGBA"), "o.png"))
    np.testing.assert_array_equal(out, a)
    assert notes == []


def test_transparency_policies(tmp_path):
    a = rgb()
    alpha = np.full((5, 7, 1), 255, np.uint8)
    alpha[0, 0, 0] = 0
    alpha[1, 1, 0] = 128
    path = save(tmp_path, Image.fromarray(np.concatenate([a, alpha], axis=2), "RGBA"), "t.png")
    with pytest.raises(ImageError, match="--alpha"):
        read_image(path)
    with pytest.warns(ImageNote, match="discarded"):
        dropped = read_image(path, alpha="drop")
    np.testing.assert_array_equal(dropped, a)
    white, notes = read_image_with_notes(path, alpha="white")
    assert "white" in notes[0]
    np.testing.assert_array_equal(white[0, 0], [255, 255, 255])
    expect = (a[1, 1].astype(int) * 128 + 255 * 127 + 127) // 255
    np.testing.assert_array_equal(white[1, 1], expect)
    np.testing.assert_array_equal(white[2:], a[2:])


def test_la_image(tmp_path):
    la = np.stack([RNG.integers(0, 256, (3, 4), dtype=np.uint8), np.full((3, 4), 255, np.uint8)], axis=2)
    out = read_image(save(tmp_path, Image.fromarray(la, "LA"), "la.png"))
    np.testing.assert_array_equal(out[:, :, 1], la[:, :, 0])


def test_16bit_gray_takes_high_byte(tmp_path):
    g = np.array([[0, 257, 65535, 1000, 40000, 65280]], dtype=np.uint16)
    path = save(tmp_path, Image.fromarray(g), "g16.png")
    out, notes = read_image_with_notes(path)
    np.testing.assert_array_equal(out[0, :, 0], (g[0] >> 8).astype(np.uint8))
    assert any("16-bit" in n for n in notes)


def test_16bit_rgb_png_takes_high_byte(tmp_path):
    a16 = RNG.integers(0, 65536, (3, 5, 3)).astype(np.uint16)
    path = tmp_path / "c16.png"
    path.write_bytes(png16_rgb(a16))
    out, notes = read_image_with_notes(path)
    np.testing.assert_array_equal(out, (a16 >> 8).astype(np.uint8))
    assert any("16-bit" in n for n in notes)


def test_float_and_int32_modes_refused(tmp_path):
    path = save(tmp_path, Image.fromarray(np.zeros((3, 3), np.float32), "F"), "f.tiff")
    with pytest.raises(ImageError, match="unsupported image mode 'F'"):
        read_image(path)


def test_exif_orientation_applied(tmp_path):
    a = rgb(4, 6)  # 4 rows, 6 columns
    im = Image.fromarray(a)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = save(tmp_path, im, "o.png", exif=exif)
    out = read_image(path)
    assert out.shape == (6, 4, 3)
    np.testing.assert_array_equal(out, np.rot90(a, k=-1))


def test_jpeg_exif_orientation(tmp_path):
    a = np.zeros((16, 32, 3), np.uint8)
    a[:, :16] = 255
    exif = Image.Exif()
    exif[0x0112] = 8
    out = read_image(save(tmp_path, Image.fromarray(a), "o.jpg", exif=exif, quality=95))
    assert out.shape == (32, 16, 3)


def test_cmyk_jpeg_converted(tmp_path):
    im = Image.fromarray(rgb(8, 8)).convert("CMYK")
    out = read_image(save(tmp_path, im, "c.jpg"))
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8


def test_multiframe_uses_first_frame(tmp_path):
    frames = [Image.fromarray(np.full((4, 4, 3), v, np.uint8)) for v in (10, 200)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    out, notes = read_image_with_notes(path)
    assert abs(int(out[0, 0, 0]) - 10) <= 2
    assert any("first" in n for n in notes)


def test_too_large_refused_before_decoding(tmp_path):
    path = save(tmp_path, Image.new("L", (container.MAX_SIDE + 1, 1)), "wide.png")
    with pytest.raises(ImageError, match="exceeds the limit"):
        read_image(path)


def test_one_pixel(tmp_path):
    out = read_image(save(tmp_path, Image.new("RGB", (1, 1), (1, 2, 3)), "one.png"))
    np.testing.assert_array_equal(out, [[[1, 2, 3]]])


@pytest.mark.parametrize("content, message", [(b"not an image", "not an image"), (None, "no such file")])
def test_unreadable(tmp_path, content, message):
    path = tmp_path / "x.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageError, match=message):
        read_image(path)


def test_truncated_png(tmp_path):
    path = save(tmp_path, Image.fromarray(rgb(64, 64)), "t.png")
    path.write_bytes(path.read_bytes()[:-60])
    with pytest.raises(ImageError):
        read_image(path)


def test_write_image_atomic_and_no_overwrite(tmp_path):
    a = rgb()
    p = write_image(tmp_path / "w.png", a)
    np.testing.assert_array_equal(read_image(p), a)
    with pytest.raises(HPCMError, match="--force"):
        write_image(p, a)
    write_image(p, a[::-1].copy(), overwrite=True)
    np.testing.assert_array_equal(read_image(p), a[::-1])
    with pytest.raises(ImageError, match="extension"):
        write_image(tmp_path / "w.xyz", a)
    with pytest.raises(ImageError, match="uint8"):
        write_image(tmp_path / "f.png", a.astype(np.float32))
