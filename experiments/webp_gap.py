"""Per Kodak image: hpcm's PSNR minus Pillow WebP's at the same bpp, at a few qualities (issue 18's top end).

WebP's PSNR at hpcm's bpp is a PCHIP interpolation in log bpp of the image's own measured WebP curve
(``../shared/anchors/kodak-measured/per-image.json``). Images are listed from the largest gap at the top
quality; the correlation of that gap with the image's bpp says whether busy images (more bits) lose more.

    .venv/bin/python experiments/webp_gap.py docs/results/hpcm-small-vr-step16343-kodak.json [--qualities 1 8]
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PER_IMAGE = ROOT.parent / "shared" / "anchors" / "kodak-measured" / "per-image.json"


def webp_curve(points: list[dict]):
    """PSNR as a function of log bpp through the image's WebP points (non-increasing ones dropped)."""
    from scipy.interpolate import PchipInterpolator

    xs, ys = [], []
    for r in sorted(points, key=lambda r: r["bpp"]):
        if not ys or r["psnr-rgb"] > ys[-1]:
            xs.append(math.log(r["bpp"]))
            ys.append(r["psnr-rgb"])
    return PchipInterpolator(xs, ys)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("kodak", type=Path, help="an hpcm eval JSON with per_image results")
    p.add_argument("--qualities", type=float, nargs="+", default=[1, 4, 8])
    args = p.parse_args(argv)
    doc = json.loads(args.kodak.read_text())
    webp = json.loads(PER_IMAGE.read_text())["pillow-webp"]
    per = defaultdict(dict)
    for r in doc["per_image"]:
        per[r["source"]][float(r["quality"])] = r["results"]
    top = max(args.qualities)
    rows = []
    for image, by_q in per.items():
        curve = webp_curve(webp[f"{image}.png"])
        gaps = [by_q[q]["psnr-rgb"] - float(curve(math.log(by_q[q]["bpp"]))) for q in args.qualities]
        rows.append((image, by_q[top]["bpp"], by_q[top]["psnr-rgb"], gaps))
    rows.sort(key=lambda r: r[3][-1])
    heads = " | ".join(f"q{q:g}" for q in args.qualities)
    print(f"| image | q{top:g} bpp | q{top:g} dB | hpcm − WebP at {heads} (dB) |")
    print("|---|---|---|" + "---|" * len(args.qualities))
    for image, bpp, db, gaps in rows:
        print(f"| {image} | {bpp:.3f} | {db:.2f} | " + " | ".join(f"{g:+.2f}" for g in gaps) + " |")
    gaps = np.array([r[3] for r in rows])
    bpps = np.array([r[1] for r in rows])
    print("| mean | | | " + " | ".join(f"{g:+.2f}" for g in gaps.mean(0)) + " |")
    corr = np.corrcoef(bpps, gaps[:, -1])[0, 1]
    print(f"\ncorrelation of the q{top:g} gap with the image's q{top:g} bpp: {corr:+.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
