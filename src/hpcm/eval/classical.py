"""Classical-codec anchors through Pillow (JPEG, WebP, AVIF, JPEG 2000) and pillow-heif (HEVC in HEIF).

Every point is one codec setting applied to every image: bpp from the encoded bytes (container included),
PSNR / MS-SSIM on the decoded 8-bit RGB (:mod:`hpcm.eval.metrics`), wall-clock encode and decode seconds.
Settings follow the measured anchors in ``shared/anchors/kodak-measured`` so the curves can be reproduced:

=========  =====================================================================================
codec      settings (chroma subsampling in brackets)
=========  =====================================================================================
jpeg       libjpeg-turbo, ``quality=q``, default tables, ``optimize=False``; [4:2:0, Pillow's default;
           ``chroma="444"`` gives ``subsampling=0``]
webp       libwebp lossy, ``quality=q``, ``method=6``; [always 4:2:0: lossy WebP (VP8) has no 4:4:4]
avif       libavif + aom, ``quality=q``, ``speed=6``, ``max_threads=2`` (pinned: aom's bitstream depends
           on it); [4:4:4 by default; ``chroma="420"`` is Pillow's default]
jpeg2000   OpenJPEG in a JP2 container (``.jp2``), irreversible 9/7 wavelet, ``mct=1`` (ICT, no
           subsampling), one layer, ``quality_mode="rates"`` with ratio 24/q: *q is the target bpp*
heic       x265 via pillow-heif, ``quality=q``; [4:4:4 by default, the BPG-like anchor; ``chroma="420"``];
           ``tune="psnr"`` sets x265's tune instead of libheif's default (ssim)
=========  =====================================================================================
"""

from __future__ import annotations

import io
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, features

from hpcm.eval.metrics import bpp, image_metrics
from hpcm.eval.results import aggregate, list_images, progress

CODECS = ("jpeg", "webp", "avif", "jpeg2000", "heic")
#: aom's AVIF bitstream depends on its thread count, which Pillow otherwise takes from the CPU affinity:
#: pinned to the count the measured Kodak anchors were made with, so results are the same everywhere.
AVIF_THREADS = 2

DEFAULT_QUALITIES: dict[str, tuple[float, ...]] = {
    "jpeg": (1, 3, 5, 8, 12, 18, 25, 35, 45, 55, 65, 75),
    "webp": (0, 5, 10, 20, 30, 40, 50, 60, 70, 80, 85),
    "avif": (5, 12, 20, 30, 40, 48, 55, 62, 68),
    "jpeg2000": (0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.65, 0.8, 1.0, 1.25, 1.5),
    "heic": (6, 10, 15, 20, 25, 30, 35, 40, 45, 50),
}
DEFAULT_CHROMA = {"jpeg": "420", "webp": "420", "avif": "444", "jpeg2000": "444", "heic": "444"}


@dataclass(frozen=True)
class ClassicalCodec:
    """One classical codec configuration: ``encode(image, quality) -> bytes``, ``decode(bytes) -> image``."""

    codec: str
    chroma: str = ""
    tune: str | None = None

    def __post_init__(self) -> None:
        if self.codec not in CODECS:
            raise ValueError(f"unknown codec {self.codec!r}; choose from {', '.join(CODECS)}")
        chroma = self.chroma or DEFAULT_CHROMA[self.codec]
        allowed = {"jpeg": ("420", "444"), "webp": ("420",), "avif": ("420", "444"),
                   "jpeg2000": ("444",), "heic": ("420", "444")}[self.codec]
        if chroma not in allowed:
            raise ValueError(f"{self.codec} supports chroma {', '.join(allowed)}, not {chroma}")
        object.__setattr__(self, "chroma", chroma)
        if self.tune is not None and self.codec != "heic":
            raise ValueError("tune applies to heic only")

    @property
    def name(self) -> str:
        """Curve name, matching the measured anchors (e.g. ``pillow-jpeg420``, ``heif-hevc444``)."""
        if self.codec == "heic":
            return f"heif-hevc{self.chroma}" + (f"-tune{self.tune}" if self.tune else "")
        if self.codec in ("webp", "jpeg2000"):
            return f"pillow-{self.codec}"
        return f"pillow-{self.codec}{self.chroma}"

    def encode(self, image: np.ndarray, quality: float) -> bytes:
        """Encode an (H, W, 3) uint8 image."""
        pil = Image.fromarray(image, "RGB")
        buf = io.BytesIO()
        if self.codec == "jpeg":
            sub = 0 if self.chroma == "444" else 2
            pil.save(buf, format="JPEG", quality=int(quality), subsampling=sub, optimize=False)
        elif self.codec == "webp":
            pil.save(buf, format="WEBP", quality=float(quality), method=6, lossless=False)
        elif self.codec == "avif":
            sub = "4:4:4" if self.chroma == "444" else "4:2:0"
            pil.save(buf, format="AVIF", quality=int(quality), subsampling=sub, speed=6, range="full",
                     max_threads=AVIF_THREADS)
        elif self.codec == "jpeg2000":
            if quality <= 0:
                raise ValueError("jpeg2000 quality is a target bpp > 0")
            pil.save(buf, format="JPEG2000", no_jp2=False, irreversible=True, mct=1,
                     quality_mode="rates", quality_layers=[24.0 / float(quality)])
        else:
            import pillow_heif

            heif = pillow_heif.from_pillow(pil)
            kwargs: dict[str, Any] = {"quality": int(quality), "chroma": int(self.chroma)}
            if self.tune:
                kwargs["enc_params"] = {"tune": self.tune}
            heif.save(buf, format="HEIF", **kwargs)
        return buf.getvalue()

    def decode(self, data: bytes) -> np.ndarray:
        """Decode to an (H, W, 3) uint8 RGB image."""
        if self.codec == "heic":
            import pillow_heif

            heif = pillow_heif.open_heif(io.BytesIO(data), convert_hdr_to_8bit=True)
            pil = heif.to_pillow()
        else:
            pil = Image.open(io.BytesIO(data))
            pil.load()
        return np.asarray(pil.convert("RGB"))

    def describe(self) -> str:
        """Human-readable settings and library versions (goes into the JSON ``description``)."""
        what = {
            "jpeg": "JPEG via Pillow (libjpeg-turbo), default tables, optimize=False, "
            + ("subsampling=0 (4:4:4)" if self.chroma == "444" else "default 4:2:0 chroma subsampling"),
            "webp": "WebP lossy via Pillow (libwebp), method=6, 4:2:0 (lossy WebP has no 4:4:4)",
            "avif": f"AVIF via Pillow (libavif, aom encoder), speed=6, subsampling 4:{self.chroma[1]}:"
            f"{self.chroma[2]}, full range, max_threads={AVIF_THREADS}",
            "jpeg2000": "JPEG 2000 (JP2 file) via Pillow (OpenJPEG), irreversible 9/7 wavelet, mct=1 (ICT), "
            "one quality layer, quality_mode='rates' with compression ratio 24/target_bpp; "
            "quality label = target bpp",
            "heic": f"HEIC (HEVC still image) via pillow-heif (libheif + x265, libde265 decoder), "
            f"chroma={self.chroma}, " + (f"x265 tune={self.tune}" if self.tune else "libheif default tune"),
        }[self.codec]
        return f"{what}. {library_versions()}"


