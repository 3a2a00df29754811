"""Image <-> ``.hpcm`` bytes: pad to the model's size multiple, code, crop back.

Padding: the image is padded to the next multiple of ``model.size_multiple`` by edge replication
(``"replicate"``), split evenly between the two sides like the official test.py (which pads with
zeros). Replication continues the border pixels, so the padded area is smooth and costs few bits,
while zero padding puts a hard edge at the border. The crop offset travels in the file header, so
the decoder never has to know the padding rule. ``"reflect"`` and ``"zeros"`` are available too.
"""

from __future__ import annotations

import contextlib
import os
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from hpcm.codec import container
from hpcm.codec.container import Header, check_image_size, read_header
from hpcm.codec.plausibility import check_stream_lengths
from hpcm.codec.refine import RefineSettings, refine_latent
from hpcm.errors import FormatError, HPCMError, ImageError, ModelMismatchError
from hpcm.models.protocol import (
    can_refine,
    format_versions,
    is_variable_rate,
    model_device,
    model_preset,
    size_multiple,
    synthesis_layouts,
    weights_info,
)

__all__ = [
    "CodecTimes",
    "compress_image",
    "decompress_image",
    "decode",
    "encode",
    "model_identity",
    "read_header",
]

_NP_PAD = {"replicate": "edge", "reflect": "reflect", "zeros": "constant"}


@dataclass
class CodecTimes:
    """Wall-clock seconds of the parts of one encode or decode."""

    network: float = 0.0  # model.compress / model.decompress (includes entropy coding)
    total: float = 0.0
    #: other facts of the call: "verify" (s), "refine" (s), "refine_gain" (relative drop of the RD cost
    #: the latent refinement achieved), "corrections" (decisions the side stream corrected in a decode),
    #: "recon_crc_mismatch"
    extra: dict[str, float] = field(default_factory=dict)


def _device_kind(device: torch.device) -> str:
    return device.type if device.type in container.DEVICE_KINDS else "other"


#: Most CPU threads recorded in a file header (one byte).
MAX_CODING_THREADS = 255


def coding_threads(device: torch.device) -> int:
    """Thread count recorded in a header: torch's CPU threads for CPU coding, 0 for other devices."""
    return min(torch.get_num_threads(), MAX_CODING_THREADS) if device.type == "cpu" else 0


@contextlib.contextmanager
def pinned_threads(threads: int) -> Iterator[None]:
    """Run CPU code with ``threads`` torch threads (0: leave as is), restoring the previous count.

    Format version 1 only: oneDNN's CPU convolutions round differently for different thread counts, and a
    v1 decoder must recompute the encoder's entropy parameters bit-identically, so it runs with the thread
    count the encoder recorded in the header. Version-2 files decode exactly with any thread count.
    """
    previous = torch.get_num_threads()
    if threads and threads != previous:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


#: Resolution of a variable-rate model's quality in a file header (1/100).
QUALITY_STEP = 0.01
#: Quality a variable-rate model codes at when none is given.
DEFAULT_VR_QUALITY = 3.0


def coding_quality(model: nn.Module, quality: float | None) -> float | None:
    """The quality ``model`` codes at: for a variable-rate model ``quality`` (default
    ``DEFAULT_VR_QUALITY``) rounded to the header's ``QUALITY_STEP`` and checked against the model's
    range; for a fixed-rate model None (its weights are one quality; a different ``quality`` is an error).
    """
    if not is_variable_rate(model):
        own = weights_info(model).get("quality")
        if quality is not None and own is not None and float(quality) != float(own):
            raise HPCMError(f"these weights code quality {own} only, not {quality:g}")
        return None
    q = DEFAULT_VR_QUALITY if quality is None else float(quality)
    q = round(round(q / QUALITY_STEP) * QUALITY_STEP, 2)
    lo, hi = model.quality_gains.quality_range
    if not lo <= q <= hi:
        raise HPCMError(f"quality must be in {lo:g}..{hi:g} for this model, got {quality}")
    return q


