"""The ``.hpcm`` container: header, entropy-coded streams, CRC-32 trailer (see docs/format.md).

Version 2 (written): quality in 1/100 units (16 bit), a CRC-32 of the decoded latent ŷ, three streams
(y, z, side). Version 1 (read, and written on request): 1-byte integer quality, no latent checksum.

Everything here is pure bytes handling; it needs no model. ``pack`` builds a file from a
:class:`Header` and the streams, ``unpack`` checks and splits one. Every defect found by ``unpack``
raises :class:`hpcm.errors.FormatError` with a one-line message.
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass, field

from hpcm.errors import FormatError

MAGIC = b"HPCM"
#: Version written by default. 3: the layout of 2, the side stream of format v3; 4: the layout and side stream
#: of 3, μ decisions measured against max(1, σ, |μ|); 5: that of 4 with a per-file μ band in the side stream
#: (docs/format.md).
VERSION = 5
SUPPORTED_VERSIONS = (1, 2, 3, 4, 5)

#: Largest accepted image side and area (pixels). Larger images are refused (memory grows linearly).
MAX_SIDE = 8192
MAX_PIXELS = 4096 * 4096
#: Ratio between the padded image and the hyper-latent z grid (g_a /16, h_a /4).
Z_STRIDE = 64
#: Padding added to a side is below this (a bound that keeps corrupted headers from allocating a lot).
MAX_PAD = 1024
MAX_STREAMS = 8
MAX_PRESET_LEN = 64
FINGERPRINT_BYTES = 8

FLAG_RECON_CRC = 0x01
#: With FLAG_RECON_CRC only: the reconstruction checksum was computed with the synthesis transform run in
#: channels-last memory layout (current writers set it with every reconstruction checksum); clear: in the
#: contiguous layout of writers before it (decoded in that layout, so their checksums still hold).
FLAG_RECON_CHANNELS_LAST = 0x02
#: An ICC colour profile follows the checksums (versions 2+): its length (4 bytes) and its bytes. The pixels
#: are coded as they are; the decoder writes the profile into the decoded image (docs/format.md).
FLAG_ICC = 0x04
#: The image's EXIF block ("Exif\0\0" + TIFF structure, orientation reset) follows, as the ICC profile does.
FLAG_EXIF = 0x08
#: The image's XMP packet follows, as the ICC profile does.
FLAG_XMP = 0x10
#: Largest ICC profile a file holds (real profiles are 0.5-60 KB).
MAX_ICC_BYTES = 1 << 20
#: Largest EXIF block / XMP packet a file holds (JPEG caps EXIF at 64 KB; XMP is usually under 20 KB).
MAX_METADATA_BYTES = 1 << 20


@dataclass(frozen=True)
class MetadataBlock:
    """One optional block after the checksums (versions 2+): a 4-byte length, then the bytes."""

    flag: int
    attribute: str  # the Header attribute that holds it
    name: str  # as messages call it
    max_bytes: int


#: The metadata blocks, in file order (docs/format.md).
METADATA_BLOCKS = (
    MetadataBlock(FLAG_ICC, "icc_profile", "ICC profile", MAX_ICC_BYTES),
    MetadataBlock(FLAG_EXIF, "exif", "EXIF block", MAX_METADATA_BYTES),
    MetadataBlock(FLAG_XMP, "xmp", "XMP packet", MAX_METADATA_BYTES),
)
METADATA_FLAGS = sum(block.flag for block in METADATA_BLOCKS)
KNOWN_FLAGS = FLAG_RECON_CRC | FLAG_RECON_CHANNELS_LAST | METADATA_FLAGS

PADDING_MODES = ("replicate", "reflect", "zeros")
DEVICE_KINDS = ("cpu", "cuda", "mps", "other")

_PRESET_RE = re.compile(r"^[A-Za-z0-9._+-]+$")
_FIXED_HEAD = struct.Struct(">4sBBB")  # magic, version, flags, preset length
_BODY = struct.Struct(">B8sIIIIHHBBBIIB")  # v1: quality .. number of streams
_BODY_V2 = struct.Struct(">H8sIIIIHHBBBIIB")  # v2: quality in 1/100 units .. number of streams
#: Largest quality a v2 header holds (16 bits in units of 1/100).
MAX_QUALITY_V2 = 0xFFFF / 100
_U32 = struct.Struct(">I")
_TRAILER = 4


@dataclass
class Header:
    """Decoded ``.hpcm`` header fields.

    ``height``/``width``: original image size; ``padded_*``: the size given to the network;
    ``crop_top``/``crop_left``: where the original sits in the padded image; ``z_shape``: the
    hyper-latent grid (padded / 64); ``stream_lengths``: byte length of each stream (y, z[, side]).
    ``quality``: the rate point (0 = not applicable), fractional from v2 on (stored in 1/100 units), an
    integer in v1. ``latent_crc``: CRC-32 of the decoded latent ŷ (v2 and v3, always present). ``device`` and
    ``threads`` record where the encoder ran; from v2 on they are informational (the decoder ignores them).
    ``recon_layout``: with ``recon_crc`` only, the memory layout g_s ran in when the checksum was taken
    ("channels_last", or "contiguous" for files of earlier writers; the decoder reproduces it).
    ``icc_profile``: the source image's ICC colour profile (RGB), carried to the decoded image; None: sRGB.
    ``exif``, ``xmp``: the source image's EXIF block and XMP packet, carried to the decoded image (None:
    none).
    """

    preset: str
    quality: float
    fingerprint: bytes
    height: int
    width: int
    padded_height: int
    padded_width: int
    crop_top: int = 0
    crop_left: int = 0
    padding: str = "replicate"
    device: str = "cpu"
    threads: int = 0
    z_shape: tuple[int, int] = (0, 0)
    stream_lengths: tuple[int, ...] = field(default_factory=tuple)
    recon_crc: int | None = None
    version: int = VERSION
    latent_crc: int | None = None
    recon_layout: str = "channels_last"
    icc_profile: bytes | None = None
    exif: bytes | None = None
    xmp: bytes | None = None

    def metadata(self) -> list[tuple[MetadataBlock, bytes]]:
        """The metadata blocks this header carries, in file order."""
        blocks = ((b, getattr(self, b.attribute)) for b in METADATA_BLOCKS)
        return [(b, data) for b, data in blocks if data is not None]

    @property
    def flags(self) -> int:
        flags = sum(block.flag for block, _ in self.metadata())
        if self.recon_crc is None:
            return flags
        layout = FLAG_RECON_CHANNELS_LAST if self.recon_layout == "channels_last" else 0
        return flags | FLAG_RECON_CRC | layout

    @property
    def header_size(self) -> int:
        body = _BODY.size if self.version == 1 else _BODY_V2.size
        n = _FIXED_HEAD.size + len(self.preset.encode("ascii")) + body
        n += _U32.size * len(self.stream_lengths)
        n += _U32.size if self.version >= 2 else 0  # latent checksum
        n += _U32.size if self.recon_crc is not None else 0
        return n + sum(_U32.size + len(data) for _, data in self.metadata())

    @property
    def file_size(self) -> int:
        return self.header_size + sum(self.stream_lengths) + _TRAILER

    @property
    def fingerprint_hex(self) -> str:
        return self.fingerprint.hex()

    def bpp(self) -> float:
        """Bits per original pixel of the whole file (header and checksum included)."""
        return 8.0 * self.file_size / (self.height * self.width)

    def payload_bpp(self) -> float:
        """Bits per original pixel of the entropy-coded streams only."""
        return 8.0 * sum(self.stream_lengths) / (self.height * self.width)

    def as_dict(self) -> dict:
        """JSON-able view, e.g. for ``hpcm info``."""
        return {
            "version": self.version,
            "preset": self.preset,
            "quality": self.quality or None,
            "fingerprint": self.fingerprint_hex,
            "size": [self.height, self.width],
            "padded_size": [self.padded_height, self.padded_width],
            "crop_offset": [self.crop_top, self.crop_left],
            "padding": self.padding,
            "device": self.device,
            "threads": self.threads,
            "z_shape": list(self.z_shape),
            "stream_lengths": list(self.stream_lengths),
            "recon_crc": None if self.recon_crc is None else f"{self.recon_crc:08x}",
            "recon_layout": None if self.recon_crc is None else self.recon_layout,
            "latent_crc": None if self.latent_crc is None else f"{self.latent_crc:08x}",
            "icc_profile_bytes": None if self.icc_profile is None else len(self.icc_profile),
            "exif_bytes": None if self.exif is None else len(self.exif),
            "xmp_bytes": None if self.xmp is None else len(self.xmp),
            "file_size": self.file_size,
            "bpp": self.bpp(),
            "payload_bpp": self.payload_bpp(),
        }

    def validate(self) -> None:
        """Check the fields for internal consistency; raise ``FormatError`` otherwise."""
        if not self.preset or len(self.preset) > MAX_PRESET_LEN or not _PRESET_RE.match(self.preset):
            raise FormatError(f"invalid model name {self.preset!r} in header")
        if self.version not in SUPPORTED_VERSIONS:
            raise FormatError(f"unsupported .hpcm format version {self.version}")
        if isinstance(self.quality, bool) or not isinstance(self.quality, int | float):
            raise FormatError(f"invalid quality {self.quality!r} in header")
        if self.version == 1 and not (float(self.quality).is_integer() and 0 <= self.quality <= 255):
            raise FormatError(f"invalid quality {self.quality} in a version-1 header (integer 0..255)")
        if not 0 <= self.quality <= MAX_QUALITY_V2:
            raise FormatError(f"invalid quality {self.quality} in header")
        if self.version >= 2 and self.latent_crc is None:
            raise FormatError(f"version-{self.version} header without a latent checksum")
        if len(self.fingerprint) != FINGERPRINT_BYTES:
            raise FormatError("invalid weights fingerprint in header")
        check_image_size(self.height, self.width, error=FormatError)
        if not (self.height <= self.padded_height and self.width <= self.padded_width):
            raise FormatError("padded size smaller than image size in header")
        if self.padded_height % Z_STRIDE or self.padded_width % Z_STRIDE:
            raise FormatError(f"padded size {self.padded_height}x{self.padded_width} is not a multiple of 64")
        if self.padded_height - self.height >= MAX_PAD or self.padded_width - self.width >= MAX_PAD:
            raise FormatError("padding too large in header")
        if (self.crop_top + self.height > self.padded_height
                or self.crop_left + self.width > self.padded_width):
            raise FormatError("crop window outside the padded image in header")
        if tuple(self.z_shape) != (self.padded_height // Z_STRIDE, self.padded_width // Z_STRIDE):
            raise FormatError(f"latent shape {tuple(self.z_shape)} does not match the padded size")
        if self.padding not in PADDING_MODES:
            raise FormatError(f"unknown padding mode {self.padding!r}")
        if self.device not in DEVICE_KINDS:
            raise FormatError(f"unknown device kind {self.device!r}")
        if not 0 <= self.threads <= 255:
            raise FormatError(f"invalid thread count {self.threads} in header")
        if not 1 <= len(self.stream_lengths) <= MAX_STREAMS:
            raise FormatError(f"invalid number of streams {len(self.stream_lengths)}")
        for block, data in self.metadata():
            if self.version == 1:
                raise FormatError(f"a version-1 file cannot carry an {block.name}")
            if not 1 <= len(data) <= block.max_bytes:
                raise FormatError(f"invalid {block.name} length {len(data)} (1..{block.max_bytes})")


def check_image_size(height: int, width: int, *, error: type[Exception]) -> None:
    """Raise ``error`` unless 1 <= side <= MAX_SIDE and height*width <= MAX_PIXELS."""
    if height < 1 or width < 1:
        raise error(f"image size {width}x{height} is empty")
    if height > MAX_SIDE or width > MAX_SIDE or height * width > MAX_PIXELS:
        raise error(
            f"image size {width}x{height} exceeds the limit (each side <= {MAX_SIDE}, "
            f"at most {MAX_PIXELS // 1_000_000} Mpixel)"
        )


def quality_code(quality: float) -> int:
    """v2 quality field: the quality in units of 1/100, rounded (3 -> 300, 2.5 -> 250; 0 = not applicable)."""
    return int(round(float(quality) * 100))


def pack(header: Header, streams: list[bytes]) -> bytes:
    """Serialize ``header`` and ``streams`` into a complete ``.hpcm`` file (CRC-32 trailer appended).

    ``header.stream_lengths`` is set from ``streams``. The layout is that of ``header.version`` (versions 2
    and 3 share it; v1 has no latent checksum and an integer quality).
    """
    header.stream_lengths = tuple(len(s) for s in streams)
    header.validate()
    version = header.version
    if version == 1 and not float(header.quality).is_integer():  # version 1 holds whole qualities only
        raise FormatError(f"quality {header.quality} cannot be stored in format version 1")
    preset = header.preset.encode("ascii")
    body, quality = (_BODY, int(header.quality)) if version == 1 else (_BODY_V2, quality_code(header.quality))
    parts = [
        _FIXED_HEAD.pack(MAGIC, version, header.flags, len(preset)),
        preset,
        body.pack(
            quality,
            header.fingerprint,
            header.height,
            header.width,
            header.padded_height,
            header.padded_width,
            header.crop_top,
            header.crop_left,
            PADDING_MODES.index(header.padding),
            DEVICE_KINDS.index(header.device),
            header.threads,
            header.z_shape[0],
            header.z_shape[1],
            len(streams),
        ),
        *(_U32.pack(len(s)) for s in streams),
    ]
    if version >= 2:
        parts.append(_U32.pack(header.latent_crc & 0xFFFFFFFF))
    if header.recon_crc is not None:
        parts.append(_U32.pack(header.recon_crc & 0xFFFFFFFF))
    for _, data in header.metadata():
        parts.extend((_U32.pack(len(data)), bytes(data)))
    parts.extend(streams)
    body = b"".join(parts)
    return body + _U32.pack(zlib.crc32(body))


def _take(data: bytes, pos: int, n: int) -> bytes:
    if pos + n > len(data):
        raise FormatError(f"file is truncated (header ends after {len(data)} bytes)")
    return data[pos : pos + n]


def read_header(data: bytes) -> Header:
    """Parse and validate the header of ``data`` (no model needed); checks length and checksum too."""
    return unpack(data)[0]


def unpack(data: bytes) -> tuple[Header, list[bytes]]:
    """Check ``data`` and split it into its :class:`Header` and streams.

    Checks, in order: magic, version, header structure, total length, CRC-32, field consistency.
    """
    data = bytes(data)
    if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
        raise FormatError("not an .hpcm file (bad magic bytes)")
    magic, version, flags, preset_len = _FIXED_HEAD.unpack(_take(data, 0, _FIXED_HEAD.size))
    if version not in SUPPORTED_VERSIONS:
        raise FormatError(
            f"unsupported .hpcm format version {version} (this hpcm reads version "
            f"{', '.join(map(str, SUPPORTED_VERSIONS))})"
        )
    pos = _FIXED_HEAD.size
    raw_preset = _take(data, pos, preset_len)
    pos += preset_len
    body = _BODY if version == 1 else _BODY_V2
    (quality, fingerprint, height, width, padded_h, padded_w, crop_top, crop_left, pad_mode, device,
     threads, hz, wz, n_streams) = body.unpack(_take(data, pos, body.size))  # fmt: skip
    pos += body.size
    if version >= 2:
        quality = quality / 100 if quality % 100 else quality // 100
    if not 1 <= n_streams <= MAX_STREAMS:
        raise FormatError(f"file is corrupted (invalid number of streams {n_streams})")
    lengths = tuple(_U32.unpack(_take(data, pos + 4 * i, 4))[0] for i in range(n_streams))
    pos += 4 * n_streams
    latent_crc = None
    if version >= 2:
        latent_crc = _U32.unpack(_take(data, pos, 4))[0]
        pos += 4
    recon_crc = None
    if flags & FLAG_RECON_CRC:
        recon_crc = _U32.unpack(_take(data, pos, 4))[0]
        pos += 4
    metadata: dict[str, bytes] = {}
    for block in METADATA_BLOCKS if version >= 2 else ():
        if flags & block.flag:
            n = _U32.unpack(_take(data, pos, 4))[0]
            if not 1 <= n <= block.max_bytes:
                raise FormatError(f"file is corrupted ({block.name} length {n})")
            metadata[block.attribute] = _take(data, pos + 4, n)
            pos += 4 + n
    expected = pos + sum(lengths) + _TRAILER
    if len(data) < expected:
        raise FormatError(f"file is truncated or corrupted (expected {expected} bytes, found {len(data)})")
    if len(data) > expected:
        raise FormatError(f"file is corrupted ({len(data) - expected} unexpected bytes after the data)")
    if zlib.crc32(data[:-_TRAILER]) != _U32.unpack(data[-_TRAILER:])[0]:
        raise FormatError("file is corrupted (checksum mismatch)")
    if flags & ~KNOWN_FLAGS or (version == 1 and flags & METADATA_FLAGS):
        raise FormatError(f"unknown header flags 0x{flags:02x}")
    if flags & FLAG_RECON_CHANNELS_LAST and not flags & FLAG_RECON_CRC:
        raise FormatError("file is corrupted (header flag 0x02 without a reconstruction checksum)")
    if pad_mode >= len(PADDING_MODES) or device >= len(DEVICE_KINDS):
        raise FormatError("file is corrupted (invalid padding or device code)")
    try:
        preset = raw_preset.decode("ascii")
    except UnicodeDecodeError:
        raise FormatError("invalid model name in header") from None
    header = Header(
        preset=preset,
        quality=quality,
        fingerprint=fingerprint,
        height=height,
        width=width,
        padded_height=padded_h,
        padded_width=padded_w,
        crop_top=crop_top,
        crop_left=crop_left,
        padding=PADDING_MODES[pad_mode],
        device=DEVICE_KINDS[device],
        threads=threads,
        z_shape=(hz, wz),
        stream_lengths=lengths,
        recon_crc=recon_crc,
        version=version,
        latent_crc=latent_crc,
        recon_layout="channels_last" if flags & FLAG_RECON_CHANNELS_LAST else "contiguous",
        **metadata,
    )
    header.validate()
    streams = []
    for n in lengths:
        streams.append(data[pos : pos + n])
        pos += n
    return header, streams
