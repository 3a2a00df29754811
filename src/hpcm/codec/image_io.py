"""Reading images into (H, W, 3) uint8 RGB arrays and writing them back (atomically).

Input rules (also in README.md, "Supported image inputs"):

- Formats: whatever Pillow opens (PNG, JPEG, WebP, BMP, TIFF, GIF, ...), plus HEIF/AVIF when
  ``pillow-heif`` is installed. Multi-frame files: the first frame is used (with a note).
- EXIF orientation is applied (``ImageOps.exif_transpose``), so the coded image is upright.
- Grayscale (``1``, ``L``) is replicated to three channels; palette images are expanded;
  CMYK / YCbCr are converted to RGB by Pillow.
- ICC colour profiles (:func:`read_image_and_profile`, ``hpcm compress --icc``): the pixels are coded as
  they are, and an RGB profile travels in the file to the decoded image (``auto``, the default, keeps every
  RGB profile but sRGB's, which untagged images mean anyway; ``keep`` keeps sRGB too; ``drop`` keeps none).
  Profiles of other colour spaces (grayscale, CMYK) do not describe the RGB pixels coded and are dropped
  with a note. ``srgb`` converts the pixels from their profile (RGB, grayscale or CMYK) to sRGB with
  LittleCMS (Pillow's ``ImageCms``, the profile's default rendering intent) and carries no profile.
- EXIF and XMP metadata (:func:`read_image_with_metadata`, ``hpcm compress --metadata``): not carried by
  default (camera EXIF holds GPS positions and a stale thumbnail); ``exif``, ``xmp`` or ``all`` carry them to
  the decoded image. EXIF is re-serialised by Pillow: the orientation tag is removed (the pixels are upright)
  and the IFD1 thumbnail is left out.
- 16-bit samples (``I;16*`` grayscale, 16-bit RGB PNG) become 8 bit by keeping the high byte
  (``v >> 8``); this is what Pillow does for 16-bit RGB PNGs, and it inverts the usual 8->16 bit
  expansion ``v * 257`` exactly. 32-bit integer (``I``) and float (``F``) images are refused.
- Alpha: a fully opaque alpha channel is dropped silently. Transparency is refused unless
  ``alpha="drop"`` (keep the colour, discard the alpha) or ``alpha="white"`` (composite on white).
- Size: 1x1 up to ``MAX_SIDE`` per side and ``MAX_PIXELS`` in total (see ``container``); larger
  images are refused before they are decoded.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from hpcm.atomic import atomic_write_bytes
from hpcm.codec.container import MAX_ICC_BYTES, MAX_METADATA_BYTES, MAX_PIXELS, MAX_SIDE, check_image_size
from hpcm.errors import ImageError

ALPHA_POLICIES = ("refuse", "drop", "white")
ICC_POLICIES = ("auto", "keep", "drop", "srgb")
#: Which of EXIF / XMP ``hpcm compress --metadata`` carries.
METADATA_POLICIES = ("none", "exif", "xmp", "all")
#: Pillow formats whose writers embed an ICC profile (``icc_profile=``), EXIF and XMP (:func:`encode_image`).
ICC_FORMATS = frozenset({"PNG", "JPEG", "WEBP", "TIFF"})
EXIF_FORMATS = XMP_FORMATS = ICC_FORMATS
#: JPEG holds EXIF and (standard) XMP in one APP1 segment each: 65,533 bytes with the namespace prefix.
_JPEG_APP1_LIMIT = {"exif": 65_533, "xmp": 65_533 - 29}


@dataclass(frozen=True)
class ImageMetadata:
    """What travels with the pixels: an ICC profile (None: sRGB), an EXIF block, an XMP packet (bytes)."""

    icc_profile: bytes | None = None
    exif: bytes | None = None
    xmp: bytes | None = None
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
_heif_checked = False


class ImageNote(UserWarning):
    """A lossy or surprising conversion applied while reading an image (e.g. alpha dropped)."""


def _register_heif() -> None:
    global _heif_checked
    if _heif_checked:
        return
    _heif_checked = True
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return
    register_heif_opener()


def _is_sixteen_bit_tile(im: Image.Image) -> bool:
    """True when Pillow will reduce 16-bit colour samples (e.g. a 48/64-bit PNG) while loading."""
    for tile in getattr(im, "tile", None) or ():
        args = tile.args if hasattr(tile, "args") else None
        raw = args if isinstance(args, str) else (args[0] if isinstance(args, tuple) and args else "")
        if isinstance(raw, str) and ";16" in raw:
            return True
    return False


def _has_transparency(alpha: np.ndarray) -> bool:
    return bool((alpha != 255).any())


def _high_byte(im: Image.Image, notes: list[str]) -> np.ndarray:
    """A 16-bit grayscale image's samples as (H, W) uint8, keeping the high byte (``v >> 8``), with a note."""
    notes.append("16-bit samples reduced to 8 bit (high byte)")
    return (np.asarray(im).astype(np.uint16) >> 8).astype(np.uint8)


