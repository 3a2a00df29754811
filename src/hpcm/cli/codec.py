"""``hpcm compress | decompress | info | demo``: the codec sub-commands (thin layer over hpcm.codec)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from hpcm.errors import HPCMError, ModelMismatchError

DEFAULT_MODEL = "hpcm-tiny"  # the preset with trained weights shipped in the package (src/hpcm/weights)
REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_DEMO_IMAGE = Path("..") / "shared" / "data" / "kodak" / "kodim23.png"


def _say(msg: str) -> None:
    print(msg, flush=True)


def _note(msg: str) -> None:
    print(f"hpcm: {msg}", file=sys.stderr, flush=True)


def _untrained_warning(model) -> None:
    info = getattr(model, "weights_info", {}) or {}
    if not info.get("trained", True):
        _note(
            f"warning: {info.get('preset')} has UNTRAINED weights (deterministic initial weights, no trained "
            "weights shipped); the files are valid and decode exactly, but bpp and quality are meaningless"
        )
    elif info.get("note"):
        _note(f"note: weights {info.get('preset')} q{info.get('quality') or '-'}: {info['note']}")


def _load(spec: str, *, quality: int | None, device: str, preset: str | None = None):
    import torch

    from hpcm.models.io import load_model

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise HPCMError(f"invalid device {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise HPCMError(f"device {device!r} requested but CUDA is not available")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise HPCMError(f"device {device!r} requested but MPS is not available")
    t0 = time.perf_counter()
    model = load_model(spec, quality=quality, device=device, preset=preset)
    return model, time.perf_counter() - t0


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise HPCMError(f"{path}: no such file") from None
    except OSError as exc:
        raise HPCMError(f"cannot read {path}: {exc.strerror or exc}") from None


def _model_for_file(header, args) -> tuple[object, float]:
    """The model that wrote ``header``: from --checkpoint, else from its preset + quality."""
    from hpcm.models.registry import list_models

    # version-1 files decode exactly only on the encoder's device kind; version 2 anywhere (default CPU)
    legacy = header.version == 1 and header.device in ("cpu", "cuda", "mps")
    device = args.device or (header.device if legacy else "cpu")
    if args.checkpoint:
        return _load(args.checkpoint, quality=None, device=device, preset=header.preset)
    if header.preset not in list_models():
        raise ModelMismatchError(
            f"file was written by model {header.preset!r}, which is not a built-in preset; "
            "pass the weights with --checkpoint"
        )
    quality = header.quality or None
    if quality is not None and float(quality).is_integer():
        quality = int(quality)
    return _load(header.preset, quality=quality, device=device)


# -- commands ---------------------------------------------------------------------------------------


def cmd_compress(args: argparse.Namespace) -> int:
    from hpcm.codec.api import encode
    from hpcm.codec.atomic import atomic_write_bytes
    from hpcm.codec.image_io import read_image_with_notes

    src = Path(args.input)
    out = Path(args.output) if args.output else src.with_suffix(".hpcm")
    if out.exists() and not args.force:
        raise HPCMError(f"{out} already exists (use --force to overwrite)")
    image, notes = read_image_with_notes(src, alpha=args.alpha)
    for n in notes:
        _note(f"note: {src}: {n}")
    spec = args.checkpoint or args.model
    model, load_s = _load(spec, quality=args.quality, device=args.device, preset=args.model)
    _untrained_warning(model)
    data, header, times = encode(model, image, padding=args.padding, verify=args.verify)
    atomic_write_bytes(out, data, overwrite=args.force)
    h, w = image.shape[:2]
    _say(
        f"{src} -> {out}: {w}x{h}, {len(data)} bytes, {header.bpp():.4f} bpp "
        f"(streams {header.payload_bpp():.4f}); model {header.preset} q{header.quality or '-'} "
        f"[{header.fingerprint_hex}]"
    )
    line = f"encode {times.network:.2f} s (total {times.total - times.extra.get('verify', 0.0):.2f} s)"
    if args.verify:
        line += f", verify {times.extra['verify']:.2f} s: decoded image matches the encoder's"
    _say(f"{line}; model load {load_s:.2f} s")
    return 0


def cmd_decompress(args: argparse.Namespace) -> int:
    from hpcm.codec.api import decode
    from hpcm.codec.container import unpack
    from hpcm.codec.image_io import format_for_path, write_image

    src = Path(args.input)
    out = Path(args.output) if args.output else src.with_suffix(".png")
    format_for_path(out)
    if out.exists() and not args.force:
        raise HPCMError(f"{out} already exists (use --force to overwrite)")
    data = _read_bytes(src)
    header, _ = unpack(data)
    model, load_s = _model_for_file(header, args)
    _untrained_warning(model)
    threads = args.threads if args.threads is not None else available_cores()
    image, header, times = decode(data, model, allow_cross_device=args.allow_cross_device, threads=threads)
    write_image(out, image, overwrite=args.force)
    if times.extra.get("recon_crc_mismatch"):
        _note("note: the latent matched exactly; the pixels differ from the encoder's in the last bit "
              "(another thread count or platform), as two JPEG decoders may")
    _say(f"{src} -> {out}: {header.width}x{header.height}, {header.bpp():.4f} bpp")
    _say(f"decode {times.network:.2f} s (total {times.total:.2f} s); model load {load_s:.2f} s")
    return 0


def available_cores() -> int:
    """CPU cores this process may use (its affinity mask), at least 1."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _threads(text: str) -> int:
    n = int(text)
    if not 1 <= n <= 1024:
        raise argparse.ArgumentTypeError("threads must be between 1 and 1024")
    return n


