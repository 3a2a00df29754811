"""Training-side validation of a variable-rate model against shipped weights (never Kodak).

Both are measured on the same held-out training images (``hpcm.train.trainer.split_holdout`` of
``../shared/data/train``, the images ``hpcm train --val-holdout N`` validates on): likelihood bpp and 8-bit
PSNR per quality, then the BD-rate of the variable-rate model against the shipped curve over their overlap.
The baseline is the shipped default model unless ``--baseline`` names another preset or weights file.
This is the rule for replacing shipped weights: better here, chosen without looking at Kodak.

    .venv/bin/python experiments/holdout_compare.py runs/tiny-vr.safetensors [--holdout 16] [-o out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def measure(model, images, quality: float | None) -> dict[str, float]:
    from hpcm.train.loss import RateDistortionLoss
    from hpcm.train.trainer import evaluate

    lmbda = (model.weights_info or {}).get("lambda") or 0.01  # only the loss column depends on it
    return evaluate(model, images, RateDistortionLoss(lmbda), device=torch.device("cpu"), quality=quality)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("weights", help="exported variable-rate weights (.safetensors)")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "train"))
    p.add_argument("--holdout", type=int, default=16)
    p.add_argument("--baseline", default="hpcm-small-vr",
                   help="what to compare with (default: the shipped default model): a shipped fixed-rate "
                   "preset (its bundled qualities) or a variable-rate preset / weights file (qualities 1..8)")
    p.add_argument("--baseline-json", metavar="FILE",
                   help="reuse the baseline curve of an earlier output of this script (same held-out images) "
                   "instead of measuring it again")
    p.add_argument("-o", "--output", help="JSON with every point")
    args = p.parse_args(argv)
    from hpcm.eval.bdrate import bd_curves
    from hpcm.models.io import bundled_qualities, load_model
    from hpcm.train.data import ValidationImages, find_images
    from hpcm.train.trainer import split_holdout

    _, held = split_holdout(find_images([args.data]), args.holdout)
    images = ValidationImages(held)
    def curve(name: str, points) -> dict:
        """points: (quality, model, quality argument) -> {quality: measurement}, printed as it goes."""
        out = {}
        for q, model, quality in points:
            out[q] = r = measure(model, images, quality)
            print(f"{name} q{q}: {r['bpp']:.4f} bpp {r['psnr']:.2f} dB", flush=True)
        return out

    def variable_rate(spec: str):
        model = load_model(spec)
        lo, hi = model.quality_gains.quality_range
        return ((q, model, float(q)) for q in range(int(lo), int(hi) + 1))

    try:
        fixed = bundled_qualities(args.baseline)
    except (KeyError, ValueError, OSError):
        fixed = []
    if args.baseline_json:
        earlier = json.loads(Path(args.baseline_json).read_text())
        if earlier["holdout"] != [str(h) for h in held]:
            raise SystemExit(f"{args.baseline_json} was measured on other held-out images")
        shipped = earlier["shipped"]
    elif fixed:
        shipped = curve(args.baseline, ((q, load_model(args.baseline, quality=q), None) for q in fixed))
    else:
        shipped = curve(Path(args.baseline).stem, variable_rate(args.baseline))
    vr = curve(Path(args.weights).stem, variable_rate(args.weights))
    rate, dist, span, _ = bd_curves(
        [r["bpp"] for r in shipped.values()], [r["psnr"] for r in shipped.values()],
        [r["bpp"] for r in vr.values()], [r["psnr"] for r in vr.values()],
    )
    print(f"BD-rate of {Path(args.weights).name} vs shipped {args.baseline} on {len(images)} held-out "
          f"training images: {rate:+.2f} % (BD-PSNR {dist:+.3f} dB, overlap {span[0]:.2f}-{span[1]:.2f} dB)")
    if args.output:
        Path(args.output).write_text(json.dumps({"holdout": [str(h) for h in held], "shipped": shipped,
                                                 "variable_rate": vr, "bd_rate": rate, "bd_psnr": dist,
                                                 "overlap_db": list(span)}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