@contextlib.contextmanager
def deterministic_math() -> Iterator[None]:
    """Keep TF32 out of the parameter path (CUDA matmuls and cuDNN convolutions) and make cuDNN pick
    deterministic algorithms (the first GPU run found two decodes of one file differing after g_s
    without it), restoring the settings."""
    b = torch.backends
    saved = (b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32, b.cudnn.deterministic, b.cudnn.benchmark)
    b.cuda.matmul.allow_tf32 = False
    b.cudnn.allow_tf32 = False
    b.cudnn.deterministic, b.cudnn.benchmark = True, False
    try:
        yield
    finally:
        b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32, b.cudnn.deterministic, b.cudnn.benchmark = saved


def model_identity(model: nn.Module) -> tuple[str, float, bytes]:
    """(preset name, quality or 0, 8-byte weights fingerprint) identifying ``model`` in a file header.

    Taken from ``model.weights_info`` (set by ``hpcm.models.io.load_model``) when present; otherwise
    the fingerprint is computed from the current weights and the preset is ``model.preset``, the
    registered preset whose config equals ``model.config``, or "custom". The quality of a variable-rate
    model is 0 here (it is chosen per image, see :func:`coding_quality`).
    """
    from hpcm.models.io import weights_fingerprint

    info = weights_info(model)
    preset = model_preset(model) or _matching_preset(model) or "custom"
    quality = 0 if is_variable_rate(model) else float(info.get("quality") or 0)
    quality = int(quality) if float(quality).is_integer() else quality
    fp_hex = info.get("fingerprint") or weights_fingerprint(model)
    return str(preset), quality, bytes.fromhex(fp_hex)[: container.FINGERPRINT_BYTES]


def _matching_preset(model: nn.Module) -> str | None:
    config = getattr(model, "config", None)
    if config is None:
        return None
    from hpcm.models.registry import get_config, list_models

    for name in list_models():
        if get_config(name) == config:
            return name
    return None


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ImageError(f"expected an (H, W, 3) uint8 RGB array, got {image.dtype} {image.shape}")
    check_image_size(image.shape[0], image.shape[1], error=ImageError)
    return image


def padded_size(height: int, width: int, multiple: int) -> tuple[int, int]:
    """Smallest multiples of ``multiple`` that hold ``height`` x ``width``."""
    return -(-height // multiple) * multiple, -(-width // multiple) * multiple


def pad_image(image: np.ndarray, multiple: int, mode: str = "replicate") -> tuple[np.ndarray, int, int]:
    """Pad (H, W, 3) to multiples of ``multiple``, evenly on both sides; return (padded, top, left)."""
    if mode not in _NP_PAD:
        raise ValueError(f"padding must be one of {tuple(_NP_PAD)}, got {mode!r}")
    h, w = image.shape[:2]
    ph, pw = padded_size(h, w, multiple)
    top, left = (ph - h) // 2, (pw - w) // 2
    widths = ((top, ph - h - top), (left, pw - w - left), (0, 0))
    return np.pad(image, widths, mode=_NP_PAD[mode]), top, left


def _to_tensor(image: np.ndarray, device: torch.device) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).unsqueeze(0)
    return x.to(device=device, dtype=torch.float32).div_(255.0)