def cmd_info(args: argparse.Namespace) -> int:
    from hpcm.codec.container import unpack

    header, _ = unpack(_read_bytes(Path(args.file)))
    fields = header.as_dict()
    if args.json:
        _say(json.dumps(fields, indent=2))
        return 0
    width = max(len(k) for k in fields)
    for key, value in fields.items():
        if isinstance(value, float):
            value = f"{value:.4f}"
        elif isinstance(value, list):
            value = " x ".join(map(str, value)) if key.endswith(("size", "shape")) else value
        _say(f"{key:<{width}}  {value}")
    return 0


def _default_demo_image() -> Path:
    for base in (REPO_ROOT, Path.cwd()):
        cand = (base / DEFAULT_DEMO_IMAGE).resolve()
        if cand.is_file():
            return cand
    return (REPO_ROOT / DEFAULT_DEMO_IMAGE).resolve()


def cmd_demo(args: argparse.Namespace) -> int:
    from hpcm.codec.api import decode, encode
    from hpcm.codec.atomic import atomic_write_bytes
    from hpcm.codec.image_io import read_image_with_notes, write_image
    from hpcm.eval.metrics import psnr

    src = Path(args.image) if args.image else _default_demo_image()
    image, notes = read_image_with_notes(src, alpha="white")
    for n in notes:
        _note(f"note: {src}: {n}")
    model, load_s = _load(args.model, quality=args.quality, device=args.device)
    info = model.weights_info
    h, w = image.shape[:2]
    _say(f"hpcm demo: {src.name} ({w}x{h}), model {info['preset']} q{info.get('quality') or '-'} "
         f"on {args.device} (loaded in {load_s:.2f} s)")
    if not info.get("trained", True):
        _say(
            "NOTE: these weights are UNTRAINED (deterministic initial weights; no trained weights are "
            "shipped yet). Coding is real and exact, but the bpp and PSNR below say nothing about "
            "HPCM's quality."
        )
    elif info.get("note"):
        _say(f"NOTE: {info['note']}")
    data, header, enc = encode(model, image)
    decoded, _, dec = decode(data, model)
    if decoded.shape != image.shape:
        raise HPCMError(f"demo: decoded shape {decoded.shape} differs from {image.shape}")
    if args.out_dir:
        out_dir = Path(args.out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out_dir / f"{src.stem}.hpcm", data, overwrite=True)
        write_image(out_dir / f"{src.stem}.decoded.png", decoded, overwrite=True)
        _say(f"wrote {out_dir / (src.stem + '.hpcm')} and {out_dir / (src.stem + '.decoded.png')}")
    _say(f"size    {len(data)} bytes  ({header.bpp():.4f} bpp, streams {header.payload_bpp():.4f} bpp)")
    _say(f"PSNR    {psnr(image, decoded):.2f} dB (8-bit RGB)")
    _say(f"encode  {enc.total:.2f} s   decode  {dec.total:.2f} s")
    return 0


