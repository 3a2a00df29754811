"""What a wider μ band costs in side-stream bytes (docs/determinism.md "Format 5").

Each Kodak image is encoded once per quality with the shipped hpcm-small-vr (format 5); the encoder's
per-step decisions are kept and the side stream's size is computed for δ_μ = 3e-5·2^e, e = 0..4 (the
width offset chosen per band as the encoder does; 2 bits of band field included; e = 4 is beyond what the
format can declare, printed to show the trend). Prints the mean side-stream bytes and share of the file per
band, and which band the format-5 rule picks. Run: ``python experiments/mu_band_cost.py [--qualities 1 8]
[--images 24] [-o OUT.json]`` (~3 s per image and quality on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch

KODAK = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kodak"
BANDS = range(5)


def main(argv: list[str] | None = None) -> int:
    from hpcm.codec.api import pad_image
    from hpcm.codec.image_io import read_image
    from hpcm.entropy import conditional as C
    from hpcm.models.io import load_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="hpcm-small-vr")
    ap.add_argument("--qualities", type=float, nargs="+", default=[1.0, 8.0])
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("-o", "--out", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    model = load_model(args.model).eval()
    kept: list = []

    class Keep(C.SideWriterV3):
        def finish(self, coded_bytes: int = 0) -> bytes:
            kept.append((self, coded_bytes))
            return super().finish(coded_bytes)

    em = model.entropy_estimation
    em.side_writer = lambda version=C.SIDE_FORMAT: Keep(em, version)
    results = {}
    for q in args.qualities:
        rows = []
        for path in sorted(KODAK.glob("kodim*.png"))[: args.images]:
            padded, _, _ = pad_image(read_image(path), 64)
            x = torch.from_numpy(np.ascontiguousarray(padded)).permute(2, 0, 1)[None].float() / 255
            kept.clear()
            model.compress(x, quality=q)
            writer, coded = kept[0]
            side = {e: math.ceil((int(writer.costs(writer.steps(e)).min()) + C.BAND_BITS) / 8) for e in BANDS}
            rows.append({"image": path.name, "coded_bytes": coded, "side_bytes": side,
                         "chosen": writer.choose_band(coded)[0]})
        side = {e: np.array([r["side_bytes"][e] for r in rows], dtype=float) for e in BANDS}
        coded = np.array([r["coded_bytes"] for r in rows], dtype=float)
        results[f"q{q:g}"] = {
            "side_bytes_mean": {f"{2**e}x": float(side[e].mean()) for e in BANDS},
            "share_mean": {f"{2**e}x": float((side[e] / (coded + side[e])).mean()) for e in BANDS},
            "chosen": {f"{2**e}x": sum(r["chosen"] == e for r in rows) for e in BANDS[:4]},
            "images": rows,
        }
        r = results[f"q{q:g}"]
        print(f"q{q:g}: side bytes " + ", ".join(f"{k} {v:.1f}" for k, v in r["side_bytes_mean"].items())
              + " | share " + ", ".join(f"{k} {100 * v:.3f} %" for k, v in r["share_mean"].items())
              + f" | format 5 chooses {r['chosen']}", flush=True)
    if args.out:
        args.out.write_text(json.dumps({"model": args.model, "results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
