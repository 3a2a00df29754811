"""How good can a variable-rate model's transforms be? PSNR of g_s(g_a(x)) without the entropy model.

On the held-out training images (the ones ``hpcm train --val-holdout N`` validates on; never Kodak), for
each anchor quality: the 8-bit PSNR of the reconstruction from the *unquantised* latent (``cont``: the
transform pair's ceiling, no rate spent can beat it) and from the latent rounded to integers without the
context model's means (``round``). When the model's PSNR at its top quality sits close
to ``cont``, more bits cannot help: the transforms need training (or width), not the entropy model.

    .venv/bin/python experiments/transform_ceiling.py WEIGHTS_OR_PRESET [...] [--holdout 16] [-o out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


@torch.no_grad()
def ceiling(model, images, qualities: list[float]) -> dict[str, dict[str, float]]:
    """{quality: {"cont": dB, "round": dB}} averaged over ``images`` (8-bit PSNR of the unpadded image)."""
    from hpcm.eval.metrics import psnr, to_uint8
    from hpcm.models.protocol import size_multiple
    from hpcm.train.data import pad_to_multiple

    multiple = size_multiple(model)
    sums: dict[str, dict[str, float]] = {}
    for _, x in images:
        h, w = x.shape[-2:]
        y = model.g_a(pad_to_multiple(x, multiple))
        for q in qualities:
            gain, inverse = model.quality_gains.gains(torch.tensor([q]))
            for name, latent in (("cont", y * gain), ("round", torch.round(y * gain))):
                x_hat = model.g_s(latent * inverse)[..., :h, :w].clamp(0, 1)
                row = sums.setdefault(f"{q:g}", {})
                row[name] = row.get(name, 0.0) + psnr(to_uint8(x), to_uint8(x_hat))
    n = max(1, len(images))
    return {q: {k: v / n for k, v in row.items()} for q, row in sums.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", help="variable-rate presets (shipped weights) or weights files")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "train"))
    p.add_argument("--holdout", type=int, default=16)
    p.add_argument("--qualities", type=float, nargs="+", default=[1, 4, 8])
    p.add_argument("-o", "--output", help="JSON with every number")
    args = p.parse_args(argv)
    from hpcm.models.io import load_model
    from hpcm.train.data import ValidationImages, find_images
    from hpcm.train.trainer import split_holdout

    _, held = split_holdout(find_images([args.data]), args.holdout)
    images = ValidationImages(held)
    doc = {"holdout": [str(h) for h in held], "models": {}}
    for spec in args.models:
        model = load_model(spec).eval()
        if getattr(model, "quality_gains", None) is None:
            p.error(f"{spec}: not a variable-rate model")
        res = doc["models"][spec] = ceiling(model, images, args.qualities)
        cells = "  ".join(f"q{q}: cont {r['cont']:.2f} / round {r['round']:.2f} dB" for q, r in res.items())
        print(f"{spec}: {cells}", flush=True)
    if args.output:
        Path(args.output).write_text(json.dumps(doc, indent=1) + "\n")
    return 0 if all(math.isfinite(r["cont"]) for m in doc["models"].values() for r in m.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