def _to_rgb(im: Image.Image, alpha: str, notes: list[str]) -> np.ndarray:
    """Convert an opened (and orientation-fixed) Pillow image to (H, W, 3) uint8."""
    mode = im.mode
    if mode in _SIXTEEN_BIT:
        g8 = _high_byte(im, notes)
        return np.repeat(g8[:, :, None], 3, axis=2)
    if mode in ("I", "F"):
        raise ImageError(f"unsupported image mode {mode!r} (32-bit integer/float samples); use 8-bit RGB")
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode == "PA":
        im = im.convert("RGBA")
    elif mode in ("LA", "La", "RGBa"):
        im = im.convert("RGBA")
    elif mode in ("1", "L"):
        im = im.convert("RGB")
    elif mode not in ("RGB", "RGBA"):
        try:
            im = im.convert("RGB")
        except (ValueError, OSError) as exc:
            raise ImageError(f"unsupported image mode {mode!r}: {exc}") from exc
    arr = np.asarray(im)
    if im.mode == "RGB":
        return np.ascontiguousarray(arr, dtype=np.uint8)
    rgb, a = arr[:, :, :3], arr[:, :, 3]
    if not _has_transparency(a):
        return np.ascontiguousarray(rgb, dtype=np.uint8)
    if alpha == "refuse":
        raise ImageError(
            "image has transparency, which hpcm cannot code (RGB only); "
            "use --alpha drop (discard it) or --alpha white (composite on white)"
        )
    if alpha == "drop":
        notes.append("transparency discarded (alpha channel dropped)")
        return np.ascontiguousarray(rgb, dtype=np.uint8)
    notes.append("transparency composited on a white background")
    a32 = a.astype(np.uint32)[:, :, None]
    out = (rgb.astype(np.uint32) * a32 + 255 * (255 - a32) + 127) // 255
    return out.astype(np.uint8)


def icc_description(profile: bytes) -> str | None:
    """The description of an ICC profile (e.g. ``Adobe RGB (1998)``); None when it cannot be parsed."""
    try:
        from PIL import ImageCms

        return ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(profile))).strip()
    except Exception:  # noqa: BLE001 - ImageCms raises PyCMSError, OSError, ImportError...
        return None


def _kept_profile(profile: bytes | None, policy: str, notes: list[str]) -> bytes | None:
    """The ICC profile to carry in the file under ``policy`` (module docstring), with notes."""
    if not profile or policy == "drop":
        return None
    space = profile[16:20] if len(profile) >= 128 else b""
    name = icc_description(profile)
    if name is None or space != b"RGB ":
        kind = "an unreadable" if name is None else f"a {space.decode('ascii', 'replace').strip()}"
        notes.append(f"{kind} ICC profile does not describe the RGB pixels coded: dropped (colours taken "
                     "as sRGB)")
        return None
    if len(profile) > MAX_ICC_BYTES:
        notes.append(f"ICC profile {name!r} ({len(profile)} bytes) is too large to carry: dropped")
        return None
    if policy == "auto" and "srgb" in name.lower():
        return None  # an untagged image means sRGB
    notes.append(f"ICC profile {name!r} kept ({len(profile)} bytes): the decoded image carries it")
    return bytes(profile)


