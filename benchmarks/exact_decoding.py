"""Cost of exact decoding (format v5, v4, v3 or v2) against format v1, side by side on the same images.

For each quality of the shipped weights (``--model hpcm-tiny``: its shipped levels; a variable-rate model:
1..8) and each Kodak image, the image is coded as a version-1 file (official μ, no side stream) and a file of
each ``--format`` (5 by default; 4, 3 and 2: earlier side streams; several: all of them side by side)
(μ on the 2^-5 grid, per-step decision syndromes in the side stream, latent checksum), rotating which goes
first, and every file is decoded.
Printed per quality: the side stream's share of the file (mean and max over the images), bpp and PSNR
of both formats (the RD change that the μ grid brings), the encode/decode time of the side-stream machinery
timed inside the runs (decisions, syndromes, corrections: the work that only v2-v5 do) as a share of the
encode/decode time, and the side-by-side totals (sums over the images; each time the best of ``--repeats``;
noisy on a shared machine).

Run: ``python benchmarks/exact_decoding.py [--model hpcm-tiny] [--format 5 [4]] [--images 24]
[--qualities 3] [--threads 1] [--json]``.
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
    """Seconds spent in the side-stream machinery: ConditionalGGM.decisions / write_side / read_side and the
    v3 writer's finish (where v3 chooses the widths and computes the syndromes)."""

    def __init__(self) -> None:
        from hpcm.entropy.conditional import ConditionalGGM, SideWriterV3

        self.seconds = 0.0
        for cls, name in ((ConditionalGGM, "decisions"), (ConditionalGGM, "write_side"),
                          (ConditionalGGM, "read_side"), (SideWriterV3, "finish")):
            original = getattr(cls, name)

            def timed(*args, _f=original, **kw):
                t0 = time.perf_counter()
                try:
                    return _f(*args, **kw)
                finally:
                    self.seconds += time.perf_counter() - t0

            setattr(cls, name, timed)

    def take(self) -> float:
        s, self.seconds = self.seconds, 0.0
        return s


def _load(name: str, q: int):
    from hpcm.models.io import is_variable_rate_preset, load_model

    if is_variable_rate_preset(name):  # one model, the quality is a coding argument
        return load_model(name), {"quality": q}
    return load_model(name, quality=q), {}


