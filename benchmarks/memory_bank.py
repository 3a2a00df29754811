"""Cost of the multi-reference memory bank alone, per coding step, at Kodak size and at 2048 x 2048.

Drives ``HierarchicalMemoryManager`` through HPCM's 10 network steps (s1: 1, s2: 3, s3: 6; grids H/4, H/2
and H of the y grid) exactly as the model's seam does (transfer at a scale start, read_and_fuse, write), with
random (B, C, h, w) contexts prepared beforehand, and prints per step: wall time (median over repeats),
entries the read found, stored bytes after the step and analytic MACs; then per pass: time, peak stored
bytes, peak memory (CUDA allocator peak, or the growth of the process's max RSS on CPU, which is coarse)
and parameters.

    .venv/bin/python benchmarks/memory_bank.py                   # default preset, CPU, both sizes
    .venv/bin/python benchmarks/memory_bank.py --preset light --sizes kodak --repeats 5
    .venv/bin/python benchmarks/memory_bank.py --device cuda --train
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from dataclasses import dataclass

import torch

from hpcm.layers.memory_bank import MEMORY_PRESETS, HierarchicalMemoryManager

SIZES = {"kodak": (32, 48), "2048": (128, 128)}  # y grids: 512 x 768 and 2048 x 2048 images
FACTOR = {"s1": 4, "s2": 2, "s3": 1}


@dataclass(frozen=True)
class BenchStep:
    index: int  # HPCM step number (2..11)
    scale: str
    starts_scale: bool


SCHEDULE = [BenchStep(2, "s1", False)] + [BenchStep(3 + i, "s2", i == 0) for i in range(3)] + [
    BenchStep(6 + i, "s3", i == 0) for i in range(6)
]


def step_macs(mem: HierarchicalMemoryManager, scale: str, hw: tuple[int, int], n_entries: int) -> int:
    """Analytic multiply-accumulates of one read (if entries exist) plus one write at ``scale``."""
    if scale not in mem.banks:
        return 0
    bank = mem.banks[scale]
    c, ck, cv, r = bank.channels, bank.key_dim, bank.value_dim, bank.value_resolution
    px = hw[0] * hw[1]
    write = px * (9 * c + c * cv + c * ck)  # dwconv, value 1x1, key 1x1
    read = 0
    if n_entries:
        read = px * (c * ck + (c + cv) * cv + 2 * cv * c) + r * r * cv * cv  # query, fusion, gate; decoder
    return write + read


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_pass(mem, inputs, device, train: bool) -> tuple[list[float], list[int], list[int]]:
    """One pass over SCHEDULE (what ``mem(state, step, C)`` does, split to see the entries each read finds).

    Returns per-step seconds (plus the backward time in training), entries visible to each read and stored
    bytes after each step.
    """
    times, visible, stored = [], [], []
    state = mem.new_state(inputs[0].shape[0])
    outs = []
    for step, ctx in zip(SCHEDULE, inputs):
        _sync(device)
        t0 = time.perf_counter()
        if step.starts_scale:
            mem.transfer(state, step.scale)
        visible.append(state.num_entries().get(step.scale, 0))
        outs.append(mem.step(state, step.scale, ctx))
        _sync(device)
        times.append(time.perf_counter() - t0)
        stored.append(state.memory_bytes())
    if train:
        _sync(device)
        t0 = time.perf_counter()
        sum(o.float().square().mean() for o in outs).backward()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times, visible, stored


def bench(size: str, args: argparse.Namespace, device: torch.device) -> None:
    h, w = SIZES[size]
    cfg = MEMORY_PRESETS[args.preset]
    if args.scales:
        cfg = type(cfg).from_dict({**cfg.to_dict(), "enabled_scales": args.scales.split(",")})
    if args.mode:
        cfg = type(cfg).from_dict({**cfg.to_dict(), "mode": args.mode})
    torch.manual_seed(0)
    mem = HierarchicalMemoryManager(args.channels, cfg).to(device).train(args.train)
    with torch.no_grad():  # non-zero last projection, as after training (zero makes no cost difference)
        for bank in mem.banks.values():
            bank.fusion_out.weight.normal_(std=0.02)
    inputs = [
        torch.randn(args.batch, args.channels, h // FACTOR[s.scale], w // FACTOR[s.scale], device=device,
                    requires_grad=args.train)
        for s in SCHEDULE
    ]
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    ctx = torch.enable_grad() if args.train else torch.inference_mode()
    all_times: list[list[float]] = []
    with ctx:
        run_pass(mem, inputs, device, args.train)  # warm-up
        for _ in range(args.repeats):
            mem.zero_grad(set_to_none=True)
            t, visible, stored = run_pass(mem, inputs, device, args.train)
            all_times.append(t)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) - base
        peak_label = "CUDA peak allocated above inputs"
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) * 1024
        peak_label = "max-RSS growth (coarse)"
    med = [statistics.median(col) for col in zip(*all_times)]

    print(f"\n== {size}: y grid {h}x{w} (image {16 * h}x{16 * w}), C={args.channels}, batch {args.batch}, "
          f"preset {args.preset}, scales {','.join(cfg.enabled_scales)}, mode {cfg.mode}, device {device}, "
          f"{'train (fwd+bwd)' if args.train else 'inference'}, median of {args.repeats}")
    print(f"{'step':>4} {'scale':>5} {'grid':>9} {'entries':>7} {'ms':>9} {'stored KiB':>10} {'MMAC':>8}")
    total_macs = 0
    for i, step in enumerate(SCHEDULE):
        gh, gw = h // FACTOR[step.scale], w // FACTOR[step.scale]
        macs = step_macs(mem, step.scale, (gh, gw), visible[i]) * args.batch
        total_macs += macs
        print(f"{step.index:>4} {step.scale:>5} {f'{gh}x{gw}':>9} {visible[i]:>7} "
              f"{1e3 * med[i]:>9.3f} {stored[i] / 1024:>10.1f} {macs / 1e6:>8.1f}")
    fwd = sum(med[: len(SCHEDULE)])
    print(f"pass: {1e3 * fwd:.2f} ms forward"
          + (f" + {1e3 * med[-1]:.2f} ms backward" if args.train else "")
          + f"; {total_macs / 1e9:.3f} GMAC = {total_macs / (256 * h * w * args.batch) / 1e3:.2f} kMAC per "
          f"image pixel; peak stored {max(stored) / 2**20:.3f} MiB; {peak_label} {peak / 2**20:.1f} MiB; "
          f"params {mem.num_parameters() / 1e6:.3f} M {mem.num_parameters(per_scale=True)}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=sorted(MEMORY_PRESETS), default="default")
    p.add_argument("--scales", default="", help="comma list overriding enabled_scales, e.g. s3")
    p.add_argument("--mode", choices=["topk", "soft"], default=None)
    p.add_argument("--sizes", default="kodak,2048", help=f"comma list from {sorted(SIZES)}")
    p.add_argument("--channels", type=int, default=640, help="context channels 2M")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    p.add_argument("--train", action="store_true", help="time forward + backward with autograd")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    for size in args.sizes.split(","):
        bench(size, args, device)


if __name__ == "__main__":
    main()
