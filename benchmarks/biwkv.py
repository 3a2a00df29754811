"""Bi-WKV benchmark: time and peak memory of every implementation, side by side, from one run.

For each shape (B, T, C) it times one ``torch.exp`` over a (B, T, C) tensor (a memory-bandwidth yardstick)
and the forward / forward+backward of: the O(T^2) reference (measured on a slice of channels and scaled
linearly to the full B*C, since its cost is exactly proportional to B*C), the PyTorch O(T) path, the fused
Numba CPU kernel, the kernel-exact path, and the Triton path when CUDA is present. Ratios are printed against
the exp pass and against the reference.

Peak memory (CPU) is the growth of the process's peak resident set during the timed calls (Linux: VmHWM
after resetting it through /proc/self/clear_refs; the script re-executes itself with MALLOC_MMAP_THRESHOLD_
set so that freed tensors are returned to the OS); on CUDA it is ``torch.cuda.max_memory_allocated``.

    python benchmarks/biwkv.py --threads 2 [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from hpcm.ops import biwkv, numba_available
from hpcm.ops.biwkv import biwkv_reference

SHAPES = [(1, 1536, 640), (8, 4096, 144), (1, 98304, 96)]


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measure(fn: Callable[[], object], repeats: int, device: torch.device) -> tuple[float, float | None]:
    """Best wall time over ``repeats`` runs (after one warm-up) and peak extra memory in MiB."""
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        ok = _reset_peak()
        base = _rss_kib("VmRSS:")
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    if device.type == "cuda":
        mem = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        mem = (_rss_kib("VmHWM:") - base) / 1024 if ok else None
    return best, mem


def bench_shape(shape, device: torch.device, repeats: int, quick: bool) -> None:
    B, T, C = shape
    g = torch.Generator().manual_seed(0)
    k = (torch.randn(B, T, C, generator=g) * 1.5).to(device)
    v = torch.randn(B, T, C, generator=g).to(device)
    w = (torch.randn(C, generator=g) * 3 / T).to(device)
    u = (torch.randn(C, generator=g) / T).to(device)
    print(f"\n=== (B, T, C) = {shape}  ({B * T * C / 1e6:.1f} M elements) ===")
    t_exp, m_exp = measure(lambda: torch.exp(k), repeats, device)
    rows: list[tuple[str, float, float | None]] = [("exp (yardstick)", t_exp, m_exp)]

    def fwd(impl: str, mode: str = "paper"):
        def run():
            with torch.no_grad():
                return biwkv(w, u, k, v, impl=impl, mode=mode)

        return run

    def fwdbwd(impl: str, mode: str = "paper"):
        def run():
            args = [t.detach().requires_grad_() for t in (w, u, k, v)]
            biwkv(*args, impl=impl, mode=mode).sum().backward()

        return run

    # reference on a slice of channels (peak memory ~ 6 * c * T^2 * 8 bytes), scaled to B*C
    t_ref = None
    if T <= 4096:
        cs = max(1, min(C, int(2**24 // (T * T))))
        ks, vs, ws, us = k[:1, :, :cs], v[:1, :, :cs], w[:cs], u[:cs]
        t_slice, _ = measure(lambda: biwkv_reference(ws, us, ks, vs), 1, device)
        t_ref = t_slice * (B * C) / cs
        rows.append((f"reference fwd (1x{cs} ch, scaled)", t_ref, None))

    impls = ["torch"]
    if device.type == "cpu" and numba_available():
        impls.append("fused")
    if device.type == "cuda":
        try:
            biwkv(w, u, k[:, :8], v[:, :8], impl="triton")
            impls.append("triton")
        except Exception as exc:  # triton missing or failing: report, keep going
            print(f"  triton unavailable: {exc}")
    for impl in impls:
        rows.append((f"{impl} fwd", *measure(fwd(impl), repeats, device)))
        rows.append((f"{impl} fwd+bwd", *measure(fwdbwd(impl), repeats, device)))
    rows.append(("kernel_exact fwd", *measure(fwd("kernel_exact"), repeats, device)))
    if not (quick and B * T * C > 5e6):
        rows.append(("kernel_exact fwd+bwd", *measure(fwdbwd("kernel_exact"), 1, device)))

    print(f"  {'path':34s} {'time':>10s} {'x exp':>8s} {'ref / this':>11s} {'peak MiB':>9s}")
    for name, t, mem in rows:
        ref_ratio = f"{t_ref / t:11.1f}" if t_ref is not None and not name.startswith("ref") else " " * 11
        mem_s = f"{mem:9.0f}" if mem is not None else "        -"
        print(f"  {name:34s} {t * 1e3:8.1f}ms {t / t_exp:8.1f} {ref_ratio} {mem_s}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="one timed repeat, skip the slowest rows")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    if argv is None and os.environ.get("MALLOC_MMAP_THRESHOLD_") is None:
        # large blocks via mmap so that freed memory leaves the RSS and the peak RSS tracks live tensors
        os.environ["MALLOC_MMAP_THRESHOLD_"] = "131072"
        os.execv(sys.executable, [sys.executable, *sys.argv])
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {args.threads} threads, device {device}, numba: {numba_available()}")
    if device.type == "cpu" and numba_available():  # compile outside the timings
        biwkv(*(torch.randn(4) for _ in range(2)), torch.randn(1, 4, 4), torch.randn(1, 4, 4), impl="fused")
    for shape in SHAPES:
        bench_shape(shape, device, 1 if args.quick else 3, args.quick)


if __name__ == "__main__":
    main()
