"""The .hpcm container (no model needed) and atomic writes."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import pytest

from hpcm.codec import container
from hpcm.codec.atomic import OutputExistsError, atomic_write_bytes
from hpcm.codec.container import Header, pack, read_header, unpack
from hpcm.errors import FormatError, HPCMError


def make_header(**kw) -> Header:
    fields = dict(
        preset="hpcm-tiny", quality=3, fingerprint=bytes(range(8)), height=100, width=257,
        padded_height=128, padded_width=320, crop_top=14, crop_left=31, padding="replicate",
        device="cpu", z_shape=(2, 5), latent_crc=0x12345678,
    )
    fields.update(kw)
    if fields.get("version") == 1:
        fields["latent_crc"] = None
    return Header(**fields)


STREAMS = [b"\x01\x02\x03y-stream" * 3, b"zz"]


def recrc(data: bytes) -> bytes:
    body = data[:-4]
    return body + struct.pack(">I", zlib.crc32(body))


@pytest.mark.parametrize("version", [1, 2, 3])
def test_roundtrip_fields_and_sizes(version):
    h = make_header(recon_crc=0xDEADBEEF, version=version)
    data = pack(h, STREAMS)
    assert data[:4] == b"HPCM" and data[4] == version
    assert len(data) == h.file_size
    h2, streams = unpack(data)
    assert streams == STREAMS
    assert h2 == h
    assert h2.stream_lengths == (len(STREAMS[0]), 2)
    assert read_header(data).recon_crc == 0xDEADBEEF
    info = h2.as_dict()
    assert info["size"] == [100, 257] and info["fingerprint"] == "0001020304050607"
    assert info["bpp"] == pytest.approx(8 * len(data) / (100 * 257))
    assert info["payload_bpp"] == pytest.approx(8 * sum(map(len, STREAMS)) / (100 * 257))
    assert info["latent_crc"] == (None if version == 1 else "12345678")


@pytest.mark.parametrize("quality, code", [(3, 300), (2.5, 250), (0, 0), (0.01, 1), (655.35, 65535)])
def test_v2_quality_is_fractional(quality, code):
    data = pack(make_header(quality=quality), STREAMS)
    q = _field_offset(data)
    assert struct.unpack(">H", data[q : q + 2])[0] == code
    got = unpack(data)[0].quality
    assert got == quality and isinstance(got, float if code % 100 else int)


def test_quality_limits_per_version():
    with pytest.raises(FormatError, match="version-1"):
        make_header(quality=2.5, version=1).validate()
    with pytest.raises(FormatError, match="invalid quality"):
        make_header(quality=700).validate()
    assert unpack(pack(make_header(quality=255, version=1), STREAMS))[0].quality == 255
    with pytest.raises(FormatError, match="latent checksum"):
        make_header(latent_crc=None).validate()


def test_without_recon_crc_is_four_bytes_shorter():
    a = pack(make_header(), STREAMS)
    b = pack(make_header(recon_crc=1), STREAMS)
    assert len(b) == len(a) + 4
    assert unpack(a)[0].recon_crc is None


@pytest.mark.parametrize("layout, flags", [("channels_last", 0x03), ("contiguous", 0x01)])
def test_reconstruction_layout_is_flag_bit_1(layout, flags):
    data = pack(make_header(recon_crc=7, recon_layout=layout), STREAMS)
    assert data[5] == flags
    h = unpack(data)[0]
    assert h.recon_layout == layout and h.as_dict()["recon_layout"] == layout
    assert unpack(pack(make_header(recon_layout="contiguous"), STREAMS))[0].as_dict()["recon_layout"] is None
    # bit 1 means nothing without a reconstruction checksum: refused
    bad = bytearray(pack(make_header(), STREAMS))
    bad[5] |= 0x02
    with pytest.raises(FormatError, match="flag 0x02 without a reconstruction checksum"):
        unpack(recrc(bytes(bad)))


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "bad magic"),
        (b"PNG\x00" + bytes(60), "bad magic"),
        (b"HPCM\x07" + bytes(60), "unsupported .hpcm format version 7"),
        (b"HPCM", "truncated"),
    ],
)
def test_bad_starts(data, message):
    with pytest.raises(FormatError, match=message):
        unpack(data)


def test_every_truncation_is_refused():
    data = pack(make_header(), STREAMS)
    for n in range(len(data)):
        with pytest.raises(FormatError):
            unpack(data[:n])


def test_trailing_bytes_refused():
    data = pack(make_header(), STREAMS)
    with pytest.raises(FormatError, match="unexpected bytes"):
        unpack(data + b"\x00")


@pytest.mark.parametrize("version", [1, 2, 3])
def test_every_single_bit_flip_is_refused(version):
    data = pack(make_header(recon_crc=5, version=version), STREAMS)
    for i in range(len(data)):
        for bit in range(8):
            bad = bytearray(data)
            bad[i] ^= 1 << bit
            with pytest.raises(FormatError):
                unpack(bytes(bad))


def _field_offset(data: bytes) -> int:
    """Offset of the quality byte (first field after the preset name)."""
    return 7 + data[6]


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(height=0), "empty"),
        (dict(height=9000, padded_height=9024, z_shape=(141, 5), crop_top=0), "exceeds the limit"),
        (dict(padded_height=160, z_shape=(2, 5)), "padded size 160x320"),
        (dict(padded_height=64, z_shape=(1, 5), crop_top=0), "smaller than image"),
        (dict(crop_top=40), "crop window"),
        (dict(z_shape=(3, 5)), "latent shape"),
        (dict(preset="bad name!"), "invalid model name"),
        (dict(padded_height=1280, z_shape=(20, 5)), "padding too large"),
    ],
)
def test_inconsistent_headers_refused(kw, message):
    with pytest.raises(FormatError, match=message):
        make_header(**kw).validate()


@pytest.mark.parametrize("version", [1, 2, 3])
def test_recomputed_crc_cannot_smuggle_bad_fields(version):
    data = pack(make_header(version=version), STREAMS)
    q = _field_offset(data) + (version > 1)  # v2, v3: the quality field is 2 bytes
    # unknown flag bit
    bad = bytearray(data)
    bad[5] |= 0x80
    with pytest.raises(FormatError, match="flags"):
        unpack(recrc(bytes(bad)))
    # padding / device codes out of range (bytes after quality, fp, 4 sizes, 2 crops)
    pad_at = q + 1 + 8 + 16 + 4
    for off in (pad_at, pad_at + 1):
        bad = bytearray(data)
        bad[off] = 200
        with pytest.raises(FormatError, match="padding or device"):
            unpack(recrc(bytes(bad)))
    # zero streams
    n_at = pad_at + 2 + 8
    bad = bytearray(data)
    bad[n_at] = 0
    with pytest.raises(FormatError):
        unpack(recrc(bytes(bad)))
    # width enlarged past the padded size
    bad = bytearray(data)
    bad[q + 1 + 8 + 4 : q + 1 + 8 + 8] = struct.pack(">I", 400)
    with pytest.raises(FormatError):
        unpack(recrc(bytes(bad)))


def test_pack_validates():
    with pytest.raises(FormatError):
        pack(make_header(width=321), STREAMS)


def test_check_image_size_limits():
    container.check_image_size(1, 1, error=ValueError)
    container.check_image_size(2160, 3840, error=ValueError)
    with pytest.raises(ValueError):
        container.check_image_size(container.MAX_SIDE + 1, 1, error=ValueError)
    with pytest.raises(ValueError):
        container.check_image_size(4097, 4097, error=ValueError)


# -- atomic writes ---------------------------------------------------------------------------------


def test_atomic_write_creates_and_refuses_overwrite(tmp_path: Path):
    target = tmp_path / "out.bin"
    atomic_write_bytes(target, b"one")
    assert target.read_bytes() == b"one"
    with pytest.raises(OutputExistsError, match="--force"):
        atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"one"
    atomic_write_bytes(target, b"two", overwrite=True)
    assert target.read_bytes() == b"two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]  # no temp files left


def test_atomic_write_permissions_follow_umask(tmp_path: Path):
    old = os.umask(0o022)
    try:
        p = atomic_write_bytes(tmp_path / "a", b"x")
    finally:
        os.umask(old)
    assert p.stat().st_mode & 0o777 == 0o644


def test_atomic_write_missing_dir(tmp_path: Path):
    with pytest.raises(HPCMError, match="does not exist"):
        atomic_write_bytes(tmp_path / "nope" / "a", b"x")
