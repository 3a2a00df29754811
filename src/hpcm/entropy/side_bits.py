"""The side stream's bits, without torch: field widths, tolerances, the bit packer and reader, and the
μ band of a file (``hpcm info`` reads it without loading a model). The rules that produce and resolve the
fields are in :mod:`hpcm.entropy.conditional`; docs/format.md describes the layout."""

from __future__ import annotations

from hpcm.errors import FormatError

__all__ = [
    "BAND_BITS",
    "BAND_SHARE",
    "BAND_VERSION",
    "MEAN_TOLERANCE",
    "SCALE_TOLERANCE",
    "V3_MAX_BITS",
    "V3_OFFSET_BITS",
    "V3_SALTS",
    "SideReader",
    "SideWriter",
    "file_mean_tolerance",
    "read_side_head",
]

#: δ_σ and δ_μ of format v3, one per decision type, each in its own metric (|ln σ − ln b| for σ; the
#: distance of μ to its bin edge over max(1, |μ|) for μ): 5.4x and 9.1x the largest deviation measured for
#: any preset (σ 2.8e-5, μ 3.3e-6; docs/determinism.md).
SCALE_TOLERANCE = 1.5e-4
MEAN_TOLERANCE = 3e-5
#: salts per syndrome width; the per-image width offset field; the widest syndrome.
V3_SALTS = 4
V3_OFFSET_BITS = 5
V3_MAX_BITS = 63
#: From this version on the side stream starts with the exponent e (BAND_BITS bits, after the width offset)
#: of the file's μ band, δ_μ = MEAN_TOLERANCE·2^e: the encoder takes the widest band whose side stream stays
#: within BAND_SHARE of the coded y and z bytes or within the narrowest band's size. Each doubling of
#: δ_μ costs 1-2 bytes per Kodak image, so large (high-quality) files, where μ deviates most between
#: platforms, get up to 8x the margin and small ones keep format 4's band (docs/determinism.md "Format 5").
BAND_VERSION = 5
BAND_BITS = 2
BAND_SHARE = 0.0015


class SideWriter:
    """Fixed-width fields packed MSB first into bytes (the side stream of format version 2)."""

    def __init__(self) -> None:
        self._value = 0
        self._bits = 0

    def write(self, value: int, bits: int) -> None:
        if not 0 <= value < (1 << bits):
            raise ValueError(f"{value} does not fit in {bits} bits")
        self._value = (self._value << bits) | value
        self._bits += bits

    def finish(self, coded_bytes: int = 0) -> bytes:
        """The stream (``coded_bytes`` is not used: the v2 layout has no μ band)."""
        pad = -self._bits % 8
        n = (self._bits + pad) // 8
        return (self._value << pad).to_bytes(n, "big") if n else b""


class SideReader:
    """Reads :class:`SideWriter` fields; running past the end or leaving a whole byte unread is an error."""

    def __init__(self, data: bytes) -> None:
        self._value = int.from_bytes(bytes(data), "big")
        self._left = 8 * len(data)
        #: decisions of this decode that the side stream corrected (diagnostics)
        self.corrections = 0

    def read(self, bits: int) -> int:
        if bits > self._left:
            raise FormatError("side stream is truncated")
        self._left -= bits
        return (self._value >> self._left) & ((1 << bits) - 1)

    def finish(self) -> None:
        if self._left >= 8:
            raise FormatError(f"side stream has {self._left // 8} unexpected trailing bytes")
        if self._value & ((1 << self._left) - 1):
            raise FormatError("side stream padding is not zero")


def read_side_head(bits: SideReader, version: int,
                   mean_tolerance: float = MEAN_TOLERANCE) -> tuple[int, float]:
    """(width offset F, the file's δ_μ) from the start of a side stream of the v3 layout (the band field from
    ``version`` 5 on; ``mean_tolerance``: δ_μ at band 0)."""
    field = bits.read(V3_OFFSET_BITS)
    if version >= BAND_VERSION:
        mean_tolerance *= 2.0 ** bits.read(BAND_BITS)
    return field, mean_tolerance


def file_mean_tolerance(side: bytes, version: int, mean_tolerance: float = MEAN_TOLERANCE) -> float:
    """The δ_μ a side stream of format ``version`` was written with (its band field from version 5 on;
    FormatError when the stream is too short to hold it)."""
    if version < BAND_VERSION:
        return mean_tolerance
    return read_side_head(SideReader(side), version, mean_tolerance)[1]
