"""``hpcm compress | decompress | info | demo``: the codec sub-commands (thin layer over hpcm.codec)."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from hpcm.codec.container import MAX_PIXELS
from hpcm.errors import HPCMError
from hpcm.models.bundled import DEFAULT_MODEL
from hpcm.models.protocol import is_variable_rate, weights_info

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_DEMO_IMAGE = Path("..") / "shared" / "data" / "kodak" / "kodim23.png"


def _say(msg: str) -> None:
    print(msg, flush=True)


def _note(msg: str) -> None:
    print(f"hpcm: {msg}", file=sys.stderr, flush=True)


#: The path that means standard input (as an input) or standard output (as ``-o``).
STDIO = Path("-")


def _reporter(out: Path):
    """Where a command's report lines go: stdout, or stderr when the coded data itself goes to stdout."""
    return (lambda msg: print(msg, file=sys.stderr, flush=True)) if out == STDIO else _say


def _shown(path: Path, stream: str) -> str:
    """``path`` as a report names it: ``<stdin>`` / ``<stdout>`` for ``-``."""
    return f"<{stream}>" if path == STDIO else str(path)


def _stdout_writable(what: str) -> None:
    """Refuse to write binary ``what`` to a terminal (like gzip): it is unreadable there and may upset it."""
    if sys.stdout.isatty():
        raise HPCMError(f"refusing to write {what} to a terminal; redirect standard output or give -o FILE")