#: The Pillow modes whose pixels a profile of each ICC colour space (header bytes 16-20) can describe.
_PROFILE_MODES: dict[bytes, tuple[str, ...]] = {
    b"RGB ": ("RGB", "RGBA", "P", "PA"),
    b"GRAY": ("L", "LA", *_SIXTEEN_BIT),
    b"CMYK": ("CMYK",),
}


def _converted_to_srgb(im: Image.Image, profile: bytes, notes: list[str]) -> Image.Image:
    """``im`` with its pixels converted from ``profile`` to sRGB (mode RGB or RGBA); ``im`` itself when the
    profile is sRGB's or cannot describe these pixels (with a note). Raises :class:`ImageError` when
    LittleCMS cannot build the transform."""
    from PIL import ImageCms

    name = icc_description(profile)
    space = profile[16:20] if len(profile) >= 128 else b""
    if name is None:
        notes.append("an unreadable ICC profile was ignored (colours taken as sRGB)")
        return im
    if space == b"RGB " and "srgb" in name.lower():
        return im
    if im.mode not in _PROFILE_MODES.get(space, ()):
        kind = space.decode("ascii", "replace").strip() or "?"
        notes.append(f"ICC profile {name!r} ({kind}) does not describe {im.mode} pixels: not applied "
                     "(colours taken as sRGB)")
        return im
    alpha = None
    if im.mode in ("P", "PA"):
        im = im.convert("RGBA" if im.mode == "PA" or "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA"):
        alpha = im.getchannel("A")
        im = im.convert(im.mode[:-1])
    elif im.mode in _SIXTEEN_BIT:
        im = Image.fromarray(_high_byte(im, notes), "L")
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
        out = ImageCms.profileToProfile(im, source, ImageCms.createProfile("sRGB"), outputMode="RGB",
                                        renderingIntent=ImageCms.getDefaultIntent(source))
    except (ImageCms.PyCMSError, OSError, ValueError) as exc:
        raise ImageError(f"cannot convert from ICC profile {name!r} to sRGB ({exc}); "
                         "use --icc keep or --icc drop") from None
    if alpha is not None:
        out.putalpha(alpha)
    notes.append(f"colours converted from ICC profile {name!r} to sRGB")
    return out


def _exif_block(raw: bytes | None, notes: list[str]) -> bytes | None:
    """``raw`` (with or without the ``Exif\\0\\0`` prefix) re-serialised by Pillow: orientation tag removed
    (the coded pixels are upright), IFD1 thumbnail left out; None when empty, unreadable or too large."""
    if not raw:
        return None
    exif = Image.Exif()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Corrupt EXIF data": what is readable is kept
            exif.load(raw)
            exif.pop(0x0112, None)  # Orientation
            data = exif.tobytes() if len(exif) else None
    except Exception:  # noqa: BLE001 - Pillow's TIFF reader raises SyntaxError, struct.error, ...
        notes.append("unreadable EXIF metadata dropped")
        return None
    if data is not None and len(data) > MAX_METADATA_BYTES:
        notes.append(f"EXIF metadata ({len(data)} bytes) is too large to carry: dropped")
        return None
    return data