def _to_uint8(x_hat: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) float in [0, 1] -> (H, W, 3) uint8 (round half to even after clamping)."""
    x = x_hat.detach().clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)
    return x[0].permute(1, 2, 0).cpu().numpy()


def image_crc(image: np.ndarray) -> int:
    """CRC-32 of a (H, W, 3) uint8 image in C order (stored in headers of verified files)."""
    return zlib.crc32(np.ascontiguousarray(image).tobytes())


def _size_multiple(model: nn.Module) -> int:
    """``hpcm.models.protocol.size_multiple(model)``, which the file format needs to be a multiple of
    ``Z_STRIDE`` (the header stores the padded size in units of it)."""
    try:
        m = size_multiple(model)
    except ValueError as exc:
        raise HPCMError(str(exc)) from None
    if m % container.Z_STRIDE:
        raise HPCMError(f"model.size_multiple {m} is not a positive multiple of {container.Z_STRIDE}")
    return m


def decode_threads(recorded: int, limit: int | None = None) -> int:
    """CPU threads for decoding a file whose header records ``recorded`` (0: leave torch's count).

    The encoder's count, for bit-exact entropy parameters, but never more than the cores this process
    may use (nor ``limit``): a header must not make the decoder oversubscribe the machine (255 threads
    on 2 cores). Fewer threads than the encoder's may change the decoded image; a verified file
    (``--verify``) detects that.
    """
    from hpcm.threads import available_cores

    cap = min(available_cores(), limit) if limit else available_cores()
    return max(1, min(int(recorded), cap)) if recorded else 0


def format_kwargs(model: nn.Module, version: int) -> dict[str, int]:
    """``{"format_version": version}`` for the model's forward/compress/decompress; empty for a model that
    declares no versions (it codes one way). A version the model declares it cannot code: ``HPCMError``."""
    versions = format_versions(model)
    if not versions:
        return {}
    if version not in versions:
        raise HPCMError(f"this model cannot code format version {version} (it codes {versions})")
    return {"format_version": version}


def _expected_streams(version: int) -> int:
    return 2 if version == 1 else 3


def _decode_streams(model: nn.Module, header: Header, streams: list[bytes],
                    threads: int | None = None) -> tuple[np.ndarray, int]:
    """Run ``model.decompress`` and crop -> (image, decisions the side stream corrected); defects in the
    streams become ``FormatError``.

    Version 1: with the encoder's thread count, clamped to the usable cores (exact only on the encoder's
    device kind). Version 2: with ``threads`` (None: torch's current setting); the decoded latent must
    match the header's checksum.
    """
    if len(streams) != _expected_streams(header.version):
        raise FormatError(f"a version-{header.version} file has {_expected_streams(header.version)} streams, "
                          f"this one {len(streams)}")
    if header.version == 1:
        threads = decode_threads(header.threads, threads) if model_device(model).type == "cpu" else 0
    kwargs = {"quality": coding_quality(model, header.quality)} if is_variable_rate(model) else {}
    kwargs.update(format_kwargs(model, header.version))
    if header.recon_crc is not None and header.recon_layout in synthesis_layouts(model):
        kwargs["synthesis_layout"] = header.recon_layout  # reproduce the checksum's layout
    try:
        with torch.inference_mode(), pinned_threads(threads or 0), deterministic_math():
            out = model.decompress(list(streams), tuple(header.z_shape), **kwargs)
    except HPCMError:
        raise
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:  # corrupted streams surface as coder / shape errors
        raise FormatError(f"cannot decode the coded streams ({type(exc).__name__}: {exc})") from None
    if header.version >= 2 and out.get("latent_crc") != header.latent_crc:
        raise FormatError(
            "decoded latent does not match the encoder's (latent checksum): the file is corrupt, or this "
            "decoder's arithmetic deviates from the encoder's beyond the format's tolerance"
        )
    x_hat = out["x_hat"]
    if tuple(x_hat.shape) != (1, 3, header.padded_height, header.padded_width):
        raise FormatError(f"decoded image has shape {tuple(x_hat.shape)}, header says "
                          f"{header.padded_height}x{header.padded_width}")
    full = _to_uint8(x_hat)
    t, l = header.crop_top, header.crop_left
    image = np.ascontiguousarray(full[t : t + header.height, l : l + header.width])
    return image, int(out.get("corrections", 0))


def refinement_lambda(model: nn.Module, quality: float | None) -> float:
    """The λ the latent refinement trades rate against MSE with: the model's own at ``quality``
    (variable-rate models), else HPCM's MSE λ of the weights' quality (fixed-rate weights are taken to be
    MSE-trained, as the official and bundled ones are)."""
    from hpcm.rates import MSE_LAMBDAS, lambda_for

    lmbda = model.rate_lambda(quality) if quality is not None else None
    if lmbda is not None:
        return lmbda
    own = weights_info(model).get("quality")
    if isinstance(own, int | float) and float(own).is_integer() and 1 <= int(own) <= len(MSE_LAMBDAS):
        return lambda_for(int(own))
    raise HPCMError("latent refinement needs the model's λ: a variable-rate model, or weights of a known "
                    f"quality 1..{len(MSE_LAMBDAS)}")


def encode(model: nn.Module, image: np.ndarray, *, quality: float | None = None, padding: str = "replicate",
           verify: bool = False, format_version: int = container.VERSION,
           refine: RefineSettings | None = None,
           icc_profile: bytes | None = None, exif: bytes | None = None,
           xmp: bytes | None = None) -> tuple[bytes, Header, CodecTimes]:
    """Code ``image`` (H, W, 3 uint8); return (file bytes, header, times).

    ``quality``: for variable-rate models, any value in the model's range (stored in the header to
    1/100; default ``DEFAULT_VR_QUALITY``); fixed-rate models code their weights' quality.

    With ``verify`` the streams are decoded again in-process and compared with the reconstruction of
    an eval-mode forward pass; a mismatch raises ``HPCMError``. The header then also carries the
    CRC-32 of the decoded image (see :func:`decode` for when it is enforced).
    ``format_version`` 1 writes the legacy format (official μ, no side stream, exact only on the
    encoder's device kind and thread count); 2 and 3 (default) decode exactly anywhere (3: the compact side
    stream, docs/format.md).
    ``refine`` (with ``steps`` > 0): code a latent optimised for this image (:mod:`hpcm.codec.refine`); the
    file and its decoding are unchanged, the encode takes longer.
    ``icc_profile``: the image's ICC colour profile, stored in the file for the decoded image (the pixels are
    coded as they are; ``image_io.read_image_and_profile`` reads it; not in format version 1). ``exif``,
    ``xmp``: the image's EXIF block and XMP packet, stored for the decoded image likewise
    (``image_io.read_image_with_metadata`` reads all three).
    """
    if format_version not in container.SUPPORTED_VERSIONS:
        raise HPCMError(f"unsupported format version {format_version}")
    image = _check_image(image)
    t0 = time.perf_counter()
    device = model_device(model)
    multiple = _size_multiple(model)
    vr_quality = coding_quality(model, quality)
    kwargs = {} if vr_quality is None else {"quality": vr_quality}
    kwargs.update(format_kwargs(model, format_version))
    preset, own_quality, fingerprint = model_identity(model)
    padded, top, left = pad_image(image, multiple, padding)
    x = _to_tensor(padded, device)
    threads = coding_threads(device)
    times = CodecTimes()
    if refine is not None and refine.steps > 0:
        if not can_refine(model):
            raise HPCMError(f"{type(model).__name__} does not support latent refinement")
        lmbda = refinement_lambda(model, vr_quality)
        with deterministic_math():
            region = (top, left, image.shape[0], image.shape[1])
            latent, report = refine_latent(model, x, lmbda, refine, quality=vr_quality, region=region,
                                           format_version=kwargs.get("format_version", container.VERSION))
        kwargs["latent"] = latent
        times.extra["refine"] = report.seconds
        times.extra["refine_gain"] = 1.0 - report.best_cost / report.start_cost
    t1 = time.perf_counter()
    with torch.inference_mode(), deterministic_math():
        out = model.compress(x, **kwargs)
    t2 = time.perf_counter()
    strings = [bytes(s[0] if isinstance(s, list | tuple) else s) for s in out["strings"]]
    if len(strings) != _expected_streams(format_version):
        raise HPCMError(f"model.compress gave {len(strings)} streams; format version {format_version} "
                        f"needs {_expected_streams(format_version)}")
    hz, wz = (int(v) for v in out["shape"])
    header = Header(
        preset=preset, quality=own_quality if vr_quality is None else vr_quality, fingerprint=fingerprint,
        height=image.shape[0], width=image.shape[1],
        padded_height=padded.shape[0], padded_width=padded.shape[1],
        crop_top=top, crop_left=left, padding=padding, device=_device_kind(device),
        threads=threads, z_shape=(hz, wz), version=format_version,
        latent_crc=out.get("latent_crc") if format_version >= 2 else None,
        icc_profile=None if icc_profile is None else bytes(icc_profile),
        exif=None if exif is None else bytes(exif), xmp=None if xmp is None else bytes(xmp),
    )
    times.network = t2 - t1
    if verify:
        tv = time.perf_counter()
        decoded, _ = _decode_streams(model, header, strings)
        with torch.inference_mode(), pinned_threads(threads), deterministic_math():
            ref = _to_uint8(model(x, training=False, **kwargs)["x_hat"])
            ref = ref[top : top + image.shape[0], left : left + image.shape[1]]
        diff = np.abs(decoded.astype(np.int16) - ref.astype(np.int16))
        if diff.max(initial=0) > 1:
            raise HPCMError(
                f"verification failed: decoded image differs from the encoder's reconstruction "
                f"(max |diff| {int(diff.max())}, {int((diff > 1).sum())} samples); the file was not written"
            )
        header.recon_crc = image_crc(decoded)
        times.extra["verify"] = time.perf_counter() - tv
    data = container.pack(header, strings)
    times.total = time.perf_counter() - t0
    return data, header, times


def retired_weights_hint(fingerprint_hex: str) -> str:
    """'; those weights shipped with hpcm <release> ...' when a file's weights were once shipped
    (``RELEASES.json``), else ''. Files written with shipped weights must stay decodable."""
    from hpcm.models.io import release_label, shipped_weights_record

    shipped = shipped_weights_record(fingerprint_hex)
    if shipped is None:
        return ""
    return (f"; those weights shipped with {release_label(shipped)}: "
            "decode the file with that release, or pass its weights with --checkpoint")


def model_for_header(header: Header, *, weights: str | os.PathLike | None = None,
                     device: str | None = None) -> nn.Module:
    """The model that wrote ``header``: ``weights`` (a ``.safetensors`` or official checkpoint, loaded into
    the header's preset; :func:`decode` checks its fingerprint), else the shipped weights of the header's
    preset and quality. ``device``: default CPU (version-1 files: the encoder's device kind, where alone they
    decode exactly). Raises ``ModelMismatchError`` naming what would decode the file (a release that
    shipped its weights, or ``--checkpoint``) when the shipped weights are not the file's."""
    from hpcm.errors import CheckpointError
    from hpcm.models.io import load_model
    from hpcm.models.registry import list_models

    legacy = header.version == 1 and header.device in ("cpu", "cuda", "mps")
    device = device or (header.device if legacy else "cpu")
    if weights is not None:
        return load_model(weights, device=device, preset=header.preset)
    if header.preset not in list_models():
        raise ModelMismatchError(
            f"file was written by model {header.preset!r}, which is not a built-in preset; "
            "pass the weights with --checkpoint"
        )
    level = f"{header.quality:g}" if header.quality else "-"
    advice = retired_weights_hint(header.fingerprint_hex) or (
        "; pass the weights it was written with: --checkpoint PATH")
    hint = (f"file was written by {header.preset} q{level} with weights {header.fingerprint_hex}, which are "
            f"not the weights shipped for {header.preset}{advice}")
    quality = header.quality
    try:  # a variable-rate preset's weights serve every quality; fractional qualities are only theirs
        model = load_model(header.preset, quality=int(quality) if quality and float(quality).is_integer()
                           else None, device=device)
    except CheckpointError:  # e.g. a quality that no shipped weights have
        raise ModelMismatchError(hint) from None
    if model_identity(model)[2] != header.fingerprint:
        raise ModelMismatchError(hint)
    return model


def check_model(header: Header, model: nn.Module, *, allow_cross_device: bool = False) -> None:
    """Raise ``ModelMismatchError`` unless ``model`` (on this device kind) wrote ``header``."""
    preset, quality, fingerprint = model_identity(model)
    if fingerprint != header.fingerprint:
        raise ModelMismatchError(
            f"file was written by {header.preset} q{header.quality or '-'} with weights "
            f"{header.fingerprint_hex}, but the model given is {preset} q{quality or '-'} "
            f"with weights {fingerprint.hex()}{retired_weights_hint(header.fingerprint_hex)}"
        )
    multiple = _size_multiple(model)
    if header.padded_height % multiple or header.padded_width % multiple:
        raise FormatError(f"padded size in header is not a multiple of the model's size multiple {multiple}")
    kind = _device_kind(model_device(model))
    if header.version == 1 and kind != header.device and not allow_cross_device:
        raise ModelMismatchError(
            f"file was encoded on {header.device} but the model runs on {kind}; learned codecs need the same "
            f"device for bit-exact decoding (use --device {header.device})"
        )


def _file_bytes(data: bytes | str | os.PathLike) -> bytes:
    """The bytes of a ``.hpcm`` file given as bytes-like or as a path (str / PathLike)."""
    if isinstance(data, str | os.PathLike):
        try:
            with open(data, "rb") as fh:
                return fh.read()
        except OSError as exc:
            raise HPCMError(f"cannot read {os.fspath(data)}: {exc.strerror or exc}") from None
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"expected the bytes of a .hpcm file or its path, got {type(data).__name__}")
    return bytes(data)


