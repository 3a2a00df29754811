"""Latent refinement on a Kodak subset: refined vs plain hpcm, and both vs Pillow anchors on the same images.

    .venv/bin/hpcm eval hpcm-small-vr ../shared/data/kodak -q 2 4 6 8 --limit 6 -o plain.json
    .venv/bin/hpcm eval hpcm-small-vr ../shared/data/kodak -q 2 4 6 8 --limit 6 --refine 60 -o refined.json
    .venv/bin/python experiments/refine_compare.py --plain plain.json --refined refined.json

Several JSON files per side are merged (e.g. two halves of a subset run side by side). Curves are means over
the images present in every point of both sides; the anchors (``../shared/anchors/kodak-measured/
per-image.json``) are averaged over the same images. BD-rate with pchip (hpcm.eval.bdrate).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from hpcm.eval.bdrate import bd_curves

ANCHORS = Path(__file__).resolve().parents[2] / "shared" / "anchors" / "kodak-measured" / "per-image.json"


def per_image(paths: list[str]) -> dict[float, dict[str, tuple[float, float]]]:
    points: dict[float, dict[str, tuple[float, float]]] = {}
    for path in paths:
        for r in json.loads(Path(path).read_text())["per_image"]:
            res = r["results"]
            points.setdefault(float(r["quality"]), {})[r["source"]] = (res["bpp"], res["psnr-rgb"])
    return points


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--plain", nargs="+", required=True)
    p.add_argument("--refined", nargs="+", required=True)
    p.add_argument("--anchors", default=str(ANCHORS))
    args = p.parse_args(argv)
    plain, refined = per_image(args.plain), per_image(args.refined)
    qs = sorted(set(plain) & set(refined))
    images = sorted(set.intersection(*[set(side[q]) for side in (plain, refined) for q in qs]))
    print(f"{len(images)} images ({', '.join(images)}); qualities {', '.join(f'{q:g}' for q in qs)}")

    def curve(points: dict) -> tuple[list[float], list[float]]:
        return ([float(np.mean([points[q][i][0] for i in images])) for q in qs],
                [float(np.mean([points[q][i][1] for i in images])) for q in qs])

    (rp, dp), (rr, dr) = curve(plain), curve(refined)
    print("| quality | plain bpp | plain dB | refined bpp | refined dB | Δ bpp | Δ dB |")
    print("|---|---|---|---|---|---|---|")
    for q, a, b, c, e in zip(qs, rp, dp, rr, dr, strict=True):
        print(f"| {q:g} | {a:.4f} | {b:.2f} | {c:.4f} | {e:.2f} | {100 * (c / a - 1):+.2f} % "
              f"| {e - b:+.3f} |")
    rate, dist, overlap, _ = bd_curves(rp, dp, rr, dr)
    print(f"refined vs plain: BD-rate {rate:+.2f} %, BD-PSNR {dist:+.3f} dB "
          f"(overlap {overlap[0]:.2f}-{overlap[1]:.2f} dB)")
    anchors = json.loads(Path(args.anchors).read_text())
    for name in ("pillow-jpeg420", "pillow-webp", "pillow-avif444"):
        table = anchors[name]
        n = len(table[images[0] + ".png"])
        ra = [float(np.mean([table[i + ".png"][k]["bpp"] for i in images])) for k in range(n)]
        da = [float(np.mean([table[i + ".png"][k]["psnr-rgb"] for i in images])) for k in range(n)]
        print(f"vs {name} (same images): plain {bd_curves(ra, da, rp, dp)[0]:+.2f} %, "
              f"refined {bd_curves(ra, da, rr, dr)[0]:+.2f} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