def exif_summary(exif: bytes) -> str:
    """A few EXIF fields of an EXIF block (camera, date, lens), e.g. for ``hpcm info``."""
    block = Image.Exif()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            block.load(exif)
            sub = block.get_ifd(0x8769)  # the Exif IFD
    except Exception:  # noqa: BLE001 - as in _exif_block
        return "(unreadable)"
    make, model = (str(block.get(t, "")).strip("\x00 ") for t in (0x010F, 0x0110))
    camera = model if model.startswith(make) else f"{make} {model}".strip()
    date = str(sub.get(0x9003) or block.get(0x0132) or "").strip("\x00 ")  # DateTimeOriginal, DateTime
    lens = str(sub.get(0xA434, "")).strip("\x00 ")  # LensModel
    gps = "GPS position" if block.get_ifd(0x8825) else ""
    parts = [p for p in (camera, date, lens, gps) if p]
    return ", ".join(parts) if parts else f"{len(block)} tags"


def _xmp_packet(info: dict, notes: list[str]) -> bytes | None:
    """The XMP packet Pillow found (JPEG/WebP/TIFF ``xmp``, PNG ``XML:com.adobe.xmp``) as bytes."""
    xmp = info.get("xmp") or info.get("XML:com.adobe.xmp")
    if isinstance(xmp, str):
        xmp = xmp.encode("utf-8")
    if not isinstance(xmp, bytes) or not xmp:
        return None
    if len(xmp) > MAX_METADATA_BYTES:
        notes.append(f"XMP metadata ({len(xmp)} bytes) is too large to carry: dropped")
        return None
    return bytes(xmp)


def _kept_metadata(exif: bytes | None, xmp: bytes | None, policy: str,
                   notes: list[str]) -> tuple[bytes | None, bytes | None]:
    """(EXIF, XMP) to carry under ``policy`` (``METADATA_POLICIES``), with a note on what is left out."""
    keep_exif, keep_xmp = policy in ("exif", "all"), policy in ("xmp", "all")
    left = [f"{name} ({len(data):,} bytes)" for name, data, keep in (("EXIF", exif, keep_exif),
                                                                     ("XMP", xmp, keep_xmp))
            if data is not None and not keep]
    if left:
        notes.append(f"{' and '.join(left)} metadata not carried (--metadata all carries "
                     f"{'them' if len(left) > 1 else 'it'})")
    return (exif if keep_exif else None), (xmp if keep_xmp else None)


def read_image_with_notes(path: str | os.PathLike, *, alpha: str = "refuse") -> tuple[np.ndarray, list[str]]:
    """Read ``path`` as (H, W, 3) uint8 RGB; also return notes on lossy conversions applied.

    Raises :class:`ImageError` for unreadable files, unsupported modes, refused transparency and
    images over the size limit. The ICC profile is not read (:func:`read_image_and_profile` reads it).
    """
    image, notes, _ = read_image_and_profile(path, alpha=alpha, icc="drop")
    return image, notes


def read_image_and_profile(path: str | os.PathLike | BinaryIO, *, alpha: str = "refuse",
                           icc: str = "auto") -> tuple[np.ndarray, list[str], bytes | None]:
    """:func:`read_image_with_notes` plus the ICC profile to carry under the policy ``icc``
    (``auto``, ``keep``, ``drop``, ``srgb``: module docstring); None: the pixels are sRGB.
    ``path`` may also be a binary file object (e.g. standard input's bytes); its ``name`` labels errors."""
    image, notes, metadata = read_image_with_metadata(path, alpha=alpha, icc=icc, metadata=None)
    return image, notes, metadata.icc_profile