# -- argument parsing -------------------------------------------------------------------------------


def _quality(text: str) -> int:
    q = int(text)
    if not 1 <= q <= 255:
        raise argparse.ArgumentTypeError("quality must be between 1 and 255 (trained presets: 1..6)")
    return q


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``compress``, ``decompress``, ``info`` and ``demo`` to the ``hpcm`` command."""
    fmt = argparse.ArgumentDefaultsHelpFormatter

    p = subparsers.add_parser(
        "compress", help="image -> .hpcm file", formatter_class=fmt,
        description="Compress an image (PNG, JPEG, ...; see README 'Supported image inputs') "
        "into a .hpcm file.",
    )
    p.add_argument("input", metavar="IN", help="input image")
    p.add_argument("-o", "--output", metavar="OUT", help="output file (default: IN with suffix .hpcm)")
    p.add_argument("--model", default=DEFAULT_MODEL, help="preset name (see `hpcm models`); with a .pth.tar "
                   "checkpoint, the architecture to load it into")
    p.add_argument("--quality", type=_quality, default=None,
                   help="rate point (low..high) among the preset's shipped trained weights (listed by "
                   "`hpcm models`; hpcm-tiny: 1..5); default 3")
    p.add_argument("--checkpoint", metavar="PATH",
                   help=".safetensors weights or official .pth.tar checkpoint")
    p.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    p.add_argument("--verify", action="store_true",
                   help="decode what was written and fail loudly on mismatch (about 2x encode time); also "
                   "stores a checksum of the decoded image that later decodes check")
    p.add_argument("--device", default="cpu", help="torch device (decode on the same device kind)")
    p.add_argument("--padding", choices=("replicate", "reflect", "zeros"), default="replicate",
                   help="how the image is padded to the model's size multiple")
    p.add_argument("--alpha", choices=("refuse", "drop", "white"), default="refuse",
                   help="images with transparency: refuse, drop the alpha, or composite on white")
    p.set_defaults(func=cmd_compress)

    p = subparsers.add_parser(
        "decompress", help=".hpcm file -> image", formatter_class=fmt,
        description="Decompress a .hpcm file. The model is found from the file header (preset and quality); "
        "with --checkpoint, its weights fingerprint must match the header.",
    )
    p.add_argument("input", metavar="IN", help="input .hpcm file")
    p.add_argument("-o", "--output", metavar="OUT", help="output image (default: IN with suffix .png)")
    p.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    p.add_argument("--checkpoint", metavar="PATH", help="weights the file was written with")
    p.add_argument("--device", default=None, help="torch device (default: cpu; for version-1 files the "
                   "device kind that encoded)")
    p.add_argument("--threads", type=_threads, default=None,
                   help="CPU threads (default: the cores this process may use); version-1 files use the "
                   "encoder's thread count")
    p.add_argument("--allow-cross-device", action="store_true",
                   help="version-1 files only: decode on another device kind than the encoder's (may give a "
                   "wrong image; a verified file detects that). Version-2 files decode exactly anywhere")
    p.set_defaults(func=cmd_decompress)

    p = subparsers.add_parser("info", help="show the header of a .hpcm file", formatter_class=fmt,
                              description="Check a .hpcm file (structure and checksum) and print its header.")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)

    p = subparsers.add_parser(
        "demo", help="compress + decompress one Kodak image", formatter_class=fmt,
        description="Compress and decompress one image in memory and print bpp, PSNR and timings.",
    )
    p.add_argument("image", nargs="?", metavar="IMAGE", help=f"image (default: {DEFAULT_DEMO_IMAGE})")
    p.add_argument("--model", default=DEFAULT_MODEL, help="preset name")
    p.add_argument("--quality", type=_quality, default=None, help="rate point (see compress)")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--out-dir", metavar="DIR", help="also write the .hpcm and decoded PNG here")
    p.set_defaults(func=cmd_demo)
