"""What would a cheaper scale-3 spatial prior cost? Prune its pointwise MLPs, no training (issue 18 item 2).

The s3 prior's three DWConvRB blocks (576 -> 1152 -> 576 channels on the full latent, once per s3 step) are
a large share of a decode (about a quarter of it on a 2-core AVX2 EPYC, session 17). This probe
ranks each block's hidden units by mean |activation| x the norm of their outgoing weights on held-out training
images (never Kodak), removes the lowest FRACTION (zeroing a unit's rows is the same function as a narrower
block), optionally folding each removed unit's mean activation into the next bias, and measures likelihood bpp
and PSNR against the unpruned weights at a few qualities.

    .venv/bin/python experiments/s3_prior_prune_probe.py [--weights hpcm-small-vr] [--images 4] [-o out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
QUALITIES = (1.0, 4.5, 8.0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", default="hpcm-small-vr", help="a variable-rate preset or weights file")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "train"))
    p.add_argument("--images", type=int, default=4, help="how many of the 16 held-out images")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5])
    p.add_argument("-o", "--output")
    args = p.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).parent))
    from holdout_compare import measure

    from hpcm.layers.conv import DWConvRB
    from hpcm.models.io import load_model
    from hpcm.train.data import ValidationImages, find_images
    from hpcm.train.trainer import split_holdout

    _, held = split_holdout(find_images([args.data]), 16)
    images = ValidationImages(held[: args.images])
    model = load_model(args.weights).eval()
    prior = model.y_spatial_prior_s3
    blocks = [m for m in (*prior.branch_1, *prior.branch_2) if isinstance(m, DWConvRB)]
    sums = [{"abs": 0.0, "mean": 0.0, "n": 0} for _ in blocks]

    def record(i: int):
        def hook(_module, _inputs, out: torch.Tensor) -> None:
            a = out.detach().transpose(0, 1).reshape(out.shape[1], -1).double()  # (hidden, B*h*w)
            sums[i]["abs"] = sums[i]["abs"] + a.abs().sum(1)
            sums[i]["mean"] = sums[i]["mean"] + a.sum(1)
            sums[i]["n"] += a.shape[1]
        return hook

    hooks = [b.branch[2].register_forward_hook(record(i)) for i, b in enumerate(blocks)]  # after LeakyReLU
    base = {q: measure(model, images, q) for q in QUALITIES}
    for h in hooks:
        h.remove()
    original = {k: v.clone() for k, v in model.state_dict().items()}
    results = {"weights": args.weights, "images": args.images, "unpruned": base, "pruned": {}}
    for fraction in args.fractions:
        for fold in (False, True):
            model.load_state_dict(original)
            with torch.no_grad():
                for block, s in zip(blocks, sums):
                    expand, shrink = block.branch[1], block.branch[3]
                    w_out = shrink.weight[:, :, 0, 0]  # (C, hidden), a view
                    importance = (s["abs"] / s["n"]).float() * w_out.norm(dim=0)
                    drop = importance.argsort()[: int(fraction * importance.numel())]
                    if fold:
                        shrink.bias += w_out[:, drop] @ (s["mean"][drop] / s["n"]).float()
                    expand.weight[drop] = 0
                    expand.bias[drop] = 0
                    w_out[:, drop] = 0
            r = {q: measure(model, images, q) for q in QUALITIES}
            key = f"{fraction:g}{' folded' if fold else ''}"
            results["pruned"][key] = r
            change = ", ".join(f"q{q:g} {r[q]['bpp'] / base[q]['bpp'] - 1:+.2%} bpp "
                               f"{r[q]['psnr'] - base[q]['psnr']:+.3f} dB" for q in QUALITIES)
            print(f"prune {key}: {change}", flush=True)
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=1, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
