"""Property-based fuzzing of .hpcm files: every mutated file decodes to the right image or is refused.

Mutations: bit flips, truncation, splices (random bytes, pieces of another valid file), header byte
changes, and the same changes with the CRC recomputed (an adversary, not noise). One source file carries an
ICC profile, an EXIF block and an XMP packet (their length fields and bytes are fuzzed too). Files of
versions 2, 3 and 4 (all fuzzed; a CRC-fixed change of the version byte between them included) carry a
checksum of the decoded latent (and files written with ``verify`` one of the decoded image), so even
CRC-fixed mutations of the streams — the side stream included — must be caught. Every case must finish in
bounded time (hypothesis deadline).
"""

from __future__ import annotations

import struct
import time
import zlib
from datetime import timedelta

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpcm.codec import container
from hpcm.codec.api import decompress_image, encode
from hpcm.entropy import conditional
from hpcm.errors import FormatError, ModelMismatchError
from hpcm.models.io import load_model

REFUSALS = (FormatError, ModelMismatchError)
#: An ICC profile's worth of bytes for the file that carries one (the container does not parse it).
ICC_PROFILE = bytes(range(256)) * 2 + b"RGB profile"
EXIF_BLOCK = b"Exif\x00\x00MM\x00*" + bytes(range(40))
XMP_PACKET = b"<x:xmpmeta xmlns:x='adobe:ns:meta/'/>"
MAX_SECONDS = 20.0  # generous bound for one decode on a loaded 2-core machine


@pytest.fixture(scope="module")
def coded():
    """hpcm-tiny, a small image, its plain and verified files (v5), plain v2, v3 and v4 files, a v5 file
    with the widest μ band, the expected decoded image, and another file."""
    torch.set_num_threads(1)
    model = load_model("hpcm-tiny")
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:24, 0:40]
    image = np.clip(np.stack([xx * 5, yy * 9, xx + yy], 2) + rng.normal(0, 20, (24, 40, 3)), 0, 255)
    image = image.astype(np.uint8)
    plain, _, _ = encode(model, image)
    verified, _, _ = encode(model, image, verify=True)
    plain_v2, _, _ = encode(model, image, format_version=2)
    plain_v3, _, _ = encode(model, image, format_version=3)
    plain_v4, _, _ = encode(model, image, format_version=4)
    with pytest.MonkeyPatch.context() as mp:  # a budget of the whole file: the widest μ band
        mp.setattr(conditional, "BAND_SHARE", 1.0)
        wide_band, _, _ = encode(model, image)
    assert wide_band != plain
    expected = decompress_image(plain, model)
    np.testing.assert_array_equal(decompress_image(plain_v2, model), expected)
    np.testing.assert_array_equal(decompress_image(plain_v3, model), expected)
    np.testing.assert_array_equal(decompress_image(plain_v4, model), expected)
    np.testing.assert_array_equal(decompress_image(wide_band, model), expected)
    other = encode(model, image[::-1].copy())[0]
    with_icc, _, _ = encode(model, image, verify=True, icc_profile=ICC_PROFILE, exif=EXIF_BLOCK,
                            xmp=XMP_PACKET)
    return model, (plain, verified, plain_v2, plain_v3, plain_v4, wide_band, with_icc), expected, other


def fix_crc(data: bytes) -> bytes:
    if len(data) < 4:
        return data
    body = data[:-4]
    return body + struct.pack(">I", zlib.crc32(body))


@st.composite
def mutation(draw, data: bytes, other: bytes):
    """A (description, mutated bytes) pair."""
    kind = draw(st.sampled_from(["flip", "truncate", "splice", "graft", "header", "extend"]))
    n = len(data)
    if kind == "flip":
        out = bytearray(data)
        for pos in draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=8)):
            out[pos] ^= 1 << draw(st.integers(0, 7))
        return kind, bytes(out)
    if kind == "truncate":
        return kind, data[: draw(st.integers(0, n - 1))]
    if kind == "extend":
        return kind, data + draw(st.binary(min_size=1, max_size=16))
    if kind == "splice":
        a = draw(st.integers(0, n))
        b = draw(st.integers(a, min(n, a + 32)))
        return kind, data[:a] + draw(st.binary(max_size=32)) + data[b:]
    if kind == "graft":  # a piece of another valid file at the same place
        a = draw(st.integers(0, min(n, len(other)) - 1))
        b = draw(st.integers(a + 1, min(n, len(other))))
        return kind, data[:a] + other[a:b] + data[b:]
    header_size = container.read_header(data).header_size
    out = bytearray(data)
    out[draw(st.integers(0, header_size - 1))] = draw(st.integers(0, 255))
    return kind, bytes(out)


