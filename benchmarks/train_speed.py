"""Training throughput (images/s) and peak memory of `hpcm train`'s step for small presets.

Each configuration runs in its own subprocess so that the CPU peak (ru_maxrss) belongs to it alone.
Models: ``hpcm-tiny`` and an RWKV tiny preset (``hpcm-phase2-tiny`` when registered; otherwise the row
is skipped with a message). Devices: CPU, plus CUDA when available (bf16 autocast as an extra row).

    .venv/bin/python benchmarks/train_speed.py [--steps 5] [--batch-size 4] [--patch-size 128]
    # is bf16 autocast worth it for CPU training here?
    .venv/bin/python benchmarks/train_speed.py --models hpcm-small-vr --cpu-bf16 --batch-size 8 \
        --patch-size 256 --threads 2 --steps 3
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

RWKV_PRESET = "hpcm-phase2-tiny"


def _one(model_name: str, device: str, batch: int, patch: int, steps: int, amp: bool, ckpt: bool,
         channels_last: bool = False) -> dict:
    import torch

    from hpcm.train.amp import prepare_bf16
    from hpcm.train.loss import RateDistortionLoss
    from hpcm.train.trainer import build_model, enable_grad_checkpointing

    torch.manual_seed(0)
    dev = torch.device(device)
    model = build_model(model_name).to(dev).train()
    if ckpt and not enable_grad_checkpointing(model):
        return {"skipped": "no module supports use_checkpoint"}
    if amp:
        prepare_bf16(model)  # as `hpcm train --amp bf16` does
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    crit = RateDistortionLoss(0.0067)
    x = torch.rand(batch, 3, patch, patch, device=dev)
    if channels_last:  # as `hpcm train --channels-last`
        model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    gains = getattr(model, "quality_gains", None)
    kwargs, lmbda = {}, {}
    if gains is not None:  # variable rate: one quality per crop, spread over the range, as in training
        lo, hi = gains.quality_range
        q = torch.linspace(lo, hi, batch)
        kwargs, lmbda = {"quality": q.to(dev)}, {"lmbda": gains.lmbda(q)}

    def step() -> None:
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            out = model(x, training=True, **kwargs)
        loss = crit(out, x, **lmbda)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    for _ in range(2):  # warm-up
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    res = {"images_per_s": batch * steps / dt, "s_per_step": dt / steps,
           "params_M": sum(p.numel() for p in model.parameters()) / 1e6}
    if dev.type == "cuda":
        res["peak_mem_MiB"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        res["peak_mem_MiB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    return res


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--patch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--models", nargs="+", default=None,
                   help=f"presets to measure (default: hpcm-tiny and {RWKV_PRESET})")
    p.add_argument("--cpu-bf16", action="store_true",
                   help="also measure bf16 autocast on the CPU (worth it on CPUs with AVX512-BF16 or AMX)")
    p.add_argument("--channels-last", action="store_true", help="NHWC model and batch in every row")
    p.add_argument("--single", nargs=4, metavar=("MODEL", "DEVICE", "AMP", "CKPT"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.single:
        import torch

        if a.threads:
            torch.set_num_threads(a.threads)
        name, device, amp, ckpt = a.single
        print(json.dumps(_one(name, device, a.batch_size, a.patch_size, a.steps, amp == "1", ckpt == "1",
                              a.channels_last)))
        return 0

    import torch

    from hpcm.models.registry import list_models

    if a.models:
        names = a.models
    else:
        names = ["hpcm-tiny"]
        if RWKV_PRESET in list_models():
            names.append(RWKV_PRESET)
        else:
            print(f"[skip] {RWKV_PRESET} is not registered in this build; RWKV row left out")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for name in names:
        for dev in devices:
            variants = [(False, False)]
            if dev == "cuda" or a.cpu_bf16:
                variants.append((True, False))
            if name == RWKV_PRESET:
                variants.append((False, True))
            for amp, ckpt in variants:
                cmd = [sys.executable, __file__, "--steps", str(a.steps), "--batch-size", str(a.batch_size),
                       "--patch-size", str(a.patch_size), "--threads", str(a.threads),
                       "--single", name, dev, str(int(amp)), str(int(ckpt))] + (
                           ["--channels-last"] if a.channels_last else [])
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode != 0:
                    print(f"[fail] {name} {dev}: {proc.stderr.strip().splitlines()[-1:]}")
                    continue
                res = json.loads(proc.stdout.strip().splitlines()[-1])
                rows.append((name, dev, "bf16" if amp else "fp32", "on" if ckpt else "off", res))
    print(f"batch {a.batch_size} x {a.patch_size}x{a.patch_size}, {a.steps} timed steps after 2 warm-up, "
          f"threads {a.threads or torch.get_num_threads()}")
    print(f"{'model':<20}{'device':<8}{'amp':<6}{'ckpt':<6}{'img/s':>9}{'s/step':>9}"
          f"{'peak MiB':>10}{'ratio':>7}")
    base = {}
    for name, dev, amp, ckpt, r in rows:
        if "skipped" in r:
            print(f"{name:<20}{dev:<8}{amp:<6}{ckpt:<6}  skipped: {r['skipped']}")
            continue
        base.setdefault(dev, r["images_per_s"])
        ratio = r["images_per_s"] / base[dev]
        print(f"{name:<20}{dev:<8}{amp:<6}{ckpt:<6}{r['images_per_s']:>9.2f}{r['s_per_step']:>9.3f}"
              f"{r['peak_mem_MiB']:>10.0f}{ratio:>7.2f}")
    print("ratio: images/s relative to the first row of the same device; CPU peak = process max RSS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
