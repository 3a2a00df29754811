"""``hpcm compare``: an image coded by hpcm, WebP, AVIF and JPEG at (nearly) equal bpp, side by side."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from hpcm.errors import HPCMError
from hpcm.models.bundled import DEFAULT_MODEL

CLASSICAL_DEFAULT = ("webp", "avif", "jpeg")


def _crop(text: str) -> tuple[int, int, int, int]:
    try:
        x, y, w, h = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"crop must be X,Y,W,H, got {text!r}") from None
    if x < 0 or y < 0 or w < 1 or h < 1:
        raise argparse.ArgumentTypeError(f"crop must be X,Y,W,H with W, H >= 1, got {text!r}")
    return x, y, w, h


def cmd_compare(args: argparse.Namespace) -> int:
    from hpcm.cli.codec import _load
    from hpcm.codec.api import decode, encode
    from hpcm.codec.atomic import check_output_path
    from hpcm.codec.image_io import read_image_with_notes, write_image
    from hpcm.eval import compare as C
    from hpcm.eval.classical import ClassicalCodec

    if not args.bpp > 0:
        raise HPCMError(f"--bpp must be positive, got {args.bpp}")
    src = Path(args.image)
    out = Path(args.output) if args.output else src.with_name(f"{src.stem}.compare-{args.bpp:g}bpp.png")
    check_output_path(out, overwrite=args.force)
    image, _ = read_image_with_notes(src, alpha="refuse")
    h, w = image.shape[:2]
    crop = args.crop or C.default_crop(h, w)
    if crop[0] + crop[2] > w or crop[1] + crop[3] > h:
        raise HPCMError(f"crop {crop} does not fit the {w}x{h} image")
    from hpcm.models.io import bundled_qualities

    models = {None: _load(args.model, quality=None, device="cpu")[0]}
    vr = getattr(models[None], "variable_rate", False)
    shipped = [] if vr else bundled_qualities(args.model)
    levels = [float(q) for q in shipped] if shipped else C.hpcm_levels(models[None])

    def model_for(q: float):  # a fixed-rate preset: one shipped weights file per quality
        key = None if vr or not shipped else int(q)
        if key not in models:
            models[key] = _load(args.model, quality=key, device="cpu")[0]
        return models[key]

    def hpcm_encode(q: float) -> bytes:
        return encode(model_for(q), image, quality=q if vr else None)[0]

    def hpcm_decode(data: bytes) -> np.ndarray:
        from hpcm.codec.container import unpack

        header, _ = unpack(data)
        return decode(data, model_for(header.quality))[0]

    results = [C.code_image(f"hpcm {args.model}", image, hpcm_encode, hpcm_decode, levels, args.bpp)]
    for name in args.codecs:
        codec = ClassicalCodec(name)
        results.append(C.code_image(codec.name, image, lambda q, c=codec: c.encode(image, q), codec.decode,
                                    C.classical_levels(name), args.bpp))
    for r in results:
        print(f"{r.label:<22} quality {r.quality:<6g} {r.size:>8} bytes  {r.bpp:.4f} bpp  {r.psnr:.2f} dB")
    write_image(out, C.side_by_side(image, results, crop, args.scale), overwrite=args.force)
    print(f"wrote {out} (crop x={crop[0]} y={crop[1]} {crop[2]}x{crop[3]}, scale {args.scale})",
          file=sys.stderr)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``compare`` to the ``hpcm`` command."""
    p = subparsers.add_parser(
        "compare", help="an image coded by hpcm and classical codecs at equal bpp, side by side (PNG)",
        description="Code IMAGE with an hpcm model and with classical codecs, each at the setting whose file "
        "comes closest to --bpp (file bytes, headers included), and write one PNG with the same crop of the "
        "original and of every decoded image, captioned with codec, bpp and PSNR.")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("--bpp", type=float, required=True, help="target bits per pixel, e.g. 0.3")
    p.add_argument("-o", "--output", metavar="OUT.png", help="default: IMAGE.compare-<bpp>bpp.png beside it")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help="hpcm preset or weights (a variable-rate model lands closest to the bpp)")
    p.add_argument("--codecs", nargs="+", default=list(CLASSICAL_DEFAULT),
                   choices=("jpeg", "webp", "avif", "jpeg2000", "heic"), help="classical codecs to show")
    p.add_argument("--crop", type=_crop, metavar="X,Y,W,H", help="region shown (default: centred 256x256)")
    p.add_argument("--scale", type=int, default=2, help="pixel enlargement of the crops (default 2)")
    p.add_argument("--force", action="store_true", help="overwrite OUT")
    p.set_defaults(func=cmd_compare, fast_exit=True)
