"""Cost of every phase-study arm at Base widths (M=320, N=256), side by side in one run (issue 20, item 2).

Arms: ``hpcm-base`` (the baseline), ``hpcm-phase1`` … ``hpcm-phase4`` and ``hpcm-multiref-phase2``, each with
its deterministic initial weights (``hpcm.models.io.initial_model``: the same weights in every process and
on every machine). Cost does not depend on training except through the bitrate, which only moves the
entropy-coding share. Per arm and image size:

- parameters, kMACs/pixel (``FlopCounterMode``, one eval forward at 256×256, the paper's convention);
- **real** ``compress_image`` → bytes → ``decompress_image`` (entropy coding and container included) on a
  deterministic smooth synthetic image of exactly that size (``hpcm.eval.profile.synthetic_image``); the
  decoded image must equal the encoder's decode (checked);
- wall time and **CPU time** of the process (``time.process_time``): ``--warmup`` untimed calls per arm, then
  ``--repeat`` rounds in which the arms take turns (round-robin, so a load change on a shared machine hits
  every arm alike); medians reported. On a shared CPU the wall time measures the machine's load as much as
  the model (a single round on a loaded 2-core machine put the multi-reference arm, which only *adds* work
  to the baseline, at −47 %); the CPU time of a 1-thread process does not wait for other processes, so
  the changes against the baseline are computed from CPU time whenever it was recorded;
- peak memory: ``hpcm.eval.profile.PeakMemory`` (CPU: growth of the resident set during the first timed
  call; CUDA: ``max_memory_allocated`` growth) — activations, temporaries and coder buffers, not weights.

Ratios are to the baseline of the same run, printed beside the seeds' claims (expectations written
before anything was measured: Phase 2 −35 % time, −34 % memory, +0.3 dB; multi-reference −5…−8 % BD-rate).
The RD claims cannot be checked by a cost run (see ``docs/results/phase_study.md``).

The load average before and after the run is recorded: on a shared CPU, absolute times are inflated
and ratios are the meaningful numbers.

    OMP_NUM_THREADS=1 python benchmarks/phase_cost.py --sizes 768x512 -o docs/results/phase_cost.json
    python benchmarks/phase_cost.py --sizes 768x512,1536x1024 --threads 2      # on a quiet machine
    python benchmarks/phase_cost.py --device cuda --sizes 768x512,1536x1024   # GPU (networks on the GPU)

With ``-o`` the JSON is rewritten after every measured size, so an interrupted run keeps what it measured;
``--markdown PATH`` writes the table as well (``hpcm.eval.study.cost_table``, which the phase-study
report also uses).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ARMS = ("hpcm-base", "hpcm-phase1", "hpcm-phase2", "hpcm-phase3", "hpcm-phase4", "hpcm-multiref-phase2")
def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--arms", nargs="+", default=list(ARMS), help="presets; the first is the baseline")
    p.add_argument("--sizes", default="768x512", help="WxH list, e.g. 768x512,1536x1024")
    p.add_argument("--repeat", type=int, default=1, help="timed rounds (arms take turns in each)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls per arm and operation first")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--device", default="cpu")
    p.add_argument("--note", default="", help="free text about the machine state, stored in the JSON")
    p.add_argument("-o", "--output", type=Path, default=None, help="JSON results (rewritten per arm)")
    p.add_argument("--markdown", type=Path, default=None, help="also write the Markdown table here")
    args = p.parse_args(argv)
    if args.repeat < 1 or args.warmup < 0 or args.threads < 1:
        p.error("--repeat ≥ 1, --warmup ≥ 0, --threads ≥ 1")
    return args


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark; returns the JSON document (also written to ``--output`` as it grows)."""
    import numpy as np
    import torch

    from hpcm.codec.api import compress_image, decompress_image
    from hpcm.eval.profile import PeakMemory, count_macs, count_params, parse_sizes, synthetic_image
    from hpcm.eval.study import CLAIMS
    from hpcm.models.io import initial_model

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    doc: dict[str, Any] = {
        "tool": "benchmarks/phase_cost.py", "argv": sys.argv[1:], "arms": list(args.arms),
        "baseline": args.arms[0], "claims": CLAIMS, "repeat": args.repeat, "warmup": args.warmup,
        "environment": {"cpu_model": _cpu_model(), "logical_cpus": os.cpu_count(), "python":
                        platform.python_version(), "torch": torch.__version__, "device": args.device,
                        "torch_threads": torch.get_num_threads(),
                        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None},
        "note": args.note, "loadavg_start": _loadavg(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "models": {}, "rows": [],
    }

    def save() -> None:
        if args.output is not None:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(json.dumps(doc, indent=2) + "\n")

    models = {}
    for name in args.arms:
        print(f"[phase_cost] building {name}", file=sys.stderr, flush=True)
        model = initial_model(name).to(device).eval()
        macs = count_macs(model, 256, 256, device)
        doc["models"][name] = {"params": count_params(model), "kmacs_per_pixel": macs / (256 * 256) / 1e3}
        models[name] = model
    save()
    for w, h in ((w, h) for h, w in parse_sizes(args.sizes)):
        image = synthetic_image(h, w)
        data: dict[str, bytes] = {}
        first: dict[str, Any] = {}  # the warm-up decode, to check that decoding is deterministic
        for name, model in models.items():  # warm-up (also produces the file each arm decodes)
            for _ in range(max(1, args.warmup)):
                data[name] = compress_image(model, image)
            for _ in range(args.warmup):
                first[name] = decompress_image(data[name], model)
        times: dict[str, dict[str, list[float]]] = {n: {"compress": [], "decompress": []} for n in models}
        cpu: dict[str, dict[str, list[float]]] = {n: {"compress": [], "decompress": []} for n in models}
        peaks: dict[str, dict[str, float | None]] = {n: {} for n in models}
        exact: dict[str, bool] = {}
        for r in range(args.repeat):
            for name, model in models.items():
                print(f"[phase_cost] {name} {w}x{h} round {r + 1}/{args.repeat} "
                      f"(load {_loadavg()})", file=sys.stderr, flush=True)
                for op in ("compress", "decompress"):
                    mem = PeakMemory(device)
                    with mem:
                        t0, c0 = time.perf_counter(), time.process_time()
                        out = compress_image(model, image) if op == "compress" else \
                            decompress_image(data[name], model)
                        if device.type == "cuda":
                            torch.cuda.synchronize(device)
                        times[name][op].append(time.perf_counter() - t0)
                        cpu[name][op].append(time.process_time() - c0)
                    if r == 0:
                        peaks[name][op] = mem.mib
                    if op == "compress" and r == 0:
                        exact[name] = out == data[name]  # the encoder is deterministic
                        data[name] = out
                    if op == "decompress" and r == 0:
                        ref = first.get(name)
                        if ref is None:
                            ref = decompress_image(data[name], model)
                        exact[name] = bool(exact[name] and out.shape == image.shape
                                           and np.array_equal(out, ref))
        for name in models:
            t = times[name]
            doc["rows"].append({
                "model": name, "width": w, "height": h,
                "encode_s": statistics.median(t["compress"]), "decode_s": statistics.median(t["decompress"]),
                "encode_cpu_s": statistics.median(cpu[name]["compress"]),
                "decode_cpu_s": statistics.median(cpu[name]["decompress"]),
                "encode_min_s": min(t["compress"]), "decode_min_s": min(t["decompress"]),
                "encode_all_s": t["compress"], "decode_all_s": t["decompress"],
                "peak_encode_mib": peaks[name].get("compress"),
                "peak_decode_mib": peaks[name].get("decompress"),
                "bpp_synthetic": 8.0 * len(data[name]) / (w * h), "deterministic": exact.get(name),
                **doc["models"][name]})
        doc["loadavg_end"] = _loadavg()
        save()
    doc["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    doc["loadavg_end"] = _loadavg()
    save()
    return doc


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = parse_args(argv)
    doc = measure(args)
    from hpcm.eval.study import cost_table

    text = cost_table(doc)
    print(text)
    if args.markdown is not None:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