def read_image_with_metadata(path: str | os.PathLike | BinaryIO, *, alpha: str = "refuse", icc: str = "auto",
                             metadata: str | None = "none") -> tuple[np.ndarray, list[str], ImageMetadata]:
    """:func:`read_image_and_profile` plus the EXIF / XMP metadata to carry under ``metadata``
    (``METADATA_POLICIES``; a note names what the image has and is left out; None: not looked at)."""
    if alpha not in ALPHA_POLICIES:
        raise ValueError(f"alpha must be one of {ALPHA_POLICIES}, got {alpha!r}")
    if icc not in ICC_POLICIES:
        raise ValueError(f"icc must be one of {ICC_POLICIES}, got {icc!r}")
    if metadata is not None and metadata not in METADATA_POLICIES:
        raise ValueError(f"metadata must be one of {METADATA_POLICIES}, got {metadata!r}")
    _register_heif()
    if hasattr(path, "read"):
        source, path = path, Path(str(getattr(path, "name", "<stream>")))
    else:
        source = path = Path(path)
    notes: list[str] = []
    try:
        with warnings.catch_warnings():  # size: checked below; corrupt EXIF: handled where it is read
            warnings.simplefilter("ignore")
            im = Image.open(source)
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{path} is a directory") from None
    except Image.DecompressionBombError:
        raise ImageError(f"{path}: image too large (limit {MAX_SIDE} per side, {MAX_PIXELS} px)") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image file Pillow can read") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    with im:
        width, height = im.size
        check_image_size(height, width, error=ImageError)
        if getattr(im, "n_frames", 1) > 1:
            notes.append(f"{im.n_frames} frames in file; only the first is coded")
        if im.mode in ("RGB", "RGBA") and _is_sixteen_bit_tile(im):
            notes.append("16-bit samples reduced to 8 bit (high byte)")
        try:
            im.load()
            profile = im.info.get("icc_profile")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Pillow's "Corrupt EXIF data": orientation then unknown
                im = ImageOps.exif_transpose(im)
            exif = xmp = None
            if metadata is not None:
                exif, xmp = _exif_block(im.info.get("exif"), notes), _xmp_packet(im.info, notes)
            if icc == "srgb" and isinstance(profile, bytes) and profile:
                im, profile = _converted_to_srgb(im, profile, notes), None
            arr = _to_rgb(im, alpha, notes)
        except ImageError as exc:
            raise ImageError(f"{path}: {exc}") from None
        except (OSError, ValueError, SyntaxError) as exc:
            raise ImageError(f"{path}: cannot decode image ({exc})") from None
    kept_icc = _kept_profile(profile if isinstance(profile, bytes) else None, icc, notes)
    if metadata is not None:
        exif, xmp = _kept_metadata(exif, xmp, metadata, notes)
    return arr, notes, ImageMetadata(kept_icc, exif, xmp)


def read_image(path: str | os.PathLike, *, alpha: str = "refuse") -> np.ndarray:
    """Read ``path`` as an (H, W, 3) uint8 RGB array (rules in the module docstring).

    Lossy conversions are reported as :class:`ImageNote` warnings.
    """
    arr, notes = read_image_with_notes(path, alpha=alpha)
    for note in notes:
        warnings.warn(f"{path}: {note}", ImageNote, stacklevel=2)
    return arr


def _fits(fmt: str, kind: str, data: bytes | None) -> bool:
    """Whether ``fmt``'s writer embeds ``data`` of this kind (``icc``, ``exif``, ``xmp``)."""
    formats = {"icc": ICC_FORMATS, "exif": EXIF_FORMATS, "xmp": XMP_FORMATS}[kind]
    return data is not None and fmt in formats and not (
        fmt == "JPEG" and len(data) > _JPEG_APP1_LIMIT.get(kind, len(data)))


