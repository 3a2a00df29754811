"""Cost of exact decoding (format v2) against format v1, side by side on the same images and weights.

For each quality of the shipped ``hpcm-tiny`` weights and each Kodak image, the image is coded as a
version-1 file (official μ, no side stream) and a version-2 file (μ on the 2^-5 grid, per-step decision
syndromes in the side stream, latent checksum), alternating which goes first, and both are decoded.
Printed per quality: the side stream's share of the v2 file (mean and max over the images), bpp and PSNR
of both formats (the RD change that the μ grid brings), and the encode/decode time overhead of v2
(sums over the images; each time the best of ``--repeats``).

Run: ``python benchmarks/exact_decoding.py [--images 24] [--qualities 1 2 3 4 5] [--threads 2] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

KODAK = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kodak"


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * math.log10(255.0**2 / mse) if mse else float("inf")


def _best(fn, repeats: int, *args, **kw):
    best, out = math.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn(*args, **kw)
        best = min(best, time.perf_counter() - t0)
    return best, out


class _Clock:
    """Seconds spent in the v2-only work: ConditionalGGM.decisions / write_side / read_side."""

    def __init__(self) -> None:
        from hpcm.entropy.conditional import ConditionalGGM

        self.seconds = 0.0
        for name in ("decisions", "write_side", "read_side"):
            original = getattr(ConditionalGGM, name)

            def timed(*args, _f=original, **kw):
                t0 = time.perf_counter()
                try:
                    return _f(*args, **kw)
                finally:
                    self.seconds += time.perf_counter() - t0

            setattr(ConditionalGGM, name, timed)

    def take(self) -> float:
        s, self.seconds = self.seconds, 0.0
        return s


def run(qualities, n_images: int, repeats: int) -> dict:
    from hpcm.codec import container
    from hpcm.codec.api import decode, encode
    from hpcm.codec.image_io import read_image
    from hpcm.models.io import load_model

    paths = sorted(KODAK.glob("kodim*.png"))[:n_images]
    images = [read_image(p) for p in paths]
    clock = _Clock()
    results = {}
    for q in qualities:
        model = load_model("hpcm-tiny", quality=q)
        model.update()
        rows = []
        for i, image in enumerate(images):
            order = (1, 2) if i % 2 == 0 else (2, 1)
            rec = {}
            for version in order:
                clock.take()
                t_enc, (data, header, _) = _best(encode, repeats, model, image, format_version=version)
                x_enc = clock.take() / repeats
                t_dec, (decoded, _, _) = _best(decode, repeats, data, model)
                x_dec = clock.take() / repeats
                _, streams = container.unpack(data)
                rec[version] = {
                    "extra_enc": x_enc, "extra_dec": x_dec,
                    "bytes": len(data), "side": len(streams[2]) if version == 2 else 0,
                    "enc": t_enc, "dec": t_dec, "psnr": _psnr(decoded, image),
                    "bpp": 8 * len(data) / (image.shape[0] * image.shape[1]),
                }
            rows.append(rec)
            print(f"q{q} {paths[i].name}: " + json.dumps(rec), file=sys.stderr, flush=True)
        share = [r[2]["side"] / r[2]["bytes"] for r in rows]
        res = {
            "side_bytes_mean": float(np.mean([r[2]["side"] for r in rows])),
            "side_share_mean": float(np.mean(share)),
            "side_share_max": float(np.max(share)),
            "side_share_of_total": sum(r[2]["side"] for r in rows) / sum(r[2]["bytes"] for r in rows),
        }
        for v in (1, 2):
            res[f"bpp_v{v}"] = float(np.mean([r[v]["bpp"] for r in rows]))
            res[f"psnr_v{v}"] = float(np.mean([r[v]["psnr"] for r in rows]))
            res[f"enc_s_v{v}"] = float(sum(r[v]["enc"] for r in rows))
            res[f"dec_s_v{v}"] = float(sum(r[v]["dec"] for r in rows))
        res["bpp_change"] = res["bpp_v2"] / res["bpp_v1"] - 1
        res["psnr_change_db"] = res["psnr_v2"] - res["psnr_v1"]
        res["enc_overhead"] = res["enc_s_v2"] / res["enc_s_v1"] - 1
        res["dec_overhead"] = res["dec_s_v2"] / res["dec_s_v1"] - 1
        # the v2-only work (decisions, syndromes, corrections) timed inside the v2 runs
        res["enc_extra_share"] = sum(r[2]["extra_enc"] for r in rows) / res["enc_s_v2"]
        res["dec_extra_share"] = sum(r[2]["extra_dec"] for r in rows) / res["dec_s_v2"]
        results[f"q{q}"] = res
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--qualities", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=1, help="runs per encode/decode; the best is kept")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = run(args.qualities, args.images, args.repeats)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"hpcm-tiny, {args.images} Kodak images, {args.threads} threads")
    print("quality  side B  share mean/max   bpp v1 -> v2 (change)     PSNR v1 -> v2     "
          "enc v2/v1 (v2-only work)  dec v2/v1 (v2-only work)")
    for q, r in results.items():
        share = f"{100 * r['side_share_mean']:5.2f}/{100 * r['side_share_max']:4.2f} %"
        print(f"{q:>7}  {r['side_bytes_mean']:6.1f}  {share}"
              f"  {r['bpp_v1']:.4f} -> {r['bpp_v2']:.4f} ({100 * r['bpp_change']:+.2f} %)"
              f"  {r['psnr_v1']:.3f} -> {r['psnr_v2']:.3f}"
              f"  {100 * r['enc_overhead']:+5.1f} % ({100 * r['enc_extra_share']:.1f} %)"
              f"  {100 * r['dec_overhead']:+5.1f} % ({100 * r['dec_extra_share']:.1f} %)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
