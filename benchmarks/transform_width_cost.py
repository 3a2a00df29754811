"""What wider or deeper transforms (g_a, g_s) would cost hpcm-small-vr: decode, synthesis, training step.

Each candidate is hpcm-small-vr with other ``g_channels`` / ``g_depths`` (initial weights: the cost does not
depend on training). Measured side by side in one run, ratios against the first row (the preset itself):
``decompress`` of a 768×512 image (2 threads), ``synthesise`` alone (1 thread) and a forward + backward of the
training loss on 4 × 256² crops at four qualities (1 thread, channels-last, as ``hpcm train`` runs).

    .venv/bin/python benchmarks/transform_width_cost.py [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from hpcm.models.registry import create_model
from hpcm.train.loss import RateDistortionLoss

CANDIDATES: dict[str, dict] = {
    "64/128/192, 1/1/2 (hpcm-small-vr)": {},
    "64/128/384, 1/1/2": {"g_channels": (64, 128, 384)},
    "96/192/384, 1/1/2": {"g_channels": (96, 192, 384)},
    "64/128/192, 2/2/4": {"g_depths": (2, 2, 4)},
    "96/192/384, 1/2/3": {"g_channels": (96, 192, 384), "g_depths": (1, 2, 3)},
}


def best_of(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def measure(overrides: dict, repeat: int) -> dict:
    torch.manual_seed(0)
    model = create_model("hpcm-small-vr", **overrides).eval()
    x = torch.rand(1, 3, 512, 768)
    torch.set_num_threads(2)
    coded = model.compress(x, quality=4.0)
    decode = best_of(lambda: model.decompress(coded["strings"], coded["shape"], quality=4.0), repeat)
    torch.set_num_threads(1)
    with torch.no_grad():
        y = torch.randn(1, model.M, 32, 48)
        synth = best_of(lambda: model.synthesise(y, 4.0), repeat)
    model.train().to(memory_format=torch.channels_last)
    crops = torch.rand(4, 3, 256, 256).contiguous(memory_format=torch.channels_last)
    quality = torch.linspace(1, 8, 4)
    loss_fn = RateDistortionLoss(0.01)

    def step() -> None:
        out = model(crops, training=True, quality=quality)
        loss_fn(out, crops, lmbda=model.quality_gains.lmbda(quality))["loss"].backward()

    train = best_of(step, repeat)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    return {"params_M": params, "decode_s": decode, "synthesis_s": synth, "train_step_s": train}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=2, help="timed runs per measurement (the best is kept)")
    p.add_argument("--json", action="store_true", help="one JSON object per candidate instead of the table")
    args = p.parse_args()
    rows = {name: measure(ov, args.repeat) for name, ov in CANDIDATES.items()}
    base = next(iter(rows.values()))
    if args.json:
        for name, r in rows.items():
            print(json.dumps({"name": name, **r}))
        return 0
    print("| g_channels / g_depths | parameters | decode 768x512, 2 threads | g_s, 1 thread "
          "| train step b4, 1 thread |")
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        cells = [f"{r[k]:.2f} s (x{r[k] / base[k]:.2f})" for k in ("decode_s", "synthesis_s", "train_step_s")]
        print(f"| {name} | {r['params_M']:.2f} M | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