def _write_stdout(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def _untrained_warning(model) -> None:
    info = weights_info(model)
    if not info.get("trained", True):
        _note(
            f"warning: {info.get('preset')} has UNTRAINED weights (deterministic initial weights, no trained "
            "weights shipped); the files are valid and decode exactly, but bpp and quality are meaningless"
        )
    elif info.get("note"):
        level = f" q{info['quality']}" if info.get("quality") else ""  # none: variable-rate, every quality
        _note(f"note: weights {info.get('preset')}{level}: {short_note(info['note'])} (details: hpcm models)")


def _level(quality: float | None) -> str:
    """A header's quality as printed: ``2``, ``2.57``; ``-`` when none."""
    return f"{quality:g}" if quality else "-"


def short_note(note: str, limit: int = 80) -> str:
    """The head of a weights note (up to its first ': ' or '; '), at most ``limit`` characters."""
    head = note.strip()
    for sep in (": ", "; "):
        head = head.split(sep, 1)[0]
    return head if len(head) <= limit else head[: limit - 1].rstrip() + "…"


def _check_device(device: str) -> None:
    """Refuse a device string torch does not parse, or a CUDA / MPS device this machine lacks."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise HPCMError(f"invalid device {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise HPCMError(f"device {device!r} requested but CUDA is not available")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise HPCMError(f"device {device!r} requested but MPS is not available")


def _load(spec: str, *, quality: float | None, device: str, preset: str | None = None):
    from hpcm.models.io import load_model

    _check_device(device)
    from hpcm.models.io import is_variable_rate_preset
    from hpcm.models.registry import list_models

    if quality is not None and not float(quality).is_integer():
        if spec not in list_models() or not is_variable_rate_preset(spec):
            if not str(spec).endswith(".safetensors"):
                raise HPCMError(f"quality {quality:g} needs a variable-rate model (e.g. {DEFAULT_MODEL})")
        quality_arg = None  # a variable-rate model: the quality is chosen when coding
    else:
        quality_arg = None if quality is None else int(quality)
    t0 = time.perf_counter()
    model = load_model(spec, quality=quality_arg, device=device, preset=preset)
    return model, time.perf_counter() - t0


def _set_threads(threads: int | None) -> int:
    """Torch's CPU threads for encoding: ``threads``, else torch's default capped at the usable cores."""
    import torch

    from hpcm.threads import available_cores

    n = threads or min(torch.get_num_threads(), available_cores())
    if n != torch.get_num_threads():
        torch.set_num_threads(n)
    return n


@contextlib.contextmanager
def coding_progress(model, what: str, *, stream=None, delay: float = 1.0,
                    interval: float = 0.5) -> Iterator[None]:
    """On a terminal, a self-erasing status line while a long encode/decode runs (after ``delay`` s).

    Progress is the context-model step reached (forward hooks on the spatial priors, which run once per
    coded step of ``hpcm.models.schedule.STEPS``) and the elapsed time. Silent when ``stream`` is not a
    terminal (logs, pipes) and for codings shorter than ``delay``.
    """
    stream = stream or sys.stderr
    if not getattr(stream, "isatty", lambda: False)():
        yield
        return
    from hpcm.models.schedule import STEPS

    total = sum(1 for s in STEPS if s.uses_network)
    count = [0]
    hooks = []
    for name in ("y_spatial_prior_s1_s2", "y_spatial_prior_s3"):
        module = getattr(model, name, None)
        if module is not None and hasattr(module, "register_forward_hook"):
            hooks.append(module.register_forward_hook(lambda *_: count.__setitem__(0, count[0] + 1)))
    stop, shown, t0 = threading.Event(), [False], time.perf_counter()

    def tick() -> None:
        if stop.wait(delay):
            return
        while True:
            k = count[0]
            where = f"context step {k}/{total}" if k <= total else "verifying"
            stream.write(f"\rhpcm: {what}: {where}, {time.perf_counter() - t0:.0f} s ")
            stream.flush()
            shown[0] = True
            if stop.wait(interval):
                return

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        for h in hooks:
            h.remove()
        if shown[0]:
            stream.write("\r" + " " * 72 + "\r")
            stream.flush()


def _read_bytes(path: Path) -> bytes:
    if path == STDIO:
        return sys.stdin.buffer.read()
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise HPCMError(f"{path}: no such file") from None
    except OSError as exc:
        raise HPCMError(f"cannot read {path}: {exc.strerror or exc}") from None


def _model_for_file(header, args) -> tuple[object, float]:
    """The model that wrote ``header`` (``--checkpoint``, else its preset's shipped weights) and its load
    time (``hpcm.codec.api.model_for_header``)."""
    from hpcm.codec.api import model_for_header

    if args.device:
        _check_device(args.device)
    t0 = time.perf_counter()
    model = model_for_header(header, weights=args.checkpoint, device=args.device)
    return model, time.perf_counter() - t0


# -- commands ---------------------------------------------------------------------------------------


def _outputs(inputs: list[str], output: str | None, suffix: str) -> list[Path]:
    """Where each input goes: ``-o`` for one input; for several, next to each (``-o``: into that folder).
    ``-`` is standard input / output: standard input goes to standard output unless ``-o`` says otherwise."""
    srcs = [Path(i) for i in inputs]
    if len(srcs) == 1:
        default = STDIO if srcs[0] == STDIO else srcs[0].with_suffix(suffix)
        return [Path(output) if output else default]
    if STDIO in srcs or output == str(STDIO):
        raise HPCMError("- (standard input or output) works with one input only")
    if output is not None and not Path(output).is_dir():
        raise HPCMError(f"-o {output}: with several inputs, -o must name an existing folder")
    outs = [(Path(output) / s.name if output else s).with_suffix(suffix) for s in srcs]
    seen: dict[Path, Path] = {}
    for src, out in zip(srcs, outs, strict=True):
        key = Path(os.path.abspath(out))
        if key in seen:
            raise HPCMError(f"{seen[key]} and {src} would both be written to {out}; code them separately")
        seen[key] = src
    return outs


def _each_file(pairs: list[tuple[Path, Path]], code_one) -> int:
    """Run ``code_one(src, out)`` for every pair. One pair: errors propagate as they are. Several: a
    failure is reported (``hpcm: error: SRC: ...``) and the others go on; exit status 1 if any failed."""
    if len(pairs) == 1:
        return code_one(*pairs[0])
    failed = 0
    for src, out in pairs:
        try:
            code_one(src, out)
        except HPCMError as exc:
            failed += 1
            print(f"hpcm: error: {src}: {exc}", file=sys.stderr)
    _say(f"{len(pairs) - failed} of {len(pairs)} files done" + (f", {failed} failed" if failed else ""))
    return 1 if failed else 0


def cmd_compress(args: argparse.Namespace) -> int:
    from hpcm.codec.atomic import check_output_path

    outs = _outputs(args.input, args.output, ".hpcm")
    for out in outs:  # refuse before any work is done
        if out == STDIO:
            _stdout_writable("a .hpcm file")
        else:
            check_output_path(out, overwrite=args.force)
    if not args.checkpoint:
        check_quality(args.model, args.quality)
    _set_threads(args.threads)
    loaded: list[tuple[object, float]] = []  # the model, loaded once, after the first image was read

    def model_once() -> tuple[object, float]:
        if not loaded:
            spec = args.checkpoint or args.model
            model, load_s = _load(spec, quality=args.quality, device=args.device, preset=args.model)
            _untrained_warning(model)
            loaded.append((model, load_s))
            return model, load_s
        return loaded[0][0], 0.0

    return _each_file(list(zip((Path(i) for i in args.input), outs, strict=True)),
                      lambda src, out: _compress_one(src, out, args, model_once))


def _compress_one(src: Path, out: Path, args: argparse.Namespace, model_once) -> int:
    from hpcm.codec.api import encode
    from hpcm.codec.atomic import atomic_write_bytes
    from hpcm.codec.image_io import read_image_with_metadata
    from hpcm.codec.rate_control import encode_to_target
    from hpcm.codec.refine import RefineSettings

    say = _reporter(out)
    if out != STDIO and out.suffix.lower() != ".hpcm":
        _note(f"note: {out.name}: the output is an .hpcm file whatever its suffix (decode it with "
              "hpcm decompress); name it .hpcm to avoid confusion")
    if src == STDIO:
        source = io.BytesIO(sys.stdin.buffer.read())
        source.name = "<stdin>"
    else:
        source = src
    image, notes, metadata = read_image_with_metadata(source, alpha=args.alpha, icc=args.icc,
                                                      metadata=args.metadata)
    stored = {"icc_profile": metadata.icc_profile, "exif": metadata.exif, "xmp": metadata.xmp}
    for n in notes:
        _note(f"note: {src}: {n}")
    model, load_s = model_once()
    h, w = image.shape[:2]
    target = _rate_target(args, h, w)
    searched = None
    with coding_progress(model, f"encoding {w}x{h}"):
        if target is None:
            data, header, times = encode(model, image, quality=args.quality, padding=args.padding,
                                         verify=args.verify, **stored,
                                         refine=RefineSettings(steps=args.refine) if args.refine else None)
        else:
            searched = encode_to_target(model, image, target, padding=args.padding, verify=args.verify,
                                        **stored)
            data, header, times = searched.data, searched.header, searched.times
    if out == STDIO:
        _write_stdout(data)
    else:
        atomic_write_bytes(out, data, overwrite=args.force)
    say(
        f"{_shown(src, 'stdin')} -> {_shown(out, 'stdout')}: {w}x{h}, {len(data)} bytes, "
        f"{header.bpp():.4f} bpp (streams {header.payload_bpp():.4f}); model {header.preset} "
        f"q{_level(header.quality)} [{header.fingerprint_hex}]"
    )
    line = f"encode {times.network:.2f} s (total {times.total - times.extra.get('verify', 0.0):.2f} s)"
    if args.refine:
        line += (f", latent refinement {times.extra['refine']:.2f} s ({args.refine} steps, RD cost "
                 f"-{100 * times.extra['refine_gain']:.2f} %)")
    if args.verify:
        line += f", verify {times.extra['verify']:.2f} s: decoded image matches the encoder's"
    say(f"{line}; model load {load_s:.2f} s" if load_s else line)
    if searched is not None:
        reached = f", {searched.psnr:.2f} dB" if searched.psnr is not None else ""
        say(f"quality {_level(searched.quality)} meets {target.describe()} ({searched.size} bytes"
             f"{reached}); search: {searched.encodes} encodes, {searched.seconds:.2f} s")
    return 0


def _rate_target(args: argparse.Namespace, height: int, width: int):
    """The ``--max-size`` / ``--max-bpp`` / ``--min-psnr`` target of ``compress`` (None: none given)."""
    from hpcm.codec.rate_control import RateTarget

    if args.max_size is None and args.max_bpp is None and args.min_psnr is None:
        return None
    if args.refine:
        raise HPCMError("--refine cannot be combined with --max-size, --max-bpp or --min-psnr (the search "
                        "codes the image several times); choose a --quality to refine at")
    if args.max_bpp is not None:
        return RateTarget.from_bpp(args.max_bpp, height, width)
    return RateTarget(max_bytes=args.max_size, min_psnr=args.min_psnr)


def cmd_decompress(args: argparse.Namespace) -> int:
    from hpcm.codec.atomic import check_output_path
    from hpcm.codec.image_io import lossy_write_note

    outs = _outputs(args.input, args.output, ".png")
    for out in outs:  # refuse before any work is done
        if out == STDIO:
            _stdout_writable("a PNG image")
            continue
        check_output_path(out, overwrite=args.force)
        lossy_write_note(out)  # also refuses suffixes that name no image format
    models: dict[tuple, tuple[object, float]] = {}  # one load per (preset, quality, weights)

    def model_for(header) -> tuple[object, float]:
        key = (header.preset, header.quality, header.fingerprint, header.version == 1 and header.device)
        if key in models:
            return models[key][0], 0.0
        models[key] = _model_for_file(header, args)
        _untrained_warning(models[key][0])
        return models[key]

    return _each_file(list(zip((Path(i) for i in args.input), outs, strict=True)),
                      lambda src, out: _decompress_one(src, out, args, model_for))


def _decompress_one(src: Path, out: Path, args: argparse.Namespace, model_for) -> int:
    from hpcm.codec.api import decode
    from hpcm.codec.container import unpack
    from hpcm.codec.image_io import (
        ImageMetadata,
        encode_image,
        lossy_write_note,
        metadata_write_note,
        write_image,
    )

    say = _reporter(out)
    lossy = None if out == STDIO else lossy_write_note(out)
    data = _read_bytes(src)
    header, _ = unpack(data)
    pixels = header.width * header.height
    if pixels > args.max_pixels:
        raise HPCMError(f"{src}: the image is {header.width}x{header.height} = {pixels:,} pixels, "
                        f"above --max-pixels {args.max_pixels:,}")
    model, load_s = model_for(header)
    from hpcm.threads import available_cores

    threads = args.threads if args.threads is not None else available_cores()
    with coding_progress(model, f"decoding {header.width}x{header.height}"):
        image, header, times = decode(data, model, allow_cross_device=args.allow_cross_device,
                                      threads=threads)
    metadata = ImageMetadata(header.icc_profile, header.exif, header.xmp)
    if out == STDIO:  # PNG: exact, and it carries the metadata
        _write_stdout(encode_image(image, "PNG", metadata.icc_profile, metadata.exif, metadata.xmp))
    else:
        write_image(out, image, overwrite=args.force, icc_profile=metadata.icc_profile, exif=metadata.exif,
                    xmp=metadata.xmp)
    if lossy:
        _note(f"note: {lossy}")
    lost = None if out == STDIO else metadata_write_note(out, metadata)
    if lost:
        _note(f"note: {lost}")
    if times.extra.get("recon_crc_mismatch"):
        _note("note: the latent matched exactly; the pixels differ from the encoder's in the last bit "
              "(another thread count or platform), as two JPEG decoders may")
    say(f"{_shown(src, 'stdin')} -> {_shown(out, 'stdout')}: {header.width}x{header.height}, "
        f"{header.bpp():.4f} bpp")
    line = f"decode {times.network:.2f} s (total {times.total:.2f} s)"
    say(f"{line}; model load {load_s:.2f} s" if load_s else line)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from hpcm.codec.container import unpack

    header, streams = unpack(_read_bytes(Path(args.file)))
    fields = header.as_dict()
    if header.version >= 3:
        from hpcm.entropy.side_bits import SCALE_TOLERANCE, file_mean_tolerance
        from hpcm.errors import FormatError

        try:  # the tolerances of the decisions the side stream resolves (docs/determinism.md)
            fields["side_tolerances"] = (f"sigma {SCALE_TOLERANCE:g}, mu "
                                         f"{file_mean_tolerance(streams[2], header.version):g}")
        except FormatError:
            fields["side_tolerances"] = "(unreadable side stream)"
    if header.icc_profile is not None:
        from hpcm.codec.image_io import icc_description

        fields["icc_profile"] = icc_description(header.icc_profile) or "(unreadable)"
    if header.exif is not None:
        from hpcm.codec.image_io import exif_summary

        fields["exif"] = exif_summary(header.exif)
    if args.json:
        _say(json.dumps(fields, indent=2))
        return 0
    width = max(len(k) for k in fields)
    for key, value in fields.items():
        if isinstance(value, float):
            value = f"{value:.4f}"
        elif isinstance(value, list) and key.endswith(("size", "shape")):
            value = f"{value[1]}x{value[0]} (W x H)"  # JSON keeps [H, W]; text follows compress: WxH
        elif isinstance(value, list) and key == "crop_offset":
            value = f"left {value[1]}, top {value[0]}"
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
    check_quality(args.model, args.quality)
    image, notes = read_image_with_notes(src, alpha="white")
    for n in notes:
        _note(f"note: {src}: {n}")
    model, load_s = _load(args.model, quality=args.quality, device=args.device)
    info = weights_info(model)
    h, w = image.shape[:2]
    if is_variable_rate(model):
        from hpcm.codec.api import coding_quality

        quality = f"{coding_quality(model, args.quality):g}"  # the quality it codes at (default 3)
    else:
        quality = info.get("quality") or "-"
    _say(f"hpcm demo: {src.name} ({w}x{h}), model {info['preset']} q{quality} "
         f"on {args.device} (loaded in {load_s:.2f} s)")
    if not info.get("trained", True):
        _say(
            "NOTE: these weights are UNTRAINED (deterministic initial weights; no trained weights are "
            "shipped yet). Coding is real and exact, but the bpp and PSNR below say nothing about "
            "HPCM's quality."
        )
    elif info.get("note"):
        _say(f"NOTE: {short_note(info['note'])} (details: hpcm models)")
    data, header, enc = encode(model, image, quality=args.quality)
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


def _int_at_least(text: str, least: int) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if n < least:
        raise argparse.ArgumentTypeError(f"must be at least {least}")
    return n


def _positive_int(text: str) -> int:
    return _int_at_least(text, 1)


def _non_negative_int(text: str) -> int:
    return _int_at_least(text, 0)


_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2,
               "mib": 1024**2}


def _byte_size(text: str) -> int:
    """``50000``, ``50k``, ``48KiB``, ``1.5M`` -> bytes (k/M: 1000s; KiB/MiB: 1024s)."""
    number = text.strip().rstrip("bBiIkKmM")
    unit = text.strip()[len(number):].lower()
    try:
        value = float(number) * _SIZE_UNITS[unit]
    except (ValueError, KeyError):
        raise argparse.ArgumentTypeError(f"not a size in bytes: {text!r} (e.g. 50000, 50k, 48KiB)") from None
    if not (math.isfinite(value) and value >= 1):
        raise argparse.ArgumentTypeError(f"must be at least 1 byte, got {text!r}")
    return int(value)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def _quality(text: str) -> float:
    try:
        q = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"quality must be a number, got {text!r}") from None
    if not 1 <= q <= 255:
        raise argparse.ArgumentTypeError("quality must be between 1 and 255 (the model's shipped levels: "
                                         "hpcm models)")
    return q


def shipped_quality_range(preset: str) -> tuple[int, int] | None:
    """(lowest, highest) quality of ``preset``'s shipped trained weights; None when none ship."""
    import sys

    io = sys.modules.get("hpcm.models.io")  # honours a relocated WEIGHTS_DIR once loaded
    if io is not None:
        levels = io.bundled_qualities(preset)
    else:
        from hpcm.models.bundled import qualities

        levels = qualities(preset)
    return (levels[0], levels[-1]) if levels else None


def _span_text(span: tuple[int, int]) -> str:
    """``3`` or ``1..5``: a (lowest, highest) range of shipped levels as printed."""
    return f"{span[0]}" if span[0] == span[1] else f"{span[0]}..{span[1]}"


def check_quality(preset: str, quality: float | None) -> None:
    """Refuse a quality outside the range of ``preset``'s shipped levels (no check when none ship)."""
    if quality is None or not float(quality).is_integer():
        return  # a fraction needs a variable-rate model: the loader says so
    span = shipped_quality_range(preset)
    if span and not span[0] <= quality <= span[1]:
        from hpcm.models.io import retired_quality_hint

        raise HPCMError(f"--quality {quality:g}: {preset} ships trained weights for quality "
                        f"{_span_text(span)} (see hpcm models){retired_quality_hint(preset, quality)}")


def _quality_help(default_model: str, fixed_rate: str = "hpcm-tiny") -> str:
    from hpcm.rates import VR_LAMBDAS  # light: the help must not import torch

    span = shipped_quality_range(fixed_rate)
    levels = f"{fixed_rate}: {_span_text(span) if span else 'none shipped'}"
    return (f"rate point: any number in a variable-rate model's range (the default {default_model}: "
            f"1..{len(VR_LAMBDAS)}, e.g. 3.5), or one of a fixed-rate preset's shipped levels ({levels}; "
            "see `hpcm models`); default 3")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" only where there is a default worth saying and the help names none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text:
            return text
        return super()._get_help_string(action)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``compress``, ``decompress``, ``info`` and ``demo`` to the ``hpcm`` command."""
    from hpcm.codec.image_io import ICC_POLICIES, METADATA_POLICIES

    fmt = _HelpFormatter

    p = subparsers.add_parser(
        "compress", help="image -> .hpcm file", formatter_class=fmt,
        description="Compress an image (PNG, JPEG, ...; see README 'Supported image inputs') "
        "into a .hpcm file.",
    )
    p.add_argument("input", metavar="IN", nargs="+",
                   help="input image(s); several are coded one after another with one model load; "
                   "- reads one image from standard input")
    p.add_argument("-o", "--output", metavar="OUT", help="output file (default: IN with suffix .hpcm; "
                   "standard output for input -); - writes to standard output; with several inputs, a "
                   "folder to write IN-name.hpcm files into")
    p.add_argument("--model", default=DEFAULT_MODEL, help="preset name (see `hpcm models`); with a .pth.tar "
                   "checkpoint, the architecture to load it into")
    rate = p.add_mutually_exclusive_group()
    rate.add_argument("--quality", type=_quality, default=None, help=_quality_help(DEFAULT_MODEL))
    rate.add_argument("--max-size", type=_byte_size, default=None, metavar="SIZE",
                      help="the highest quality whose file is at most SIZE bytes (suffixes k, M: 1000s; "
                      "KiB, MiB: 1024s); a search of 4-8 encodes")
    rate.add_argument("--max-bpp", type=_positive_float, default=None, metavar="BPP",
                      help="the highest quality whose file is at most BPP bits per pixel (header included)")
    rate.add_argument("--min-psnr", type=_positive_float, default=None, metavar="DB",
                      help="the lowest quality whose decoded image reaches DB dB (RGB PSNR); a search of "
                      "4-8 encodes and decodes")
    p.add_argument("--checkpoint", metavar="PATH",
                   help=".safetensors weights or official .pth.tar checkpoint")
    p.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    p.add_argument("--verify", action="store_true",
                   help="decode what was written and fail loudly on mismatch (about 2x encode time); also "
                   "stores a checksum of the decoded image that later decodes check")
    p.add_argument("--refine", type=_non_negative_int, default=0, metavar="STEPS",
                   help="optimise the latent for this image with STEPS gradient steps before coding "
                   "(0: off; 60 is a good setting): a better image at about the same size, same decoder; "
                   "each step costs about one decode's synthesis, forward and backward")
    p.add_argument("--device", default="cpu", help="torch device (decode on the same device kind)")
    p.add_argument("--padding", choices=("replicate", "reflect", "zeros"), default="replicate",
                   help="how the image is padded to the model's size multiple")
    p.add_argument("--alpha", choices=("refuse", "drop", "white"), default="refuse",
                   help="images with transparency: refuse, drop the alpha, or composite on white")
    p.add_argument("--icc", choices=ICC_POLICIES, default="auto",
                   help="the image's ICC colour profile: carried to the decoded image with the pixels coded "
                   "as they are (auto: unless it is sRGB, which an untagged image means anyway; keep: "
                   "always; drop: never), or srgb: the pixels converted to sRGB and no profile carried")
    p.add_argument("--metadata", choices=METADATA_POLICIES, default="none",
                   help="the image's EXIF / XMP metadata to carry to the decoded image (none: a note says "
                   "what is left out; EXIF loses its orientation tag, the pixels being upright, and its "
                   "thumbnail)")
    p.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                   help="CPU threads (default: the cores this process may use); recorded in the header for "
                   "information only: the file decodes exactly with any thread count")
    p.set_defaults(func=cmd_compress, fast_exit=True)

    p = subparsers.add_parser(
        "decompress", help=".hpcm file -> image", formatter_class=fmt,
        description="Decompress a .hpcm file. The model is found from the file header (preset and quality); "
        "with --checkpoint, its weights fingerprint must match the header.",
    )
    p.add_argument("input", metavar="IN", nargs="+",
                   help="input .hpcm file(s); - reads one from standard input")
    p.add_argument("-o", "--output", metavar="OUT", help="output image (default: IN with suffix .png; "
                   "standard output for input -); - writes PNG to standard output; with several inputs, a "
                   "folder to write IN-name.png files into")
    p.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    p.add_argument("--checkpoint", metavar="PATH", help="weights the file was written with")
    p.add_argument("--device", default=None, help="torch device (default: cpu; for version-1 files the "
                   "device kind that encoded)")
    p.add_argument("--max-pixels", type=_positive_int, default=MAX_PIXELS, metavar="N",
                   help="refuse files whose image has more pixels than this")
    p.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                   help="CPU threads (default: the cores this process may use); version-1 files use the "
                   "encoder's thread count, capped at N")
    p.add_argument("--allow-cross-device", action="store_true",
                   help="version-1 files only: decode on another device kind than the encoder's (may give a "
                   "wrong image; a verified file detects that). Version-2 files decode exactly anywhere")
    p.set_defaults(func=cmd_decompress, fast_exit=True)

    p = subparsers.add_parser("info", help="show the header of a .hpcm file", formatter_class=fmt,
                              description="Check a .hpcm file (structure and checksum) and print its header.")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info, fast_exit=True)

    p = subparsers.add_parser(
        "demo", help="compress + decompress one Kodak image", formatter_class=fmt,
        description="Compress and decompress one image in memory and print bpp, PSNR and timings.",
    )
    p.add_argument("image", nargs="?", metavar="IMAGE", help=f"image (default: {DEFAULT_DEMO_IMAGE})")
    p.add_argument("--model", default=DEFAULT_MODEL, help="preset name")
    p.add_argument("--quality", type=_quality, default=None, help="rate point (see compress)")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--out-dir", metavar="DIR", help="also write the .hpcm and decoded PNG here")
    p.set_defaults(func=cmd_demo, fast_exit=True)