def _same_platform(header: Header, model: nn.Module) -> bool:
    """Whether this process decodes like the encoder did (device kind and, on CPU, thread count)."""
    kind = _device_kind(model_device(model))
    return kind == header.device and (kind != "cpu" or torch.get_num_threads() == header.threads)


def decode(
    data: bytes | str | os.PathLike, model: nn.Module, *, allow_cross_device: bool = False,
    threads: int | None = None,
) -> tuple[np.ndarray, Header, CodecTimes]:
    """Decode a complete ``.hpcm`` file (bytes, or a path) with ``model``; return (image, header, times).

    Version 2: ``threads`` CPU threads (None: torch's current setting), any device; the decoded latent is
    checked against the header's checksum. The reconstruction CRC of a verified file is enforced on the
    encoder's platform (device kind and thread count); elsewhere the pixels after g_s may differ by ±1
    and a mismatch is only reported (``times.extra["recon_crc_mismatch"]``).
    Version 1: the encoder's device kind (unless ``allow_cross_device``) and thread count (capped at
    ``threads`` and the usable cores, see :func:`decode_threads`).
    """
    t0 = time.perf_counter()
    header, streams = container.unpack(_file_bytes(data))
    check_model(header, model, allow_cross_device=allow_cross_device)
    check_stream_lengths(header, model)  # refuse before the network runs (hpcm.codec.plausibility)
    t1 = time.perf_counter()
    with pinned_threads((threads or 0) if header.version >= 2 else 0):
        image, corrections = _decode_streams(model, header, streams, threads)
        same = _same_platform(header, model)
    t2 = time.perf_counter()
    extra: dict[str, float] = {"corrections": float(corrections)}
    if header.recon_crc is not None and image_crc(image) != header.recon_crc:
        if header.version >= 2 and not same:
            extra["recon_crc_mismatch"] = 1.0
        else:
            raise FormatError(
                "decoded image does not match the encoder's reconstruction (stored checksum): the file was "
                "altered after it was written, or this decoder computes differently from the encoder "
                "(device, hardware, library version)"
            )
    return image, header, CodecTimes(network=t2 - t1, total=time.perf_counter() - t0, extra=extra)


def compress_image(model: nn.Module, image: np.ndarray, *, quality: float | None = None,
                   padding: str = "replicate", verify: bool = False, refine_steps: int = 0) -> bytes:
    """Code an (H, W, 3) uint8 RGB image into a complete ``.hpcm`` file (bytes).

    ``quality``: for variable-rate models; ``refine_steps``: latent refinement (see :func:`encode`)."""
    refine = RefineSettings(steps=refine_steps) if refine_steps else None
    return encode(model, image, quality=quality, padding=padding, verify=verify, refine=refine)[0]


def decompress_image(data: bytes | str | os.PathLike, model: nn.Module | None = None, *,
                     allow_cross_device: bool = False) -> np.ndarray:
    """Decode a ``.hpcm`` file (its bytes, or its path) into an (H, W, 3) uint8 RGB image.

    ``model``: default, the shipped model the header names (:func:`model_for_header`). Raises
    ``FormatError`` for malformed/corrupted data and ``ModelMismatchError`` for a file written by another
    model (preset, quality or weights) or on another device kind.
    """
    if model is None:
        data = _file_bytes(data)
        model = model_for_header(container.read_header(data))
    return decode(data, model, allow_cross_device=allow_cross_device)[0]