def library_versions() -> str:
    """Versions of the codec libraries and the platform, for result descriptions."""
    import PIL

    parts = [
        f"Pillow {PIL.__version__} (libjpeg API {features.version_codec('jpg')}, "
        f"libwebp {features.version_module('webp')}, libavif {features.version_module('avif')}, "
        f"OpenJPEG {features.version_codec('jpg_2000')})"
    ]
    try:
        import pillow_heif

        parts.append(f"pillow-heif {pillow_heif.__version__} (libheif {pillow_heif.libheif_version()})")
    except ImportError:
        pass
    parts.append(f"Python {platform.python_version()}, {os.cpu_count()}-core {platform.machine()}")
    return ", ".join(parts)


def read_rgb(path: str | os.PathLike[str]) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an image file, by the rules of ``hpcm compress`` and ``hpcm eval``.

    (:func:`hpcm.codec.image_io.read_image`: transparency refused, EXIF orientation applied; for 8-bit
    RGB files such as Kodak this equals CompressAI's ``convert("RGB")``.) Unreadable files raise a
    one-line ``ImageError`` naming the file.
    """
    from hpcm.codec.image_io import read_image

    return read_image(path)


def evaluate_codec_image(
    codec: ClassicalCodec, image: np.ndarray, quality: float, source: str
) -> dict[str, Any]:
    """One record (CompressAI per-image shape) for ``image`` coded at ``quality``."""
    t0 = time.perf_counter()
    data = codec.encode(image, quality)
    t1 = time.perf_counter()
    decoded = codec.decode(data)
    t2 = time.perf_counter()
    if decoded.shape != image.shape:
        raise RuntimeError(f"{codec.name} decoded {decoded.shape}, expected {image.shape}")
    h, w = image.shape[:2]
    results = {"bpp": bpp(len(data), h, w), **image_metrics(image, decoded),
               "encoding_time": t1 - t0, "decoding_time": t2 - t1}
    return {"source": source, "name": codec.name, "description": codec.describe(), "quality": quality,
            "results": results}


def bench_codec(
    codec: ClassicalCodec,
    dataset: str | os.PathLike[str] | Sequence[Path],
    qualities: Sequence[float] | None = None,
    *,
    limit: int | None = None,
    show_progress: bool | None = None,
) -> dict[str, Any]:
    """Run ``codec`` over a data set at each quality; a CompressAI-schema document (with ``per_image``)."""
    paths = list(dataset) if isinstance(dataset, list | tuple) else list_images(dataset, limit)
    if limit is not None:
        paths = paths[:limit]
    qs = list(qualities) if qualities else list(DEFAULT_QUALITIES[codec.codec])
    images = [(Path(p).stem, read_rgb(p)) for p in paths]
    points = []
    bar = progress(range(len(qs) * len(images)), desc=codec.name, enabled=show_progress)
    it = iter(bar)
    for q in qs:
        records = []
        for stem, img in images:
            records.append(evaluate_codec_image(codec, img, q, stem))
            next(it, None)
        points.append((q, records))
    bar.close()
    description = (
        f"{codec.describe()}. Data set: {len(images)} images. bpp from encoded bytes (container included); "
        "PSNR on 8-bit RGB per image then mean; MS-SSIM via pytorch_msssim (data_range=1) per image then "
        "mean; times in seconds, wall clock, mean per image."
    )
    folders = {Path(p).resolve().parent.name for p in paths}
    name = Path(dataset).resolve().name if not isinstance(dataset, list | tuple) else (
        folders.pop() if len(folders) == 1 else None)
    meta = {"tool": "hpcm bench-codec", "dataset": name, "codec": codec.codec, "chroma": codec.chroma,
            "tune": codec.tune, "images": [str(p) for p in paths], "argv": sys.argv[1:]}
    return aggregate(codec.name, description, points, meta=meta)
