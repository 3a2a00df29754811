"""Codec speed: encode/decode seconds (network vs entropy coding), peak RSS, actual/estimated bits.

For each model (default ``hpcm-tiny`` and ``hpcm-base``, their untrained initial weights) on one Kodak
image (768x512), CPU, ``--threads`` torch threads (default 2). Every measurement runs in a fresh
subprocess so that ``ru_maxrss`` is that measurement's peak RSS (model load and torch included):

- encode: ``model.compress`` wall time; the entropy-coding share is the time spent inside the
  ``hpcm.entropy`` coder calls (``SymbolEncoder`` construct/encode/finish) plus ``scale_to_index``,
  measured by wrapping those functions (the model code is not changed); network = total - entropy;
- decode: the same for ``model.decompress`` (``SymbolDecoder``);
- rate: actual bits of the two streams / bits estimated by the eval forward pass likelihoods.
The CDF tables are built (``model.update()``) before timing, as they are cached across images.

Targets (official implementation, same machine class, random weights, torch 2.13 CPU, 2 threads,
768x512): encode 6.2 s, decode 6.1 s, peak RSS 1.19 GB; entropy coding < 10 % of decode time.

Run: ``.venv/bin/python benchmarks/codec_speed.py [--models hpcm-tiny hpcm-base] [--image PATH]``.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGETS = {"encode_s": 6.2, "decode_s": 6.1, "peak_rss_gb": 1.19, "entropy_share_decode": 0.10}
DEFAULT_IMAGE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kodak" / "kodim23.png"


class _Clock:
    """Accumulates time spent inside wrapped functions (non-reentrant use)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0

    def wrap(self, fn):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t0
                self.calls += 1

        return timed


def _instrument() -> _Clock:
    """Wrap the entropy coder entry points so their time is accounted for."""
    from hpcm.entropy import coder, tables

    clock = _Clock()
    for cls, names in ((coder.SymbolEncoder, ("__init__", "encode", "finish")),
                       (coder.SymbolDecoder, ("__init__", "decode"))):
        for name in names:
            setattr(cls, name, clock.wrap(getattr(cls, name)))
    tables.scale_to_index = clock.wrap(tables.scale_to_index)
    return clock


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux: KiB


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _setup(args) -> tuple:
    import torch

    from hpcm.codec.api import pad_image
    from hpcm.codec.image_io import read_image
    from hpcm.models.io import load_model

    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    model.update()
    image = read_image(args.image)
    padded, _, _ = pad_image(image, model.size_multiple)
    x = torch.from_numpy(padded).permute(2, 0, 1)[None].float() / 255
    return torch, model, image, x


def worker(args) -> dict:
    """One measurement in this (fresh) process; returns a JSON-able dict."""
    torch, model, image, x = _setup(args)
    rss_loaded = _peak_rss_gb()
    streams_path = Path(args.streams)
    if args.worker == "encode":
        clock = _instrument()
        c0, t0 = _cpu_s(), time.perf_counter()
        with torch.inference_mode():
            out = model.compress(x)
        total, cpu = time.perf_counter() - t0, _cpu_s() - c0
        streams_path.write_text(json.dumps({"strings": [s.hex() for s in out["strings"]],
                                            "shape": list(out["shape"])}))
        return {"total_s": total, "cpu_s": cpu, "entropy_s": clock.seconds, "calls": clock.calls,
                "bytes": sum(len(s) for s in out["strings"]), "peak_rss_gb": _peak_rss_gb(),
                "rss_after_load_gb": rss_loaded}
    if args.worker == "decode":
        saved = json.loads(streams_path.read_text())
        strings = [bytes.fromhex(s) for s in saved["strings"]]
        clock = _instrument()
        c0, t0 = _cpu_s(), time.perf_counter()
        with torch.inference_mode():
            model.decompress(strings, tuple(saved["shape"]))
        total, cpu = time.perf_counter() - t0, _cpu_s() - c0
        return {"total_s": total, "cpu_s": cpu, "entropy_s": clock.seconds, "calls": clock.calls,
                "peak_rss_gb": _peak_rss_gb(), "rss_after_load_gb": rss_loaded}
    # estimate: bits from the eval forward pass likelihoods
    with torch.inference_mode():
        lik = model(x, training=False)["likelihoods"]
    bits = {k: float(-torch.log2(v.double()).sum()) for k, v in lik.items()}
    return {"estimated_bits": bits}


def _run_worker(kind: str, model: str, args, streams: Path) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--model", model, "--image", str(args.image),
           "--threads", str(args.threads), "--streams", str(streams)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} worker for {model} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _fmt_ratio(value: float, target: float) -> str:
    return f"{value / target:5.2f}x" if target else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["hpcm-tiny", "hpcm-base"])
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", choices=("encode", "decode", "estimate"), help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--streams", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return

    from PIL import Image

    with Image.open(args.image) as im:
        w, h = im.size
    print(f"codec speed: {args.image.name} ({w}x{h}), CPU, {args.threads} threads, untrained initial weights")
    load = os.getloadavg()[0]
    print(f"load average at start: {load:.1f} on {os.cpu_count()} CPUs (wall times are inflated when the "
          "machine is shared; 'cpu s' = process CPU seconds, less sensitive to sharing)")
    print(f"targets (official impl., random weights): encode {TARGETS['encode_s']} s, decode "
          f"{TARGETS['decode_s']} s, peak RSS {TARGETS['peak_rss_gb']} GB, entropy < 10% of decode\n")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            streams = Path(tmp) / f"{name}.json"
            enc = _run_worker("encode", name, args, streams)
            dec = _run_worker("decode", name, args, streams)
            est = _run_worker("estimate", name, args, streams)
            est_bits = sum(est["estimated_bits"].values())
            ratio = 8 * enc["bytes"] / est_bits if est_bits > 0 else math.nan
            rows.append((name, enc, dec, ratio, est_bits))

    head = (f"{'model':<10} {'phase':<7} {'total s':>8} {'cpu s':>7} {'network s':>10} {'entropy s':>10} "
            f"{'entropy %':>10} {'peak RSS GB':>12} {'vs target':>18}")
    print(head)
    print("-" * len(head))
    for name, enc, dec, _, _ in rows:
        for phase, r, tkey in (("encode", enc, "encode_s"), ("decode", dec, "decode_s")):
            share = r["entropy_s"] / r["total_s"]
            print(f"{name:<10} {phase:<7} {r['total_s']:8.2f} {r['cpu_s']:7.2f} "
                  f"{r['total_s'] - r['entropy_s']:10.2f} "
                  f"{r['entropy_s']:10.2f} {100 * share:9.1f}% {r['peak_rss_gb']:12.2f} "
                  f"{'time ' + _fmt_ratio(r['total_s'], TARGETS[tkey]):>9} "
                  f"{'rss ' + _fmt_ratio(r['peak_rss_gb'], TARGETS['peak_rss_gb']):>8}")
    print()
    for name, enc, dec, ratio, est_bits in rows:
        share = dec["entropy_s"] / dec["total_s"]
        ok = "meets" if share < TARGETS["entropy_share_decode"] else "MISSES"
        print(f"{name}: {enc['bytes']} bytes = {8 * enc['bytes'] / (w * h):.4f} bpp; actual/estimated bits "
              f"{ratio:.4f} (estimate {est_bits:.0f} bits); entropy share of decode {100 * share:.1f}% "
              f"({ok} < 10%); RSS after model load: enc {enc['rss_after_load_gb']:.2f} GB")


if __name__ == "__main__":
    main()