def decode_timed(data: bytes, model) -> np.ndarray | Exception:
    t0 = time.perf_counter()
    try:
        result: np.ndarray | Exception = decompress_image(data, model)
    except REFUSALS as exc:
        result = exc
    assert time.perf_counter() - t0 < MAX_SECONDS
    return result


def right_or_refused(result, expected: np.ndarray) -> None:
    if isinstance(result, Exception):
        assert isinstance(result, REFUSALS)
        assert str(result) and "\n" not in str(result)
    else:
        np.testing.assert_array_equal(result, expected)


FUZZ = settings(
    max_examples=60,
    deadline=timedelta(seconds=MAX_SECONDS),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)


@FUZZ
@given(data=st.data())
def test_mutated_files_decode_right_or_are_refused(coded, data):
    model, sources, expected, other = coded
    source = data.draw(st.sampled_from(sources))
    _, mutated = data.draw(mutation(source, other))
    right_or_refused(decode_timed(mutated, model), expected)


@FUZZ
@given(data=st.data())
def test_crc_fixed_mutations_of_verified_files(coded, data):
    """An adversary who recomputes the CRC still cannot make a (verified or plain, v2-v5) file decode
    wrongly."""
    model, sources, expected, other = coded
    source = data.draw(st.sampled_from(sources))
    kind = data.draw(st.sampled_from(["mutation", "move-boundary", "stream-flip", "side", "version"]))
    header, streams = container.unpack(source)
    if kind == "version":  # the side stream read with another version's layout or μ distance
        header.version = data.draw(st.sampled_from([v for v in (2, 3, 4, 5) if v != header.version]))
        mutated = container.pack(header, streams)
    elif kind == "mutation":
        mutated = fix_crc(data.draw(mutation(source, other))[1])
    elif kind == "move-boundary":  # shift bytes between two adjacent streams, total unchanged
        i = data.draw(st.integers(0, len(streams) - 2))
        joined = streams[i] + streams[i + 1]
        cut = data.draw(st.integers(0, len(joined)))
        streams[i : i + 2] = [joined[:cut], joined[cut:]]
        mutated = container.pack(header, streams)
    elif kind == "side":  # the side stream: replaced, truncated, extended or one byte changed
        side = bytearray(streams[2])
        how = data.draw(st.sampled_from(["replace", "truncate", "extend", "byte"]))
        if how == "replace":
            side = bytearray(data.draw(st.binary(min_size=len(side), max_size=len(side))))
        elif how == "truncate":
            del side[data.draw(st.integers(0, len(side))) :]
        elif how == "extend":
            side += data.draw(st.binary(min_size=1, max_size=8))
        elif side:
            side[data.draw(st.integers(0, len(side) - 1))] = data.draw(st.integers(0, 255))
        streams[2] = bytes(side)
        mutated = container.pack(header, streams)
    else:
        which = data.draw(st.integers(0, len(streams) - 1))
        s = bytearray(streams[which])
        if not s:
            return
        s[data.draw(st.integers(0, len(s) - 1))] ^= 1 << data.draw(st.integers(0, 7))
        streams[which] = bytes(s)
        mutated = container.pack(header, streams)
    right_or_refused(decode_timed(mutated, model), expected)


@settings(max_examples=300, deadline=timedelta(seconds=2), derandomize=True)
@given(data=st.binary(max_size=200))
def test_random_bytes_never_crash_the_parser(data):
    for candidate in (data, b"HPCM\x01" + data, fix_crc(b"HPCM\x01" + data), fix_crc(b"HPCM\x02" + data)):
        try:
            container.unpack(candidate)
        except FormatError as exc:
            assert "\n" not in str(exc)


def test_unmodified_files_decode(coded):
    model, (plain, verified, plain_v2, plain_v3, plain_v4, wide_band, with_icc), expected, _ = coded
    versions = (plain[4], verified[4], plain_v2[4], plain_v3[4], plain_v4[4], wide_band[4], with_icc[4])
    assert versions == (5, 5, 2, 3, 4, 5, 5)
    np.testing.assert_array_equal(decompress_image(with_icc, model), expected)
    header = container.read_header(with_icc)
    assert (header.icc_profile, header.exif, header.xmp) == (ICC_PROFILE, EXIF_BLOCK, XMP_PACKET)
    np.testing.assert_array_equal(decompress_image(verified, model), expected)
    assert container.read_header(verified).recon_crc is not None
    assert expected.shape == (24, 40, 3)
