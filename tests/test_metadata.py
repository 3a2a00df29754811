"""EXIF / XMP metadata: read under a policy, carried in the file (header flags 0x08 / 0x10), written out."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from hpcm.cli.main import main
from hpcm.codec import container
from hpcm.codec.api import decode, encode
from hpcm.codec.image_io import (
    ImageMetadata,
    encode_image,
    exif_summary,
    metadata_write_note,
    read_image_and_profile,
    read_image_with_metadata,
)
from hpcm.errors import FormatError
from hpcm.models.io import load_model

XMP = (b'<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
       b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" '
       b'xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:creator>hpcm test</dc:creator></rdf:Description>'
       b'</rdf:RDF></x:xmpmeta><?xpacket end="w"?>')


def camera_exif(orientation: int = 6) -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = "TestMake"
    exif[0x0110] = "TestMake Camera 1"
    exif[0x0112] = orientation
    exif.get_ifd(0x8769)[0x9003] = "2026:12:07 12:00:00"  # DateTimeOriginal, in the Exif IFD
    return exif


@pytest.fixture
def image() -> np.ndarray:
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[0:32, 0:48]
    base = np.stack([xx * 5, yy * 7, (xx + yy) * 2], 2) + rng.normal(0, 10, (32, 48, 3))
    return np.clip(base, 0, 255).astype(np.uint8)


@pytest.fixture
def tagged_jpeg(image, tmp_path):
    """A camera-like JPEG: EXIF (rotated 90° by its orientation tag, a date in the Exif IFD) and XMP."""
    path = tmp_path / "camera.jpg"
    Image.fromarray(image).save(path, "JPEG", quality=95, exif=camera_exif().tobytes(), xmp=XMP)
    return path


def test_policies(tagged_jpeg):
    read = {p: read_image_with_metadata(tagged_jpeg, metadata=p) for p in ("none", "exif", "xmp", "all")}
    for arr, _, _ in read.values():
        assert arr.shape == (48, 32, 3)  # orientation 6 applied: upright pixels
    _, notes, meta = read["none"]
    assert meta == ImageMetadata()
    assert "EXIF (" in notes[0] and "XMP (" in notes[0] and "not carried" in notes[0]
    _, notes, meta = read["all"]
    assert notes == [] and meta.xmp == XMP and meta.exif.startswith(b"Exif\x00\x00")
    exif = Image.Exif()
    exif.load(meta.exif)
    assert exif[0x0110] == "TestMake Camera 1" and 0x0112 not in exif  # the pixels are upright now
    assert exif.get_ifd(0x8769)[0x9003] == "2026:12:07 12:00:00"
    assert exif_summary(meta.exif) == "TestMake Camera 1, 2026:12:07 12:00:00"
    assert read["exif"][2].xmp is None and read["exif"][2].exif == meta.exif
    assert read["xmp"][2].exif is None and read["xmp"][2].xmp == XMP
    assert "XMP (" in read["exif"][1][0] and "EXIF" not in read["exif"][1][0]
    # the ICC-only entry point neither reads metadata nor notes it
    assert read_image_and_profile(tagged_jpeg)[1] == []
    with pytest.raises(ValueError):
        read_image_with_metadata(tagged_jpeg, metadata="gps")


def test_written_images_carry_it(image, tmp_path):
    exif = camera_exif(orientation=1).tobytes()
    for fmt in ("PNG", "JPEG", "WEBP", "TIFF"):
        back = Image.open(io.BytesIO(encode_image(image, fmt, exif=exif, xmp=XMP)))
        assert back.getexif()[0x0110] == "TestMake Camera 1", fmt
        xmp = back.info.get("xmp")
        assert (xmp if isinstance(xmp, bytes) else bytes(back.tag_v2[700])) == XMP, fmt
    assert metadata_write_note(tmp_path / "x.png", ImageMetadata(exif=exif, xmp=XMP)) is None
    note = metadata_write_note(tmp_path / "x.bmp", ImageMetadata(exif=exif, xmp=XMP))
    assert "BMP cannot carry the image's EXIF metadata and XMP metadata" in note
    huge = b"Exif\x00\x00" + bytes(70_000)  # over JPEG's one APP1 segment: left out, with a note
    assert "too large for JPEG" in metadata_write_note(tmp_path / "x.jpg", ImageMetadata(exif=huge))
    assert "exif" not in Image.open(io.BytesIO(encode_image(image, "JPEG", exif=huge))).info


def test_container_roundtrip(image):
    model = load_model("hpcm-tiny")
    exif = camera_exif().tobytes()
    plain, _, _ = encode(model, image)
    data, header, _ = encode(model, image, exif=exif, xmp=XMP)
    assert len(data) == len(plain) + 8 + len(exif) + len(XMP)
    parsed, _ = container.unpack(data)
    assert (parsed.exif, parsed.xmp, parsed.icc_profile) == (exif, XMP, None)
    assert parsed.flags == container.FLAG_EXIF | container.FLAG_XMP
    assert parsed.as_dict()["exif_bytes"] == len(exif) and parsed.as_dict()["xmp_bytes"] == len(XMP)
    np.testing.assert_array_equal(decode(data, model)[0], decode(plain, model)[0])


@pytest.mark.parametrize("block", container.METADATA_BLOCKS, ids=lambda b: b.attribute)
def test_each_block_is_checked(block, image):
    """A length field that disagrees with the file (CRC recomputed) and the flag in a version-1 file are
    refused cleanly, for the ICC profile, the EXIF block and the XMP packet alike."""
    model = load_model("hpcm-tiny")
    payload = b"\x01" * 300
    data, _, _ = encode(model, image, **{block.attribute: payload})
    parsed, _ = container.unpack(data)
    assert getattr(parsed, block.attribute) == payload and parsed.flags == block.flag
    with pytest.raises(FormatError, match="version-1"):
        encode(model, image, format_version=1, **{block.attribute: payload})
    at = parsed.header_size - len(payload) - 4
    assert struct.unpack(">I", data[at : at + 4])[0] == len(payload)
    for bad in (0, len(payload) + 1, len(payload) - 1, block.max_bytes + 1):
        body = data[:at] + struct.pack(">I", bad) + data[at + 4 : -4]
        with pytest.raises(FormatError) as exc:
            container.unpack(body + struct.pack(">I", zlib.crc32(body)))
        assert "\n" not in str(exc.value)
    v1 = bytearray(encode(model, image, format_version=1)[0][:-4])
    v1[5] |= block.flag
    with pytest.raises(FormatError, match="unknown header flags"):
        container.unpack(bytes(v1) + struct.pack(">I", zlib.crc32(bytes(v1))))


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_carries_metadata_when_asked(tagged_jpeg, tmp_path, capsys):
    rc, _, err = run(capsys, "compress", tagged_jpeg, "-o", tmp_path / "p.hpcm", "--model", "hpcm-tiny-vr")
    assert rc == 0 and "metadata not carried (--metadata all carries them)" in err
    assert container.read_header((tmp_path / "p.hpcm").read_bytes()).exif is None
    rc, _, err = run(capsys, "compress", tagged_jpeg, "-o", tmp_path / "m.hpcm", "--model", "hpcm-tiny-vr",
                     "--metadata", "all")
    assert rc == 0 and "not carried" not in err
    rc, out, _ = run(capsys, "info", tmp_path / "m.hpcm")
    assert rc == 0 and "TestMake Camera 1, 2026:12:07" in out
    rc, _, err = run(capsys, "decompress", tmp_path / "m.hpcm", "-o", tmp_path / "m.png")
    assert rc == 0, err
    back = Image.open(tmp_path / "m.png")
    assert back.size == (32, 48) and back.getexif()[0x0110] == "TestMake Camera 1"
    assert 0x0112 not in back.getexif() and back.info.get("xmp") == XMP
    rc, _, err = run(capsys, "decompress", tmp_path / "m.hpcm", "-o", tmp_path / "m.bmp")
    assert rc == 0 and "BMP cannot carry the image's EXIF metadata and XMP metadata" in err


@pytest.mark.parametrize("raw", [b"Exif\x00\x00garbage bytes", b"Exif\x00\x00MM\x00*\x00\x00\xff\xff"],
                         ids=["not-tiff", "bad-ifd-offset"])
def test_broken_exif_loses_nothing_else(image, tmp_path, raw, recwarn):
    path = tmp_path / "broken.jpg"
    Image.fromarray(image).save(path, "JPEG", quality=95, exif=raw, xmp=XMP)
    arr, notes, meta = read_image_with_metadata(path, metadata="all")
    assert arr.shape == image.shape and meta.exif is None and meta.xmp == XMP
    assert all("EXIF" in n for n in notes) and not [w for w in recwarn if "EXIF" in str(w.message)]
