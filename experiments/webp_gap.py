"""Per Kodak image: hpcm's PSNR minus Pillow WebP's at the same bpp, at a few qualities (issue 18's top end).

WebP's PSNR at hpcm's bpp is a PCHIP interpolation in log bpp of the image's own measured WebP curve
(``../shared/anchors/kodak-measured/per-image.json``). Images are listed from the largest gap at the top
quality; the correlation of that gap with the image's bpp says whether busy images (more bits) lose more.

    .venv/bin/python experiments/webp_gap.py docs/results/hpcm-small-vr-step16343-kodak.json [--qualities 1 8]

``--ycbcr kodim02 kodim13 ...`` also codes those images live (the default model at the lowest quality
given, and Pillow WebP, method 6, at the largest quality whose file is no larger) and splits each PSNR into
Y, Cb and Cr (BT.601 full range): which component the gap is in; and into the 8-pixel frame along the image
edges and the inside (Kodak's scans carry artifact lines in their first and last rows).
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


def _ycbcr(rgb: np.ndarray) -> np.ndarray:
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    return np.stack([0.299 * r + 0.587 * g + 0.114 * b,
                     128 - 0.168736 * r - 0.331264 * g + 0.5 * b,
                     128 + 0.5 * r - 0.418688 * g - 0.081312 * b], -1)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0**2 / np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


def _webp_within(image: np.ndarray, max_bytes: int) -> bytes:
    """Pillow WebP (method 6) at the largest quality whose file has at most ``max_bytes``."""
    import io

    from PIL import Image

    best = b""
    for quality in range(101):
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, "WEBP", quality=quality, method=6)
        if len(buf.getvalue()) > max_bytes:
            break
        best = buf.getvalue()
    return best


def ycbcr_split(images: list[str], quality: float) -> None:
    """Print hpcm's and WebP's PSNR per Y / Cb / Cr at (about) equal bytes for each Kodak image."""
    import io

    from PIL import Image

    from hpcm.codec.api import compress_image, decompress_image
    from hpcm.models.io import load_model

    model = load_model("hpcm-small-vr")
    kodak = ROOT.parent / "shared" / "data" / "kodak"
    print(f"\n| image (q{quality:g}) | hpcm bpp | hpcm RGB / Y / Cb / Cr (dB) | inside / frame share | "
          "WebP bpp | WebP RGB / Y / Cb / Cr (dB) | inside / frame share |")
    print("|---|---|---|---|---|---|---|")
    for name in images:
        image = np.asarray(Image.open(kodak / f"{name}.png").convert("RGB"))
        pixels = image.shape[0] * image.shape[1]
        data = compress_image(model, image, quality=quality)
        webp = _webp_within(image, len(data))
        cells = []
        for size, decoded in ((len(data), decompress_image(data, model)),
                              (len(webp), np.asarray(Image.open(io.BytesIO(webp)).convert("RGB")))):
            ref, dec = _ycbcr(image), _ycbcr(decoded)
            parts = [_psnr(image, decoded)] + [_psnr(ref[..., c], dec[..., c]) for c in range(3)]
            error = ((decoded.astype(np.float64) - image) ** 2).mean(-1)
            frame = np.zeros(error.shape, bool)
            frame[:8], frame[-8:], frame[:, :8], frame[:, -8:] = True, True, True, True
            inside = 10 * np.log10(255.0**2 / error[~frame].mean())
            cells += [f"{8 * size / pixels:.3f}", " / ".join(f"{v:.2f}" for v in parts),
                      f"{inside:.2f} dB / {100 * error[frame].sum() / error.sum():.0f} % of the error"]
        print(f"| {name} | " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("kodak", type=Path, help="an hpcm eval JSON with per_image results")
    p.add_argument("--qualities", type=float, nargs="+", default=[1, 4, 8])
    p.add_argument("--ycbcr", nargs="+", metavar="IMAGE", default=[],
                   help="Kodak images (e.g. kodim02) to code live and split into Y / Cb / Cr")
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
    if args.ycbcr:
        ycbcr_split(args.ycbcr, min(args.qualities))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
