"""``hpcm eval | bench-codec | plot | bdrate | profile``: measurement commands (thin layer over hpcm.eval)."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from hpcm.cli.codec import _non_negative_int
from hpcm.errors import HPCMError

# Kept here (not imported) so that building the parser stays cheap; tests check them against hpcm.eval.
CODECS = ("jpeg", "webp", "avif", "jpeg2000", "heic")
METHODS = ("pchip", "cubic", "akima")
DEFAULT_ANCHORS = Path(__file__).resolve().parents[3].parent / "shared" / "anchors" / "kodak"


def _note(msg: str) -> None:
    print(f"hpcm: {msg}", file=sys.stderr, flush=True)


def _emit(doc: dict, output: str | None) -> None:
    from hpcm.eval.results import save_results

    if output:
        path = save_results(doc, output)
        _note(f"wrote {path}")
    else:
        summary = {k: v for k, v in doc.items() if k != "per_image"}
        print(json.dumps(summary, indent=2))


def _summary(doc: dict) -> None:
    res = doc["results"]
    for i, q in enumerate(doc.get("quality") or [None] * len(res["bpp"])):
        _note(f"{doc['name']} q={q}: {res['bpp'][i]:.4f} bpp, {res['psnr-rgb'][i]:.3f} dB PSNR, "
              f"MS-SSIM {res['ms-ssim-rgb'][i]:.4f}, enc {res['encoding_time'][i]:.3f}s, "
              f"dec {res['decoding_time'][i]:.3f}s")


def _qualities(text: list[str] | None) -> list[float] | None:
    if not text:
        return None
    out: list[float] = []
    for item in text:
        for part in item.split(","):
            if part.strip():
                try:
                    v = float(part)
                except ValueError:
                    raise HPCMError(f"quality {part!r} is not a number (-q takes every word after it: "
                                    "put it after the positional arguments)") from None
                out.append(int(v) if v.is_integer() else v)
    return out


# ---------------------------------------------------------------- eval
def _cmd_eval(args: argparse.Namespace) -> int:
    from hpcm.eval.runner import evaluate

    qualities = _qualities(args.quality)
    *specs, dataset = args.inputs
    if not specs:
        raise HPCMError("eval needs at least one MODEL_OR_CHECKPOINT before DATASET_DIR")
    if not Path(dataset).exists():
        raise HPCMError(f"no such data set: {dataset}")
    if args.refine and args.estimate:
        raise HPCMError("--refine needs real coding: leave out --estimate")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        doc = evaluate(specs, dataset, qualities=qualities or None,
                       estimate=args.estimate, device=args.device, limit=args.limit, name=args.name,
                       show_progress=None if not args.quiet else False, refine_steps=args.refine)
    for w in caught:
        if "untrained" in str(w.message):
            _note(f"warning: {w.message}: bpp and quality are meaningless")
    _summary(doc)
    _emit(doc, args.output)
    return 0


# ---------------------------------------------------------------- bench-codec
def _cmd_bench(args: argparse.Namespace) -> int:
    from hpcm.eval.classical import ClassicalCodec, bench_codec

    try:
        codec = ClassicalCodec(args.codec, chroma=args.chroma or "", tune=args.tune)
    except ValueError as exc:
        raise HPCMError(str(exc)) from exc
    if args.codec == "heic":
        try:
            import pillow_heif  # noqa: F401
        except ImportError as exc:
            raise HPCMError("heic needs pillow-heif (pip install 'hpcm[heif]')") from exc
    doc = bench_codec(codec, args.dataset, _qualities(args.qualities), limit=args.limit,
                      show_progress=None if not args.quiet else False)
    _summary(doc)
    _emit(doc, args.output)
    return 0


# ---------------------------------------------------------------- plot
def _cmd_plot(args: argparse.Namespace) -> int:
    from hpcm.eval.plot import anchors_apply, load_anchors, plot_rd
    from hpcm.eval.results import load_results

    docs = [_load_doc(p, load_results) for p in args.results]
    anchors = []
    if not args.no_anchors:
        folder = Path(args.anchors) if args.anchors else DEFAULT_ANCHORS
        if folder.is_dir():
            # an anchors folder holds the results of one data set, named by the folder (anchors/kodak)
            draw, why = anchors_apply(docs, args.anchors_dataset or folder.name)
            if why:
                _note(why)
            anchors = load_anchors(folder, args.select or None) if draw else []
        elif args.anchors:
            raise HPCMError(f"no such anchors folder: {folder}")
    out, notes = plot_rd(docs, args.output, metric=args.metric, anchors=anchors, title=args.title,
                         max_bpp=args.max_bpp)
    for n in notes:
        _note(f"skipped {n}")
    _note(f"wrote {out} ({len(docs)} result file(s), {len(anchors)} anchor(s))")
    return 0


def _load_doc(path: str, loader):
    try:
        return loader(path)
    except FileNotFoundError as exc:
        raise HPCMError(f"no such results file: {path}") from exc
    except (ValueError, KeyError) as exc:
        raise HPCMError(f"{path}: not a CompressAI-schema results file ({exc})") from exc


# ---------------------------------------------------------------- bdrate
def _cmd_bdrate(args: argparse.Namespace) -> int:
    from hpcm.eval.bdrate import bd_compare, format_table
    from hpcm.eval.results import load_results, select_points

    anchor = _load_doc(args.anchor, load_results)
    rows = []
    for path in args.tests:
        test = _load_doc(path, load_results)
        try:
            if args.quality:
                test = select_points(test, args.quality.split(","))
            rows.append(bd_compare(anchor, test, metric=args.metric, method=args.method))
        except (KeyError, ValueError) as exc:
            raise HPCMError(f"{path}: {exc}") from exc
    print(format_table(rows))
    if args.json:
        print(json.dumps([r.__dict__ for r in rows], indent=2))
    return 0


# ---------------------------------------------------------------- profile
def _cmd_profile(args: argparse.Namespace) -> int:
    import hpcm
    from hpcm.eval.profile import markdown_table, parse_sizes, profile_model, write_report

    try:
        sizes = parse_sizes(args.sizes)
    except ValueError as exc:
        raise HPCMError(str(exc)) from exc
    known = hpcm.list_models()
    names = list(known) if args.models == ["all"] else args.models
    unknown = [n for n in names if n not in known]
    if unknown:
        raise HPCMError(f"unknown model(s) {', '.join(unknown)}; registered: {', '.join(known)}")
    rows = []
    for name in names:
        rows += profile_model(name, sizes, device=args.device, repeat=args.repeat, codec=not args.no_codec,
                              log=_note)
    print(markdown_table(rows))
    if args.output:
        paths = write_report(rows, args.output, device=args.device, repeat=args.repeat)
        _note("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


# ---------------------------------------------------------------- registration
def register(subparsers: argparse._SubParsersAction) -> None:
    """Add eval, bench-codec, plot, bdrate and profile to the ``hpcm`` command."""
    p = subparsers.add_parser(
        "eval", help="evaluate models on an image folder (CompressAI eval_model JSON)",
        description="Compress and decompress every image with each model / quality; bpp from the file "
                    "bytes, PSNR on 8-bit values, MS-SSIM (pytorch_msssim, data_range=1, also in dB).")
    p.add_argument("inputs", nargs="+", metavar="MODEL_OR_CHECKPOINT… DATASET_DIR",
                   help="preset names or .safetensors / .pth.tar weights, then the image folder")
    p.add_argument("-o", "--output", help="results JSON (default: print the averages to stdout)")
    p.add_argument("-q", "--quality", nargs="+",
                   help="quality levels (bundled weights), e.g. 1 2 3 or 1,2,3; variable-rate "
                   "models take any number in their range, e.g. 1 2.5 4 8")
    p.add_argument("--estimate", action="store_true",
                   help="likelihood bpp from the eval forward instead of real coding")
    p.add_argument("--refine", type=_non_negative_int, default=0, metavar="STEPS",
                   help="the encoder refines each latent with STEPS gradient steps (hpcm compress --refine)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--limit", type=int, help="only the first N images")
    p.add_argument("--name", help="curve name (default: the preset)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_eval)

    p = subparsers.add_parser(
        "bench-codec", help="classical codec anchors through Pillow / pillow-heif (same JSON schema)",
        description="jpeg (4:2:0 default, --chroma 444), webp (4:2:0 only), avif (4:4:4 default, --chroma "
                    "420), jpeg2000 (quality = target bpp), heic (x265 4:4:4 default, --tune psnr).")
    p.add_argument("codec", choices=CODECS)
    p.add_argument("dataset", metavar="DATASET_DIR")
    p.add_argument("-q", "--qualities", nargs="+", help="qualities (default: the measured anchors' set)")
    p.add_argument("--chroma", choices=("420", "444"), help="chroma subsampling where the codec has a choice")
    p.add_argument("--tune", choices=("psnr", "ssim"), help="x265 tune (heic only)")
    p.add_argument("-o", "--output", help="results JSON")
    p.add_argument("--limit", type=int, help="only the first N images")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_bench)

    p = subparsers.add_parser("plot", help="RD curves of results JSONs (with published anchors)")
    p.add_argument("results", nargs="+", metavar="RESULTS.json")
    p.add_argument("-o", "--output", default="rd.png")
    p.add_argument("-m", "--metric", choices=("psnr", "ms-ssim", "both"), default="psnr")
    p.add_argument("--anchors", help=f"folder of anchor JSONs (default {DEFAULT_ANCHORS} when present)")
    p.add_argument("--select", nargs="+", metavar="PATTERN",
                   help="anchor file stems to draw (shell patterns, e.g. jpeg vtm 'compressai-*')")
    p.add_argument("--anchors-dataset", metavar="NAME",
                   help="data set the anchors were measured on (default: the anchors folder's name); they "
                   "are drawn only under results from it (results name theirs in meta.dataset)")
    p.add_argument("--no-anchors", action="store_true")
    p.add_argument("-t", "--title")
    p.add_argument("--max-bpp", type=float, help="end of the bpp axis (default 1.3× the results' max)")
    p.set_defaults(func=_cmd_plot)

    p = subparsers.add_parser("bdrate", help="BD-rate / BD-PSNR of results against an anchor")
    p.add_argument("anchor", metavar="ANCHOR.json")
    p.add_argument("tests", nargs="+", metavar="TEST.json")
    p.add_argument("-m", "--metric", choices=("psnr", "ms-ssim"), default="psnr")
    p.add_argument("--method", choices=METHODS, default="pchip",
                   help="interpolation (pchip default; cubic = classic VCEG-M33 polynomial)")
    p.add_argument("--json", action="store_true", help="also print the numbers as JSON")
    p.add_argument("-q", "--quality", metavar="Q[,Q...]",
                   help="use only the TEST points with these quality labels, e.g. 2,3,4,5 (BD-rate depends "
                   "on the overlapping rate range, so adding or dropping a level moves it)")
    p.set_defaults(func=_cmd_bdrate)

    p = subparsers.add_parser(
        "profile", help="params, kMACs/pixel, latency and peak memory per model and size",
        description="MODEL names are registered presets (hpcm models), or 'all'.")
    p.add_argument("models", nargs="+", metavar="MODEL")
    p.add_argument("--sizes", default="256,512,768x512", help="comma list of N or WxH (default %(default)s)")
    p.add_argument("-o", "--output", metavar="DIR", help="write profile.json, profile.md, latency.png")
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeat", type=int, default=3, help="timed runs after one warm-up (median reported)")
    p.add_argument("--no-codec", action="store_true", help="forward only (no compress / decompress)")
    p.set_defaults(func=_cmd_profile)