def run(qualities, n_images: int, repeats: int, model_name: str = "hpcm-tiny",
        fmts: tuple[int, ...] = (4,)) -> dict:
    """{"q<quality>": result} for one format; {"q<quality>/v<format>": result} for several."""
    from hpcm.codec import container
    from hpcm.codec.api import decode, encode
    from hpcm.codec.image_io import read_image
    from hpcm.entropy.conditional import MEAN_TOLERANCE, file_mean_tolerance

    paths = sorted(KODAK.glob("kodim*.png"))[:n_images]
    images = [read_image(p) for p in paths]
    clock = _Clock()
    results = {}
    for q in qualities:
        model, kw = _load(model_name, q)
        model.update()
        rows = []
        for i, image in enumerate(images):
            versions = (1, *fmts)
            order = versions[i % len(versions):] + versions[:i % len(versions)]
            rec = {}
            for version in order:
                clock.take()
                t_enc, (data, header, _) = _best(encode, repeats, model, image, format_version=version, **kw)
                x_enc = clock.take() / repeats
                t_dec, (decoded, _, _) = _best(decode, repeats, data, model)
                x_dec = clock.take() / repeats
                _, streams = container.unpack(data)
                rec[version] = {
                    "extra_enc": x_enc, "extra_dec": x_dec,
                    "bytes": len(data), "side": len(streams[2]) if version >= 2 else 0,
                    "enc": t_enc, "dec": t_dec, "psnr": _psnr(decoded, image),
                    "bpp": 8 * len(data) / (image.shape[0] * image.shape[1]),
                    # the file's μ band as a multiple of δ_μ = 3e-5 (format 5 chooses it per file)
                    "mu_band": (file_mean_tolerance(streams[2], version) / MEAN_TOLERANCE
                                if version >= 3 else None),
                }
            rows.append(rec)
            print(f"q{q} {paths[i].name}: " + json.dumps(rec), file=sys.stderr, flush=True)
        for fmt in fmts:
            share = [r[fmt]["side"] / r[fmt]["bytes"] for r in rows]
            res = {
                "format": fmt,
                "side_bytes_mean": float(np.mean([r[fmt]["side"] for r in rows])),
                "side_share_mean": float(np.mean(share)),
                "side_share_max": float(np.max(share)),
                "side_share_of_total": sum(r[fmt]["side"] for r in rows) / sum(r[fmt]["bytes"] for r in rows),
                "mu_band_counts": {f"{b:g}x": sum(r[fmt]["mu_band"] == b for r in rows)
                                   for b in sorted({r[fmt]["mu_band"] for r in rows} - {None})},
            }
            for v in (1, fmt):
                res[f"bpp_v{v}"] = float(np.mean([r[v]["bpp"] for r in rows]))
                res[f"psnr_v{v}"] = float(np.mean([r[v]["psnr"] for r in rows]))
                res[f"enc_s_v{v}"] = float(sum(r[v]["enc"] for r in rows))
                res[f"dec_s_v{v}"] = float(sum(r[v]["dec"] for r in rows))
            new = f"v{fmt}"
            res["bpp_change"] = res[f"bpp_{new}"] / res["bpp_v1"] - 1
            res["psnr_change_db"] = res[f"psnr_{new}"] - res["psnr_v1"]
            res["enc_overhead"] = res[f"enc_s_{new}"] / res["enc_s_v1"] - 1
            res["dec_overhead"] = res[f"dec_s_{new}"] / res["dec_s_v1"] - 1
            # the side-stream machinery (decisions, syndromes, corrections) timed inside the v2-v4 runs
            res["enc_extra_share"] = sum(r[fmt]["extra_enc"] for r in rows) / res[f"enc_s_{new}"]
            res["dec_extra_share"] = sum(r[fmt]["extra_dec"] for r in rows) / res[f"dec_s_{new}"]
            results[f"q{q}" if len(fmts) == 1 else f"q{q}/v{fmt}"] = res
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="hpcm-tiny", choices=["hpcm-tiny", "hpcm-tiny-vr", "hpcm-small-vr"])
    ap.add_argument("--format", type=int, nargs="+", default=[5], choices=[2, 3, 4, 5],
                    help="format(s) of the exact-decoding files")
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--qualities", type=int, nargs="+", help="default: every shipped quality")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=1, help="runs per encode/decode; the best is kept")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from hpcm.models.io import bundled_qualities, is_variable_rate_preset

    qualities = args.qualities or (list(range(1, 9)) if is_variable_rate_preset(args.model)
                                   else bundled_qualities(args.model))
    results = run(qualities, args.images, args.repeats, args.model, tuple(args.format))
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    formats = "/".join(map(str, args.format))
    print(f"{args.model}, {args.images} Kodak images, {args.threads} threads, format {formats} vs 1; "
          "targets: side stream <= 0.3 % of the file, side-stream machinery <= 5 % of encode/decode time")
    print("quality  side B  share mean/max   bpp v1 -> vN (change)     PSNR v1 -> vN     "
          "enc machinery (vN/v1 total)  dec machinery (vN/v1 total)")
    for q, r in results.items():
        v = f"v{r['format']}"
        share = f"{100 * r['side_share_mean']:5.3f}/{100 * r['side_share_max']:4.2f} %"
        print(f"{q:>7}  {r['side_bytes_mean']:6.1f}  {share}"
              f"  {r['bpp_v1']:.4f} -> {r['bpp_' + v]:.4f} ({100 * r['bpp_change']:+.2f} %)"
              f"  {r['psnr_v1']:.3f} -> {r['psnr_' + v]:.3f}"
              f"  {100 * r['enc_extra_share']:5.2f} % ({100 * r['enc_overhead']:+5.1f} %)"
              f"  {100 * r['dec_extra_share']:5.2f} % ({100 * r['dec_overhead']:+5.1f} %)"
              + (f"  μ band {r['mu_band_counts']}" if r["mu_band_counts"] else ""))
    met = all(r["side_share_mean"] <= 0.003 and r["enc_extra_share"] <= 0.05 and r["dec_extra_share"] <= 0.05
              for r in results.values())
    print("targets met at every quality" if met else "TARGETS MISSED")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