def encode_image(array: np.ndarray, fmt: str = "PNG", icc_profile: bytes | None = None,
                 exif: bytes | None = None, xmp: bytes | None = None) -> bytes:
    """Encode an (H, W, 3) uint8 array to image bytes (PNG by default), with ``icc_profile``, ``exif``
    and ``xmp`` embedded where the format holds them (:func:`metadata_write_note` names what it cannot)."""
    array = np.asarray(array)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ImageError(f"expected an (H, W, 3) uint8 array, got {array.dtype} {array.shape}")
    buf = io.BytesIO()
    kwargs = dict(_SAVE_OPTIONS.get(fmt, {}))
    if _fits(fmt, "icc", icc_profile):
        kwargs["icc_profile"] = icc_profile
    if fmt == "TIFF":  # one tag directory: Pillow takes EXIF tags and the XMP tag (700) together
        tags = Image.Exif()
        if _fits(fmt, "exif", exif):
            tags.load(exif)
        if _fits(fmt, "xmp", xmp):
            tags[700] = xmp
        kwargs["tiffinfo"] = tags
    else:
        if _fits(fmt, "exif", exif):
            kwargs["exif"] = exif
        if _fits(fmt, "xmp", xmp) and fmt == "PNG":  # as the iTXt chunk readers look for
            from PIL import PngImagePlugin

            info = PngImagePlugin.PngInfo()
            info.add_itxt("XML:com.adobe.xmp", xmp.decode("utf-8", "replace"))
            kwargs["pnginfo"] = info
        elif _fits(fmt, "xmp", xmp):
            kwargs["xmp"] = xmp
    Image.fromarray(np.ascontiguousarray(array), "RGB").save(buf, format=fmt, **kwargs)
    return buf.getvalue()


#: Save options per Pillow format: WebP is written lossless (exact), JPEG at quality 95.
_SAVE_OPTIONS: dict[str, dict] = {"JPEG": {"quality": 95}, "WEBP": {"lossless": True}}
#: Formats that store the decoded 8-bit RGB image exactly (as written by :func:`encode_image`).
LOSSLESS_FORMATS = frozenset({"PNG", "BMP", "DIB", "TIFF", "PPM", "TGA", "WEBP", "SGI", "IM", "PCX", "QOI"})


def lossy_write_note(path: str | os.PathLike) -> str | None:
    """A one-line note when writing ``path`` (format from its suffix) does not keep the pixels exactly."""
    fmt = format_for_path(path)
    if fmt in LOSSLESS_FORMATS:
        return None
    detail = " at quality 95" if fmt == "JPEG" else ""
    return f"{Path(path).name}: writing {fmt}{detail}, a lossy format: use .png for the exact decoded image"


def format_for_path(path: str | os.PathLike) -> str:
    """Pillow format name from the file extension; ``ImageError`` for unknown ones."""
    ext = Path(path).suffix.lower()
    fmt = Image.registered_extensions().get(ext)
    if fmt is None or fmt not in Image.SAVE:
        raise ImageError(f"cannot write images with extension {ext or '(none)'!r}; use .png")
    return fmt


def icc_write_note(path: str | os.PathLike, icc_profile: bytes | None) -> str | None:
    """A one-line note when ``path``'s format cannot carry the image's ICC profile."""
    return metadata_write_note(path, ImageMetadata(icc_profile=icc_profile))


def metadata_write_note(path: str | os.PathLike, metadata: ImageMetadata) -> str | None:
    """A one-line note naming what of ``metadata`` ``path``'s format cannot carry (None: it carries all)."""
    fmt = format_for_path(path)
    lost = [name for kind, name, data in (("icc", "ICC profile", metadata.icc_profile),
                                          ("exif", "EXIF metadata", metadata.exif),
                                          ("xmp", "XMP metadata", metadata.xmp))
            if data is not None and not _fits(fmt, kind, data)]
    if not lost:
        return None
    why = " (too large for JPEG)" if fmt in ICC_FORMATS else ""
    colours = "; its colours will be taken as sRGB" if "ICC profile" in lost else ""
    return (f"{Path(path).name}: {fmt} cannot carry the image's {' and '.join(lost)}{why}{colours} "
            "(write .png to keep it)")


def write_image(path: str | os.PathLike, array: np.ndarray, overwrite: bool = False,
                icc_profile: bytes | None = None, exif: bytes | None = None,
                xmp: bytes | None = None) -> Path:
    """Write an (H, W, 3) uint8 array atomically; the format follows the extension (.png advised).
    ``icc_profile``, ``exif``, ``xmp``: embedded where the format holds them (:func:`metadata_write_note`)."""
    data = encode_image(array, format_for_path(path), icc_profile, exif, xmp)
    return atomic_write_bytes(path, data, overwrite=overwrite)
