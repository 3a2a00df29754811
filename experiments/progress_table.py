"""Where the default model stands against issue 18's bar, one row per shipped step (Kodak, real files).

Reads the committed ``docs/results/hpcm-small-vr-step<N>-kodak.json`` files (each measured once, after its
weights were chosen on the held-out images) and prints a Markdown table: BD-rate against the published JPEG
anchor, Pillow WebP and Pillow AVIF 4:4:4, the top point, and the gap to WebP at the top point's bpp.

    .venv/bin/python experiments/progress_table.py [--results docs/results]
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ANCHORS = ROOT.parent / "shared" / "anchors"


def webp_psnr_at(bpp: float, webp: dict) -> float:
    """Pillow WebP's PSNR at ``bpp`` (PCHIP in log bpp over its measured points, as ``webp_gap.py``)."""
    from webp_gap import webp_curve

    from hpcm.eval.results import rd_points

    rate, dist = rd_points(webp, "psnr")
    points = [{"bpp": r, "psnr-rgb": d} for r, d in zip(rate, dist, strict=True)]
    return float(webp_curve(points)(math.log(bpp)))


def rows(results: Path) -> list[dict]:
    from hpcm.eval.bdrate import bd_compare
    from hpcm.eval.results import load_results, rd_points

    anchors = {"jpeg": load_results(ANCHORS / "kodak" / "jpeg.json"),
               "pillow-webp": load_results(ANCHORS / "kodak-measured" / "pillow-webp.json"),
               "pillow-avif444": load_results(ANCHORS / "kodak-measured" / "pillow-avif444.json")}
    out = []
    for path in results.glob("hpcm-small-vr-step*-kodak.json"):
        step = int(re.search(r"step(\d+)-kodak", path.name).group(1))
        doc = load_results(path)
        rate, dist = rd_points(doc, "psnr")
        top = max(range(len(rate)), key=lambda i: rate[i])
        row = {"step": step, "points": len(rate), "top_bpp": rate[top], "top_db": dist[top],
               "webp_gap_db": dist[top] - webp_psnr_at(rate[top], anchors["pillow-webp"])}
        for name, anchor in anchors.items():
            row[name] = bd_compare(anchor, doc).bd_rate
        out.append(row)
    return sorted(out, key=lambda r: r["step"])


def markdown(table: list[dict]) -> str:
    lines = ["| step | BD-rate vs JPEG (bar ≤ −45 %) | vs Pillow WebP (bar < 0) | vs Pillow AVIF 4:4:4 | "
             "top point (bar ≥ 35 dB) | WebP − hpcm at the top |",
             "|---|---|---|---|---|---|"]
    for r in table:
        lines.append(f"| {r['step']:,} | {r['jpeg']:+.1f} % | {r['pillow-webp']:+.1f} % | "
                     f"{r['pillow-avif444']:+.1f} % | {r['top_db']:.2f} dB at {r['top_bpp']:.3f} bpp | "
                     f"{-r['webp_gap_db']:.2f} dB |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=ROOT / "docs" / "results")
    args = p.parse_args(argv)
    print(markdown(rows(args.results)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
