"""Overhead of the multi-reference memory bank inside HPCM: same weights with and without the bank.

For every measured preset the model is built once from a fixed seed; the "without" column is the very same
model with ``model.memory = None`` (plain HPCM, identical weights). Each (preset, image size, bank on/off)
runs in a **fresh subprocess** so that its ``ru_maxrss`` is that measurement's own peak resident set size
(Python, torch, the model and the activations of the measured calls; not the bank's bytes alone). The worker
also reports the bytes the bank holds after a pass (its stored keys/values) and the parameter counts.

Measured per size: eval forward time (``torch.no_grad``, median of ``--repeats`` after one warm-up call for
tiny presets; Base runs once, without warm-up), and for tiny presets ``compress`` and ``decompress`` times
(entropy coding included, one call each). Ratios are with/without, from the same run.

    .venv/bin/python benchmarks/multiref_cost.py          # tiny at Kodak size, phase1/phase2 tiny at 2048^2,
                                                          # Base at Kodak size (about 5 min on 2 loaded cores)
    .venv/bin/python benchmarks/multiref_cost.py --quick  # tiny presets at 256 x 384 and Kodak size only
    .venv/bin/python benchmarks/multiref_cost.py --full   # every tiny preset and Base at 2048^2 too (slow)

Every timing follows one warm-up call of each model (both on and off), except Base at 2048^2 (--full),
which is timed once, cold. At 2048^2 tiny presets are timed once (after the warm-up).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch

TINY = ["hpcm-multiref-phase1-tiny", "hpcm-multiref-phase2-tiny", "hpcm-multiref-phase2-light-tiny",
        "hpcm-multiref-phase2-accurate-tiny"]
BASE = "hpcm-multiref-phase2"
SIZES = {"256x384": (256, 384), "kodak": (512, 768), "2048": (2048, 2048)}  # (H, W) of the image


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _build(preset: str, size: str, threads: int):
    import hpcm

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = hpcm.create_model(preset).eval()
    model.update()  # entropy tables once, outside every timing
    h, w = SIZES[size]
    return model, torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def time_worker(preset: str, size: str, repeats: int, codec: bool, threads: int, warmup: bool) -> dict:
    """Forward (and codec) times with and without the bank, interleaved in one process (same weights)."""
    model, x = _build(preset, size, threads)
    bank = model.memory
    states: list = []  # the per-pass memory states (the bank's entries live there, not on the module)
    new_state = bank.new_state
    bank.new_state = lambda *a, **k: states.append(new_state(*a, **k)) or states[-1]
    n_bank = sum(p.numel() for p in bank.parameters())
    n_total = sum(p.numel() for p in model.parameters())
    out: dict = {"preset": preset, "size": size, "params_total": n_total, "params_bank": n_bank}
    keys = ("fwd_off", "fwd_on", "enc_off", "enc_on", "dec_off", "dec_on")
    times: dict[str, list[float]] = {k: [] for k in keys}

    def use(on: bool) -> None:
        model.memory = bank if on else None

    with torch.no_grad():
        if warmup:  # first calls build shape caches (masks, index tables) and grow the heap
            for on in (False, True):
                use(on)
                model(x)
        for _ in range(repeats):
            for on in (False, True):
                use(on)
                times["fwd_on" if on else "fwd_off"].append(_timed(lambda: model(x)))
        out["stored_bytes"] = states[-1].memory_bytes()
        if codec:
            for on in (False, True):
                use(on)
                tag = "on" if on else "off"
                t0 = time.perf_counter()
                enc = model.compress(x)
                t1 = time.perf_counter()
                model.g_s(model.decompress_latent(enc["strings"], enc["shape"]))
                times[f"enc_{tag}"].append(t1 - t0)
                times[f"dec_{tag}"].append(time.perf_counter() - t1)
                out[f"bytes_{tag}"] = sum(len(b) for b in enc["strings"])
    out.update({k: statistics.median(v) for k, v in times.items() if v})
    return out


def rss_worker(preset: str, size: str, bank: bool, threads: int) -> dict:
    """Peak RSS (MiB) of this fresh process after building the model and after one eval forward."""
    model, x = _build(preset, size, threads)
    if not bank:
        model.memory = None
    loaded = _peak_rss_mib()
    with torch.no_grad():
        model(x)
    return {"rss_loaded_mib": loaded, "peak_rss_mib": _peak_rss_mib()}


def _worker(*argv: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", *argv]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"worker failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(preset: str, size: str, args) -> dict:
    """One row: interleaved times (one process) + peak RSS without / with the bank (one process each)."""
    codec = "tiny" in preset
    reps = args.repeats if codec and size != "2048" else 1
    warmup = codec or size != "2048"
    row = _worker("time", preset, size, str(reps), str(int(codec)), str(args.threads), str(int(warmup)))
    for on in (False, True):
        rss = _worker("rss", preset, size, str(int(on)), str(args.threads))
        tag = "on" if on else "off"
        row[f"rss_{tag}"], row[f"rss_loaded_{tag}"] = rss["peak_rss_mib"], rss["rss_loaded_mib"]
    return row


def _ratio(a: float, b: float) -> str:
    return f"{a / b:6.3f}" if b else "   n/a"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny presets only, 256x384 and Kodak size")
    ap.add_argument("--full", action="store_true", help="also Base widths at 2048x2048 (slow on CPU)")
    ap.add_argument("--repeats", type=int, default=3, help="timed forward pairs for tiny presets (median)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    ap.add_argument("--json", help="also write all measurements to this file")
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        kind, preset, size, *rest = args.worker
        if kind == "time":
            reps, codec, threads, warm = (int(v) for v in rest)
            res = time_worker(preset, size, reps, bool(codec), threads, bool(warm))
        else:
            res = rss_worker(preset, size, bool(int(rest[0])), int(rest[1]))
        print(json.dumps(res))
        return

    tiny_sizes = ["256x384", "kodak"] if args.quick else ["kodak", "2048"]
    plan = [(p, s) for s in tiny_sizes for p in TINY if s != "2048" or args.full or p in TINY[:2]]
    if not args.quick:
        plan.append((BASE, "kodak"))
        if args.full:
            plan.append((BASE, "2048"))
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs visible, workers use {args.threads} "
          f"torch thread(s); torch {torch.__version__}")
    print("off = the same model with model.memory = None. Times in s: medians of interleaved off/on calls\n"
          "in one process (tiny: warm-up + --repeats; Base: warm-up + one call each). RSS: peak resident\n"
          "MiB of a fresh process (torch + model + one eval forward); +act = peak minus RSS after the model\n"
          "was built. stored = bank keys + values after a pass.\n")
    print(f"{'preset':35} {'size':8} {'fwd off':>8} {'fwd on':>8} {'x':>6} | {'enc x':>6} {'dec x':>6} | "
          f"{'RSS off':>7} {'RSS on':>7} {'x':>6} {'+act off':>8} {'+act on':>8} | "
          f"{'stored':>9} {'bank par':>9} {'par x':>6}")
    rows = []
    for preset, size in plan:
        r = measure(preset, size, args)
        rows.append(r)
        enc = _ratio(r["enc_on"], r["enc_off"]) if "enc_on" in r else "   n/a"
        dec = _ratio(r["dec_on"], r["dec_off"]) if "dec_on" in r else "   n/a"
        act_off, act_on = r["rss_off"] - r["rss_loaded_off"], r["rss_on"] - r["rss_loaded_on"]
        plain = r["params_total"] - r["params_bank"]
        fwd = _ratio(r["fwd_on"], r["fwd_off"])
        print(f"{preset:35} {size:8} {r['fwd_off']:8.3f} {r['fwd_on']:8.3f} {fwd} | "
              f"{enc:>6} {dec:>6} | {r['rss_off']:7.0f} {r['rss_on']:7.0f} "
              f"{_ratio(r['rss_on'], r['rss_off'])} "
              f"{act_off:8.0f} {act_on:8.0f} | {r['stored_bytes'] / 1024:6.1f}KiB {r['params_bank']:9,d} "
              f"{_ratio(r['params_total'], plain)}", flush=True)
    codec_rows = [r for r in rows if "enc_on" in r]
    if codec_rows:
        print("\ncodec (s, off -> on), tiny presets:")
        for r in codec_rows:
            print(f"  {r['preset']:35} {r['size']:8} compress {r['enc_off']:.3f} -> {r['enc_on']:.3f}   "
                  f"decompress {r['dec_off']:.3f} -> {r['dec_on']:.3f}   "
                  f"bytes {r['bytes_off']} -> {r['bytes_on']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
