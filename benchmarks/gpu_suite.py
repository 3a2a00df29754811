"""GPU suite (issue 19): every CUDA path verified and measured in one time-boxed run.

    python benchmarks/gpu_suite.py --out DIR [--device cuda|cpu] [--quick] [--budget 450] [--only a,b]

Normally started by ``scripts/gpu_check.sh DIR`` (which installs the carried wheels first). Writes, and
rewrites after every section (so a run killed half-way still leaves what it measured):

- ``DIR/results.json``: ``{"meta": ..., "sections": {name: {"status", "reason", "seconds", "data"}}}``;
- ``DIR/summary.md``: the same as tables;
- ``DIR/suite.log``: every section's output; ``DIR/pytest_cuda.log``: the CUDA tests' verbose log.

Sections, in order (each in its own process with its own time box, so one that fails, hangs or crashes the
interpreter costs only itself; ``status`` is ok, failed, timeout or skipped):

``env``         device name, driver, torch / CUDA / cuDNN / triton / Python versions, packages, date, commit.
``pytest_cuda`` ``pytest -m cuda tests/test_cuda.py`` (correctness, issue item 2).
``biwkv``       copy bandwidth; Bi-WKV Triton vs the O(T) torch path, forward and forward+backward at
                (1, 98304, 96), (8, 4096, 144), (1, 1536, 640), against the memory-bound limit.
``codec``       encode / decode latency and peak CUDA memory at 768x512, random weights: hpcm-base,
                hpcm-large, hpcm-phase1..4, hpcm-multiref-phase2 (needs constriction).
``official``    optional: the official HPCM-Base code with the same weights and input
                (``HPCM_OFFICIAL_DIR`` or ``.gpu/official``; see docs/gpu.md). Skipped without it.
``profile``     kernels per training step / per decode, GPU-busy time vs wall time (launch overhead).
``train``       training throughput (images/s), bf16 autocast, batch 8 and 16 x 256^2, eager / torch.compile.

``--device cpu --quick`` runs the same code on CPU with tiny shapes in well under a minute (CI runs it).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import math
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# name, full time box (s), quick time box (s)
SECTIONS: list[tuple[str, float, float]] = [
    ("env", 25, 20),
    ("pytest_cuda", 160, 40),
    ("biwkv", 45, 25),
    ("codec", 80, 30),
    ("crossdev", 100, 10),
    ("official", 30, 10),
    ("profile", 25, 25),
    ("train", 110, 40),
]
DEFAULT_BUDGET = 450.0


# ===================================================================================== shared helpers


class Recorder:
    """A section's result, rewritten atomically to ``path`` on every update (survives a kill)."""

    def __init__(self, path: Path, deadline: float) -> None:
        self.path = path
        self.deadline = deadline
        self.data: dict[str, Any] = {}

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.flush()

    def flush(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, default=_jsonable, indent=1))
        tmp.replace(self.path)

    def left(self) -> float:
        return self.deadline - time.time()


def _jsonable(o: Any) -> Any:
    if isinstance(o, float) and not math.isfinite(o):
        return str(o)
    if isinstance(o, Path):
        return str(o)
    return repr(o)


def sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed(fn: Callable[[], Any], dev, repeats: int, warmup: int = 1) -> dict[str, float]:
    """Wall-clock seconds of ``fn`` (synchronised): median and min over ``repeats`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    sync(dev)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(dev)
        ts.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(ts), "min_s": min(ts), "n": repeats}


@contextlib.contextmanager
def peak_memory(dev, out: dict[str, Any], key: str):
    """Peak allocated CUDA memory (MiB) above what was allocated before, into ``out[key]`` (None on CPU)."""
    import torch

    if dev.type == "cuda":
        sync(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
    try:
        yield
    finally:
        if dev.type == "cuda":
            sync(dev)
            out[key] = (torch.cuda.max_memory_allocated(dev) - base) / 2**20
            out[key + "_total"] = torch.cuda.max_memory_allocated(dev) / 2**20
        else:
            out[key] = None


def kodak_dir() -> Path | None:
    for d in (os.environ.get("HPCM_KODAK_DIR"), ROOT / ".gpu" / "data" / "kodak",
              ROOT.parent / "shared" / "data" / "kodak"):
        if d and (Path(d) / "kodim23.png").is_file():
            return Path(d)
    return None


def test_image(h: int, w: int):
    """(1, 3, h, w) float in [0, 1]: the top-left crop of kodim23 (landscape), else a synthetic image."""
    import numpy as np
    import torch

    d = kodak_dir()
    if d is not None:
        from PIL import Image

        img = np.asarray(Image.open(d / "kodim23.png").convert("RGB"))
        if img.shape[0] > img.shape[1]:
            img = img.transpose(1, 0, 2)
        src = "kodim23"
    else:
        rng = np.random.default_rng(23)
        yy, xx = np.mgrid[0:512, 0:768] / 768
        img = np.stack([np.sin(7 * xx + c) * 0.3 + yy * 0.5 + 0.2 for c in (0.0, 1.0, 2.0)], -1)
        img = ((img + rng.normal(0, 0.03, img.shape)).clip(0, 1) * 255).astype(np.uint8)
        src = "synthetic"
    x = torch.from_numpy(np.array(img[:h, :w])).permute(2, 0, 1)[None].float() / 255.0
    return x, src


def randomise_memory_output(model) -> None:
    """The memory bank's fusion projections start at zero (bank inactive); give them random weights."""
    import torch

    if getattr(model, "memory", None) is None:
        return
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.memory.parameters():
            if torch.count_nonzero(p) == 0:
                p.copy_((0.05 * torch.randn(p.shape, generator=g)).to(p.device))


def missing(*modules: str) -> str | None:
    import importlib.util

    gone = [m for m in modules if importlib.util.find_spec(m) is None]
    return f"not installed: {', '.join(gone)}" if gone else None


def _raise_row_errors(rows: list[dict[str, Any]]) -> None:
    """A section whose rows (partly) failed is reported as failed; the rows measured are kept."""
    bad = [r for r in rows if "error" in r]
    if bad:
        raise RuntimeError(f"{len(bad)} of {len(rows)} rows failed; first: {str(bad[0]['error'])[-300:]}")


class Skip(Exception):
    """Raised by a section to mark itself skipped with a reason."""


# ============================================================================================ sections


def section_env(rec: Recorder, dev, quick: bool) -> None:
    import importlib.metadata as md

    import torch

    rec.set("date_utc", _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    rec.set("python", sys.version.split()[0])
    rec.set("python_executable", sys.executable)
    rec.set("platform", platform.platform())
    rec.set("cpu_count", os.cpu_count())
    rec.set("torch", torch.__version__)
    rec.set("cuda_runtime", torch.version.cuda)
    rec.set("cudnn", torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None)
    try:
        import triton

        rec.set("triton", triton.__version__)
    except Exception as exc:  # ImportError or a broken install
        rec.set("triton", f"unavailable: {exc}")
    pk = {}
    for name in ("constriction", "pytorch-msssim", "bjontegaard", "numba", "numpy", "scipy", "safetensors",
                 "pillow", "pytest", "pytest-timeout"):
        try:
            pk[name] = md.version(name)
        except md.PackageNotFoundError:
            pk[name] = None
    rec.set("packages", pk)
    rec.set("device_requested", str(dev))
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        rec.set("device_name", p.name)
        rec.set("capability", f"{p.major}.{p.minor}")
        rec.set("sm_count", p.multi_processor_count)
        rec.set("gpu_memory_GiB", round(p.total_memory / 2**30, 1))
        rec.set("tf32_cudnn", torch.backends.cudnn.allow_tf32)
        rec.set("tf32_matmul", torch.backends.cuda.matmul.allow_tf32)
        rec.set("nccl", torch.distributed.is_available() and torch.distributed.is_nccl_available())
    else:
        rec.set("device_name", platform.processor() or "cpu")
    try:
        q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                            "--format=csv,noheader"], capture_output=True, text=True, timeout=15)
        rec.set("nvidia_smi", q.stdout.strip() or q.stderr.strip())
        if q.returncode == 0 and q.stdout.strip():
            rec.set("driver", q.stdout.strip().splitlines()[0].split(",")[1].strip())
    except (OSError, subprocess.SubprocessError) as exc:
        rec.set("nvidia_smi", f"unavailable: {exc}")
    src = ROOT / ".gpu" / "source.txt"
    if src.is_file():
        rec.set("source", src.read_text().strip())
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        g = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5)
        if g.returncode == 0:
            rec.set("git_commit", g.stdout.strip())
    rec.set("kodak_dir", str(kodak_dir()))
    rec.set("official_dir", str(official_dir()))


def section_pytest_cuda(rec: Recorder, dev, quick: bool, out: Path) -> None:
    log = out / "pytest_cuda.log"
    cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "tests/test_cuda.py", "-v", "-p", "no:cacheprovider",
           "-o", "addopts=", "-rfEsP", "--durations=15", "--color=no"]
    if not missing("pytest_timeout"):
        cmd += ["--timeout", "120"]  # one hanging test must not eat the section
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    rec.set("command", " ".join(cmd[1:]))
    timeout = max(5.0, rec.left() - 3)
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            rc = None
    text = log.read_text(errors="replace")
    outcomes: dict[str, str] = {}
    for m in re.finditer(r"^(tests/\S+::\S+) (PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)", text, re.M):
        outcomes[m.group(1).split("::", 1)[1]] = m.group(2)
    counts: dict[str, int] = {}
    for v in outcomes.values():
        counts[v.lower()] = counts.get(v.lower(), 0) + 1
    rec.set("counts", counts)
    rec.set("returncode", rc)
    rec.set("failures", re.findall(r"^(?:FAILED|ERROR) (\S+(?: - .{0,300})?)$", text, re.M))
    rec.set("skip_reasons", sorted(set(re.findall(r"^SKIPPED \[\d+\] \S+: (.*)$", text, re.M)))[:10])
    rec.set("durations", re.findall(r"^\s*([\d.]+s (?:call|setup)\s+\S+)$", text, re.M)[:15])
    rec.set("outcomes", outcomes)
    if rc is None:
        raise TimeoutError(f"pytest stopped at its time box ({timeout:.0f} s); {counts}")
    if rc not in (0, 5) or counts.get("failed") or counts.get("error"):
        raise RuntimeError(f"pytest exit {rc}: {counts}")


def copy_bandwidth(dev, nbytes: int, repeats: int) -> dict[str, float]:
    """Device copy: bytes read + written per second (best and median of ``repeats``)."""
    import torch

    n = nbytes // 4
    bufs = [torch.empty(n, dtype=torch.float32, device=dev).uniform_(), torch.empty(n, device=dev)]
    t = timed(lambda: bufs[1].copy_(bufs[0]), dev, repeats, warmup=2)
    bufs.clear()
    return {"bytes": nbytes, "best_GBps": 2 * nbytes / t["min_s"] / 1e9,
            "median_GBps": 2 * nbytes / t["median_s"] / 1e9}


# bytes per (B*T*C) element, float32: the least any implementation must move, and what ours moves as written
BIWKV_BYTES = {
    "fwd_min": 12,  # read k, v; write y
    "fwdbwd_min": 32,  # + backward: read k, v, dy; write dk, dv (recomputing, nothing saved)
    "triton_fwd": 48,  # chunk sums: k, v; pass 1: k, v -> fr, fl; pass 2: k, v, fr, fl -> y, ld
    "triton_fwdbwd": 104,  # + 2 sweeps reading k, v, y, ld, g (+ gk, gv once) and writing gk, gv
}


def section_biwkv(rec: Recorder, dev, quick: bool) -> None:
    import torch

    from hpcm.ops import biwkv, numba_available

    if dev.type == "cuda":
        from hpcm.ops import _biwkv_triton
    bw = copy_bandwidth(dev, (64 if quick or dev.type == "cpu" else 1024) * 2**20, 3 if quick else 10)
    rec.set("copy_bandwidth", bw)
    gbps = bw["best_GBps"]
    shapes = [(1, 4096, 96), (2, 512, 144), (1, 256, 640)] if quick else \
        [(1, 98304, 96), (8, 4096, 144), (1, 1536, 640)]
    impls = ["torch"]
    if dev.type == "cuda":
        impls.insert(0, "triton")
    elif numba_available() and not quick:  # (its first call compiles for ~20 s)
        impls.append("fused")
    rec.set("impls", impls)
    repeats = 2 if quick else 10
    rows = []
    for B, T, C in shapes:
        g = torch.Generator().manual_seed(0)
        k = (torch.randn(B, T, C, generator=g) * 1.5).to(dev)
        v = torch.randn(B, T, C, generator=g).to(dev)
        w = (torch.randn(C, generator=g) * 3 / T).to(dev)
        u = (torch.randn(C, generator=g) / T).to(dev)
        n = B * T * C
        outs = {}
        for impl in impls:
            if rec.left() < 5:
                rows.append({"shape": [B, T, C], "impl": impl, "skipped": "out of time"})
                rec.set("rows", rows)
                continue
            row: dict[str, Any] = {"shape": [B, T, C], "impl": impl}
            try:
                def fwd(impl=impl, w=w, u=u, k=k, v=v):
                    with torch.no_grad():
                        return biwkv(w, u, k, v, impl=impl)

                outs[impl] = fwd()
                with peak_memory(dev, row, "fwd_peak_MiB"):
                    row["fwd"] = timed(fwd, dev, repeats)

                def fwdbwd(impl=impl, w=w, u=u, k=k, v=v):
                    args = [t.detach().requires_grad_() for t in (w, u, k, v)]
                    biwkv(*args, impl=impl).sum().backward()

                with peak_memory(dev, row, "fwdbwd_peak_MiB"):
                    row["fwdbwd"] = timed(fwdbwd, dev, max(1, repeats // 2))
                for kind in ("fwd", "fwdbwd"):
                    limit = BIWKV_BYTES[f"{kind}_min"] * n / (gbps * 1e9)
                    row[f"{kind}_limit_s"] = limit
                    row[f"{kind}_x_limit"] = row[kind]["median_s"] / limit
                if impl == "triton":
                    row["triton_traffic_GBps"] = BIWKV_BYTES["triton_fwd"] * n / row["fwd"]["median_s"] / 1e9
                    row["chunk"] = _biwkv_triton.chunk_length(B, T, C)
                    row["chunk_sweep_fwd_ms"] = _chunk_sweep(rec, dev, w, u, k, v, repeats)
                if impl != impls[0] and impls[0] in outs:
                    row[f"max_abs_diff_vs_{impls[0]}"] = float((outs[impl] - outs[impls[0]]).abs().max())
            except Exception as exc:  # one failing path must not hide the others
                row["error"] = f"{type(exc).__name__}: {exc}"[:500]
            rows.append(row)
            rec.set("rows", rows)
        del k, v, outs
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    big = [r for r in rows if r["shape"] == [1, 98304, 96] and r["impl"] == "triton" and "fwd" in r]
    if big:
        rec.set("target_fwd_within_2x_limit_at_1x98304x96", big[0]["fwd_x_limit"] <= 2.0)
    _raise_row_errors(rows)


def _chunk_sweep(rec: Recorder, dev, w, u, k, v, repeats: int) -> dict[str, float]:
    """Median forward time (ms) of the chunked Triton kernel at several chunk lengths (tuning data)."""
    from hpcm.ops import _biwkv_triton

    out: dict[str, float] = {}
    args = [t.float().contiguous() for t in (w, u, k, v)]
    for length in (32, 64, 128, 256, 512, 1024, 4096):
        if length > k.shape[1] or rec.left() < 5:
            continue
        t = timed(lambda length=length: _biwkv_triton.forward(*args, chunk=length), dev, repeats)
        out[str(length)] = 1e3 * t["median_s"]
    return out


CODEC_MODELS = ["hpcm-base", "hpcm-large", "hpcm-phase1", "hpcm-phase2", "hpcm-phase3", "hpcm-phase4",
                "hpcm-multiref-phase2"]
PAPER_BASE_MS = 81.3  # HPCM paper (Table 1), HPCM-Base coding time on its GPU


def _time_codec(model, x, dev, repeats: int) -> dict[str, Any]:
    import torch

    from hpcm.codec.api import deterministic_math

    row: dict[str, Any] = {}
    with torch.no_grad(), deterministic_math():
        enc = model.compress(x)  # warm-up (Triton compilation, cuDNN heuristics, CDF tables)
        model.decompress(enc["strings"], enc["shape"])
        with peak_memory(dev, row, "encode_peak_MiB"):
            row["encode"] = timed(lambda: model.compress(x), dev, repeats, warmup=0)
        with peak_memory(dev, row, "decode_peak_MiB"):
            row["decode"] = timed(lambda: model.decompress(enc["strings"], enc["shape"]), dev, repeats, 0)
        a = model.decompress(enc["strings"], enc["shape"])["x_hat"]
        b = model.decompress(enc["strings"], enc["shape"])["x_hat"]
    row["decode_repeatable"] = bool(torch.equal(a, b))
    row["decode_twice_max_abs_diff"] = float((a.float() - b.float()).abs().max())
    nbytes = sum(len(s) for s in enc["strings"])
    row["bytes"] = nbytes
    row["bpp"] = 8 * nbytes / (x.shape[-2] * x.shape[-1])
    return row


def _codec_rows(rec: Recorder, key: str, names: list[str], x, dev, repeats: int, *, min_left: float,
                image: str | None = None) -> list[dict[str, Any]]:
    """Time compress/decompress of each model (seeded initial weights) on ``x``; rows under ``key``."""
    import torch

    import hpcm

    rows: list[dict[str, Any]] = []
    for name in names:
        if rec.left() < min_left:
            rows.append({"model": name, "skipped": "out of time"})
            rec.set(key, rows)
            continue
        row: dict[str, Any] = {"model": name, **({"image": image} if image else {})}
        try:
            torch.manual_seed(0)
            model = hpcm.create_model(name).eval()
            randomise_memory_output(model)
            row["params_M"] = sum(p.numel() for p in model.parameters()) / 1e6
            row.update(_time_codec(model.to(dev), x, dev, repeats))
            del model
        except Exception as exc:
            row["error"] = f"{type(exc).__name__}: {exc}"[:500]
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        rows.append(row)
        rec.set(key, rows)
    return rows


def section_codec(rec: Recorder, dev, quick: bool) -> None:
    import torch

    reason = missing("constriction")
    if reason:
        raise Skip(reason)
    h, w = (128, 192) if quick else (512, 768)
    x, src = test_image(h, w)
    x = x.to(dev)
    rec.set("image", f"{src} {w}x{h}")
    names = ["hpcm-tiny", "hpcm-phase2-tiny"] if quick else CODEC_MODELS
    repeats = 1 if quick else 3
    rows = _codec_rows(rec, "rows", names, x, dev, repeats, min_left=5 if quick else 12)
    if not quick:  # issue 20 item 2: the same models at 1536x1024 (kodim23 upsampled x2), once each
        x2 = torch.nn.functional.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)
        _codec_rows(rec, "rows_1536x1024", names, x2.clamp(0, 1), dev, 1, min_left=10,
                    image=f"{src} x2 1536x1024")
    by = {r["model"]: r for r in rows if "decode" in r}
    base, p2 = by.get("hpcm-base"), by.get("hpcm-phase2")
    if base and p2:
        rec.set("phase2_vs_base", {
            "decode_time_ratio": p2["decode"]["median_s"] / base["decode"]["median_s"],
            "encode_time_ratio": p2["encode"]["median_s"] / base["encode"]["median_s"],
            "decode_peak_ratio": (p2["decode_peak_MiB"] / base["decode_peak_MiB"]
                                  if base.get("decode_peak_MiB") else None),
            "decode_peak_with_weights_ratio": (p2["decode_peak_MiB_total"] / base["decode_peak_MiB_total"]
                                               if base.get("decode_peak_MiB_total") else None),
            "seed_claim": "phase2: -35 % time, -34 % memory vs baseline",
        })
    if base:
        ours_ms = 1e3 * base["decode"]["median_s"]
        rec.set("base_decode_ms_vs_paper", {"ours_ms": ours_ms, "paper_ms": PAPER_BASE_MS})
    _raise_row_errors(rows)


# Cross-device workers: (presets, CPU threads). Image-major inside each worker, so a time limit cuts
# images, never presets; the Base presets' CPU passes take seconds, the tiny ones' a fraction of one.
CROSSDEV_WORKERS: list[tuple[list[str], int]] = [
    (["hpcm-tiny-vr", "hpcm-small-vr", "hpcm-phase1-tiny", "hpcm-multiref-phase1-tiny"], 2),
    (["hpcm-tiny", "hpcm-phase2-tiny", "hpcm-multiref-phase2-tiny"], 2),
    (["hpcm-phase3-tiny", "hpcm-multiref-phase1-light-tiny", "hpcm-multiref-phase2-accurate-tiny"], 2),
    (["hpcm-phase4-tiny", "hpcm-multiref-phase1-accurate-tiny", "hpcm-multiref-phase2-light-tiny"], 2),
    (["hpcm-base", "hpcm-phase2", "hpcm-phase4", "hpcm-multiref-phase1", "hpcm-multiref-phase1-accurate",
      "hpcm-multiref-phase1-light"], 4),
    (["hpcm-phase1", "hpcm-phase3", "hpcm-multiref-phase2", "hpcm-multiref-phase2-accurate",
      "hpcm-multiref-phase2-light"], 4),
]


def crossdev_workers(only: list[str], cores: int, max_workers: int = 6) -> list[tuple[list[str], int]]:
    """The worker layout: the default one, or ``only``'s presets dealt round-robin over up to
    ``max_workers`` processes that share the cores (a Base-widths-only rerun then spreads its slow CPU
    passes over every worker instead of the two the default layout gives them)."""
    if not only:
        return CROSSDEV_WORKERS
    n = max(1, min(max_workers, len(only)))
    return [(only[i::n], max(1, cores // n)) for i in range(n)]


def section_crossdev(rec: Recorder, dev, quick: bool) -> None:
    """Issue 16 item 8: encode on CUDA, decode on CPU and the reverse, Kodak images, every preset."""
    if dev.type != "cuda":
        raise Skip("needs CUDA: files are written on one device and decoded on the other")
    reason = missing("constriction")
    if reason:
        raise Skip(reason)
    kodak = kodak_dir()
    if kodak is None:
        raise Skip("no Kodak images (.gpu/data/kodak)")
    tmp = Path(tempfile.mkdtemp(prefix="hpcm-crossdev-"))
    limit = max(10.0, rec.left() - 12)  # the workers stop adding images here; killed at the deadline
    only = [p for p in os.environ.get("HPCM_CROSSDEV_PRESETS", "").split(",") if p]  # a rerun's subset
    workers = crossdev_workers(only, os.cpu_count() or 16)
    procs = []
    for i, (presets, threads) in enumerate(workers):
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), HPCM_KODAK_DIR=str(kodak))
        cmd = [sys.executable, str(ROOT / "benchmarks" / "cross_device.py"), "--presets", *presets,
               "--deviation", "--time-limit", f"{limit:.0f}", "--out", str(tmp / f"w{i}.json")]
        log = (tmp / f"w{i}.log").open("w")
        procs.append((subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True), log))
    rec.set("workers", [{"presets": p, "threads": t} for p, t in workers])
    rec.set("kodak", str(kodak))
    for proc, log in procs:
        try:
            proc.wait(timeout=max(1.0, rec.left()))
        except subprocess.TimeoutExpired:
            _kill_group(proc)
        log.close()
    presets: dict[str, Any] = {}
    notes = []
    for i in range(len(workers)):
        with contextlib.suppress(OSError, json.JSONDecodeError):
            res = json.loads((tmp / f"w{i}.json").read_text())
            presets.update(res["presets"])
            rec.set("device_name", res.get("device"))
        tail = (tmp / f"w{i}.log").read_text(errors="replace")[-1500:]
        if "Traceback" in tail:
            notes.append(f"worker {i}: {tail[-600:]}")
    rec.set("presets", presets)
    if notes:
        rec.set("worker_errors", notes)
    cases = sum(r["cases"] for r in presets.values())
    fails = sum(len(r["failures"]) for r in presets.values())
    rec.set("totals", {"presets": len(presets), "cases": cases, "failures": fails,
                       "images_min": min((r["images"] for r in presets.values()), default=0),
                       "max_pixel_diff": max((r["max_pixel_diff"] for r in presets.values()), default=0),
                       "corrections": sum(r["corrections"] for r in presets.values())})
    if fails:
        raise RuntimeError(f"{fails} of {cases} cross-device decodes failed")
    if not presets:
        raise RuntimeError("no worker reported: " + "; ".join(notes)[-600:])


def official_dir() -> Path | None:
    d = os.environ.get("HPCM_OFFICIAL_DIR") or str(ROOT / ".gpu" / "official")
    return Path(d) if Path(d).is_dir() else None


def section_official(rec: Recorder, dev, quick: bool) -> None:
    """Optional hook: the official HPCM-Base code, same random weights, same input, same process and GPU."""
    import importlib

    import torch

    d = official_dir()
    if d is None:
        raise Skip("no official checkout: set HPCM_OFFICIAL_DIR or carry one at .gpu/official (docs/gpu.md)")
    reason = missing("constriction")
    if reason:
        raise Skip(reason)
    import hpcm
    from hpcm.entropy.tables import get_scale_table

    mod_name = os.environ.get("HPCM_OFFICIAL_MODULE", "src.models.HPCM_Base")
    cls_name = os.environ.get("HPCM_OFFICIAL_CLASS", "HPCM")
    for p in (d / "src", d):
        sys.path.insert(0, str(p))
    rec.set("official", f"{d} {mod_name}.{cls_name}")
    official = getattr(importlib.import_module(mod_name), cls_name)()
    torch.manual_seed(0)
    ours = hpcm.create_model("hpcm-base").eval()
    theirs = official.state_dict()
    state = {k: v for k, v in ours.state_dict().items() if k in theirs and theirs[k].shape == v.shape}
    official.load_state_dict(state, strict=False)
    rec.set("load", {"loaded": len(state), "official_keys": len(theirs),
                     "official_not_loaded": [k for k in theirs if k not in state][:20],
                     "ours_not_in_official": [k for k in ours.state_dict() if k not in state][:20]})
    # its CDF tables are built with NumPy/SciPy, so update() runs while the model is still on the CPU (the
    # GPU run found update() failing on CUDA tensors); the buffers then move with the model
    import inspect

    update_error = None
    try:
        if len(inspect.signature(official.update).parameters) >= 1:
            official.update(get_scale_table())
        else:
            official.update()
    except Exception as exc:  # reported with the codec timings; the forward comparison still runs
        update_error = exc
    official.to(dev).eval()
    ours.to(dev)
    h, w = (256, 256) if quick else (512, 768)
    x, src = test_image(h, w)
    x = x.to(dev)
    rec.set("image", f"{src} {w}x{h}")
    with torch.no_grad():
        a, b = ours(x)["x_hat"], official(x)["x_hat"]
        rec.set("forward_max_abs_diff_x_hat", float((a.float() - b.float()).abs().max()))
        rec.set("forward_ms", {
            "ours": 1e3 * timed(lambda: ours(x), dev, 3)["median_s"],
            "official": 1e3 * timed(lambda: official(x), dev, 3)["median_s"],
        })
    try:
        if update_error is not None:
            raise update_error
        rec.set("ours", _time_codec(ours, x, dev, 1 if quick else 3))
        rec.set("official_codec", _time_codec(official, x, dev, 1 if quick else 3))
        o, f = rec.data["ours"], rec.data["official_codec"]
        rec.set("decode_ratio_ours_over_official", o["decode"]["median_s"] / f["decode"]["median_s"])
        rec.set("encode_ratio_ours_over_official", o["encode"]["median_s"] / f["encode"]["median_s"])
        rec.set("target_decode_half_of_official", o["decode"]["median_s"] <= 0.5 * f["decode"]["median_s"])
    except Exception as exc:  # typically the official rANS extension not built for this Python
        rec.set("codec_error", f"{type(exc).__name__}: {exc}"[:500])
        raise RuntimeError(f"official compress/decompress failed (forward timings kept): {exc}") from exc


def _trace_stats(path: Path, wall_s: float) -> dict[str, Any]:
    """Kernel count, summed and merged GPU-busy time from a chrome trace, against the wall time."""
    ev = json.loads(path.read_text()).get("traceEvents", [])
    kern = [e for e in ev if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset") and "dur" in e]
    launches = [e for e in ev if e.get("cat") in ("cuda_runtime", "cuda_driver")  # Triton: cuLaunchKernel
                and "Launch" in str(e.get("name", ""))]
    cpu_ops = [e for e in ev if e.get("cat") == "cpu_op"]
    spans = sorted((float(e["ts"]), float(e["ts"]) + float(e["dur"])) for e in kern)
    busy, end = 0.0, -math.inf
    for s, t in spans:
        if t > end:
            busy += t - max(s, end)
            end = t
    top: dict[str, list[float]] = {}
    for e in kern:
        top.setdefault(str(e.get("name", ""))[:60], []).append(float(e["dur"]))
    top_list = sorted(((k, len(v), sum(v) / 1e3) for k, v in top.items()), key=lambda r: -r[2])[:6]
    return {
        "wall_ms": 1e3 * wall_s,
        "kernels": len(kern),
        "kernel_launch_calls": len(launches),
        "cpu_ops": len(cpu_ops),
        "gpu_busy_ms": busy / 1e3,
        "gpu_busy_fraction": (busy / 1e6) / wall_s if wall_s > 0 else None,
        "mean_kernel_us": (sum(t - s for s, t in spans) / len(spans)) if spans else None,
        "top_kernels_ms": top_list,
    }


def _profile(fn: Callable[[], Any], dev) -> dict[str, Any]:
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    fn()
    fn()
    sync(dev)
    with tempfile.TemporaryDirectory() as td:
        with profile(activities=acts) as prof:
            t0 = time.perf_counter()
            fn()
            sync(dev)
            wall = time.perf_counter() - t0
        trace = Path(td) / "trace.json"
        prof.export_chrome_trace(str(trace))
        return _trace_stats(trace, wall)


def _train_step_fn(model, x, dev, amp: bool, net=None):
    import torch

    from hpcm.train.loss import RateDistortionLoss

    crit = RateDistortionLoss(0.0067)
    opt = torch.optim.Adam(model.parameters(), lr=1e-5)
    net = model if net is None else net

    def step():
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            out = net(x, training=True)
        loss = crit(out, x)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss

    return step


def section_profile(rec: Recorder, dev, quick: bool) -> None:
    import torch

    import hpcm
    from hpcm.train.amp import prepare_bf16

    cases = [("hpcm-tiny", 2, 64)] if quick else [("hpcm-tiny", 8, 256), ("hpcm-base", 8, 256)]
    rows = []
    for name, batch, patch in cases:
        if rec.left() < 6:
            break
        torch.manual_seed(0)
        model = hpcm.create_model(name)
        prepare_bf16(model)
        model.to(dev).train()
        x = torch.rand(batch, 3, patch, patch, device=dev)
        amp = dev.type == "cuda"
        try:
            rows.append({"case": f"train step {name} b{batch} {patch}px {'bf16' if amp else 'fp32'}",
                         **_profile(_train_step_fn(model, x, dev, amp=amp), dev)})
        except Exception as exc:
            rows.append({"case": f"train step {name}", "error": f"{type(exc).__name__}: {exc}"[:400]})
        rec.set("rows", rows)
        del model
    if not missing("constriction") and rec.left() > 8:
        name, (h, w) = ("hpcm-tiny", (128, 192)) if quick else ("hpcm-base", (512, 768))
        torch.manual_seed(0)
        model = hpcm.create_model(name).eval().to(dev)
        x, _ = test_image(h, w)
        x = x.to(dev)
        with torch.no_grad():
            enc = model.compress(x)
            try:
                rows.append({"case": f"decode {name} {w}x{h}",
                             **_profile(lambda: model.decompress(enc["strings"], enc["shape"]), dev)})
                rows.append({"case": f"encode {name} {w}x{h}", **_profile(lambda: model.compress(x), dev)})
            except Exception as exc:
                rows.append({"case": f"codec {name}", "error": f"{type(exc).__name__}: {exc}"[:400]})
        rec.set("rows", rows)
    _raise_row_errors(rows)


TRANSFORMS = ("g_a", "g_s", "h_a", "h_s")


def _train_variants(quick: bool) -> list[dict[str, Any]]:
    """compile: None (eager), "default" / "reduce-overhead" (CUDA graphs): torch.compile of the whole model;
    "transforms": only g_a, g_s, h_a, h_s compiled (the step loop stays eager); "*-eager-backend": dynamo
    tracing without code generation (the CPU dry run)."""
    if quick:
        return [dict(model="hpcm-tiny", batch=2, patch=64, compile=None),
                dict(model="hpcm-tiny", batch=2, patch=64, compile="transforms-eager-backend")]
    v = [dict(model=m, batch=b, patch=256, compile=None) for m in ("hpcm-tiny", "hpcm-base") for b in (8, 16)]
    v += [dict(model="hpcm-base", batch=16, patch=256, compile="transforms"),
          dict(model="hpcm-tiny", batch=16, patch=256, compile="default"),
          dict(model="hpcm-tiny", batch=16, patch=256, compile="reduce-overhead"),
          dict(model="hpcm-base", batch=16, patch=256, compile="default")]
    return v


def train_worker(spec: dict[str, Any], dev_name: str, quick: bool) -> dict[str, Any]:
    """One throughput measurement (run in its own process)."""
    import torch

    import hpcm
    from hpcm.train.amp import prepare_bf16

    dev = torch.device(dev_name)
    torch.manual_seed(0)
    model = hpcm.create_model(spec["model"])
    prepare_bf16(model)
    model.to(dev).train()
    x = torch.rand(spec["batch"], 3, spec["patch"], spec["patch"], device=dev)
    net = None
    mode = spec["compile"]
    if mode:
        import torch._dynamo

        torch._dynamo.reset()
        kw: dict[str, Any] = {"backend": "eager"} if mode.endswith("eager-backend") else {}
        if mode.startswith("transforms"):
            for name in TRANSFORMS:  # in place: the step loop stays eager
                getattr(model, name).compile(**kw)
        else:
            net = torch.compile(model, **(kw or {"mode": mode}))
    step = _train_step_fn(model, x, dev, amp=dev.type == "cuda", net=net)
    res: dict[str, Any] = {}
    t0 = time.perf_counter()
    step()
    sync(dev)
    res["first_step_s"] = time.perf_counter() - t0  # includes compilation
    step()
    with peak_memory(dev, res, "peak_MiB"):
        t = timed(step, dev, 2 if quick else 8, warmup=1)
    res["s_per_step"] = t["median_s"]
    res["images_per_s"] = spec["batch"] / t["median_s"]
    loss = float(step().detach())
    res["loss_finite"] = math.isfinite(loss)
    if mode:
        with contextlib.suppress(Exception):
            from torch._dynamo.utils import counters

            gb = counters.get("graph_break", {})
            res["graph_breaks"] = int(sum(gb.values()))
            res["graph_break_reasons"] = [str(k)[:160] for k in list(gb)[:5]]
    return res


def section_train(rec: Recorder, dev, quick: bool, out: Path) -> None:
    if missing("pytorch_msssim"):
        raise Skip(missing("pytorch_msssim"))
    rows = []
    for spec in _train_variants(quick):
        left = rec.left()
        row = dict(spec)
        min_needed = 8 if quick else (15 if not spec["compile"] else 40)
        if left < min_needed:
            row["skipped"] = f"out of time ({left:.0f} s left)"
            rows.append(row)
            rec.set("rows", rows)
            continue
        box = left - 2 if spec["compile"] else min(left - 2, 40.0)
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tf:
            res_path = Path(tf.name)
        cmd = [sys.executable, __file__, "--train-worker", json.dumps(spec), "--device", str(dev),
               "--result", str(res_path)] + (["--quick"] if quick else [])
        rc, tail = _run_child(cmd, box, out / "suite.log", f"train {spec}")
        try:
            row.update(json.loads(res_path.read_text()) if res_path.stat().st_size else {})
        except (OSError, json.JSONDecodeError):
            pass
        res_path.unlink(missing_ok=True)
        if rc is None:
            row["error"] = f"timeout after {box:.0f} s"
        elif rc != 0:
            row["error"] = tail[-400:]
        rows.append(row)
        rec.set("rows", rows)
    _raise_row_errors(rows)


# ============================================================================================== driver


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def _run_child(cmd: list[str], timeout: float, log: Path, title: str) -> tuple[int | None, str]:
    """Run ``cmd`` in its own process group, output appended to ``log``; (exit code or None, output tail)."""
    with log.open("a") as fh:
        fh.write(f"\n===== {title} ({time.strftime('%H:%M:%S')}, box {timeout:.0f} s)\n")
        fh.flush()
        start = fh.tell()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc: int | None = proc.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            rc = None
    with log.open("rb") as fh:
        fh.seek(start)
        tail = fh.read()[-3000:].decode(errors="replace")
    return rc, tail


def run_section(name: str, dev_name: str, quick: bool, result: Path, deadline: float, out: Path) -> int:
    """Child entry point: run one section, write {"status", "reason", "data"} to ``result``."""
    import torch

    if name != "env" and dev_name == "cuda" and not torch.cuda.is_available():
        result.write_text(json.dumps({"status": "skipped", "reason": "CUDA is not available"}))
        return 0
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, min(8, os.cpu_count() or 1)))
    dev = torch.device(dev_name)
    data_path = result.with_suffix(".data.json")
    rec = Recorder(data_path, deadline)
    fn = globals()[f"section_{name}"]
    status, reason = "ok", None
    if os.environ.get("HPCM_GPU_SUITE_HANG") == name:  # tests of the time box
        time.sleep(1e6)
    if os.environ.get("HPCM_GPU_SUITE_CRASH") == name:  # tests of crash isolation
        os.abort()
    try:
        if name in ("pytest_cuda", "train"):
            fn(rec, dev, quick, out)
        else:
            fn(rec, dev, quick)
    except Skip as exc:
        status, reason = "skipped", str(exc)
    except Exception as exc:
        status, reason = "failed", f"{type(exc).__name__}: {exc}"[:1000]
        traceback.print_exc()
    result.write_text(json.dumps({"status": status, "reason": reason}))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="output folder (results.json, summary.md, logs)")
    ap.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    ap.add_argument("--quick", action="store_true", help="tiny shapes and models (the CPU dry run)")
    ap.add_argument("--budget", type=float, default=DEFAULT_BUDGET, help="seconds for the whole suite")
    ap.add_argument("--only", default="", help="comma-separated section names")
    ap.add_argument("--boxes", default="", help="time boxes to override, e.g. train=200,codec=60")
    ap.add_argument("--section", help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--train-worker", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)

    if a.train_worker:
        res = train_worker(json.loads(a.train_worker), a.device, a.quick)
        a.result.write_text(json.dumps(res, default=_jsonable))
        return 0
    if a.section:
        return run_section(a.section, a.device, a.quick, a.result, a.deadline, a.out)
    if a.out is None:
        ap.error("--out is required")
    if a.device is None:
        import torch

        a.device = "cuda" if torch.cuda.is_available() else "cpu"
    return drive(a)


def drive(a: argparse.Namespace) -> int:
    out: Path = a.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "suite.log").write_text("")
    t_start = time.time()
    end = t_start + a.budget
    only = {s for s in a.only.split(",") if s}
    boxes = {k: float(v) for k, _, v in (item.partition("=") for item in a.boxes.split(",") if item)}
    unknown = (only | set(boxes)) - {name for name, _, _ in SECTIONS}
    if unknown:
        raise SystemExit(f"gpu_suite: unknown sections {sorted(unknown)}")
    results: dict[str, Any] = {
        "meta": {"device": a.device, "quick": a.quick, "budget_s": a.budget,
                 "started_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                 "command": " ".join(sys.argv)},
        "sections": {},
    }
    tmp = Path(tempfile.mkdtemp(prefix="hpcm-gpu-suite-"))
    for name, box_full, box_quick in SECTIONS:
        if only and name not in only:
            continue
        box = boxes.get(name, box_quick if a.quick else box_full)
        left = end - time.time()
        entry: dict[str, Any] = {"status": "skipped", "reason": None, "seconds": 0.0, "data": {}}
        if left < 5:
            entry["reason"] = f"suite budget used up ({a.budget:.0f} s)"
        else:
            box = min(box, left)
            deadline = time.time() + box - 3  # the section's loops stop here; its process is killed at box
            result = tmp / f"{name}.json"
            cmd = [sys.executable, __file__, "--section", name, "--device", a.device, "--result", str(result),
                   "--deadline", str(deadline), "--out", str(out)] + (["--quick"] if a.quick else [])
            t0 = time.time()
            print(f"[gpu_suite] {name} (box {box:.0f} s) ...", flush=True)
            rc, tail = _run_child(cmd, box, out / "suite.log", f"section {name}")
            entry["seconds"] = round(time.time() - t0, 1)
            data_path = result.with_suffix(".data.json")
            with contextlib.suppress(OSError, json.JSONDecodeError):
                entry["data"] = json.loads(data_path.read_text())
            if rc is None:
                entry["status"], entry["reason"] = "timeout", f"killed at its {box:.0f} s time box"
            elif result.is_file():
                entry.update(json.loads(result.read_text()))
            else:
                entry["status"], entry["reason"] = "failed", f"exit {rc}: {tail[-600:]}"
            print(f"[gpu_suite] {name}: {entry['status']} in {entry['seconds']} s"
                  + (f" ({entry['reason'][:200]})" if entry["reason"] else ""), flush=True)
        results["sections"][name] = entry
        if name == "env":
            results["meta"].update({k: entry["data"].get(k) for k in (
                "device_name", "driver", "torch", "triton", "cuda_runtime", "cudnn", "python", "date_utc",
                "git_commit", "source") if k in entry["data"]})
        results["meta"]["elapsed_s"] = round(time.time() - t_start, 1)
        _write(out, results)
    print(f"[gpu_suite] done in {time.time() - t_start:.1f} s; {out / 'summary.md'}", flush=True)
    bad = [n for n, e in results["sections"].items() if e["status"] in ("failed", "timeout")]
    return 1 if bad else 0


def _write(out: Path, results: dict[str, Any]) -> None:
    (out / "results.json").write_text(json.dumps(results, indent=1, default=_jsonable) + "\n")
    try:
        text = summary_markdown(results)
    except Exception as exc:  # the summary must never lose the JSON
        text = f"# GPU suite\n\nsummary failed: {exc!r}; see results.json\n"
    (out / "summary.md").write_text(text)


# ============================================================================================= summary


def _ms(t: dict | None) -> str:
    return f"{1e3 * t['median_s']:.2f}" if isinstance(t, dict) and "median_s" in t else "–"


def _f(x: Any, fmt: str = ".2f") -> str:
    if isinstance(x, int | float) and not isinstance(x, bool):
        return format(x, fmt)
    return "–" if x is None else str(x)


def _header(*cols: str) -> list[str]:
    return ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]


def _row(*cells: Any) -> str:
    return "| " + " | ".join(str(c).replace("|", "/").replace("\n", " ") for c in cells) + " |"


def summary_markdown(results: dict[str, Any]) -> str:
    m = results["meta"]
    S = results["sections"]
    lines = [f"# GPU suite: {m.get('device_name', m['device'])}", ""]
    lines += ["| | |", "|---|---|"]
    for k in ("device_name", "driver", "torch", "cuda_runtime", "cudnn", "triton", "python", "date_utc",
              "git_commit", "quick", "budget_s", "elapsed_s"):
        if k in m:
            lines.append(f"| {k} | {m[k]} |")
    if m.get("source"):
        lines.append(f"| source | {str(m['source']).replace(chr(10), '; ')} |")
    lines += ["", "## Sections", "", "| section | status | seconds | note |", "|---|---|---|---|"]
    for name, e in S.items():
        note = (e.get("reason") or "").replace("\n", " ").replace("|", "/")[:200]
        lines.append(f"| {name} | {e['status']} | {e['seconds']} | {note} |")

    d = S.get("pytest_cuda", {}).get("data", {})
    if d:
        lines += ["", "## Correctness on CUDA (pytest -m cuda)", "", f"counts: {d.get('counts')}"]
        for f in d.get("failures", [])[:20]:
            lines.append(f"- FAILED {f}")
        for r in d.get("skip_reasons", [])[:5]:
            lines.append(f"- skipped: {r}")

    d = S.get("biwkv", {}).get("data", {})
    if d:
        bw = d.get("copy_bandwidth", {})
        lines += ["", "## Bi-WKV", "",
                  f"copy bandwidth (read+write): {_f(bw.get('best_GBps'), '.0f')} GB/s best. Limit = least "
                  "bytes moved (fwd 12, fwd+bwd 32 bytes per B·T·C element) ÷ that bandwidth.", ""]
        lines += _header("(B, T, C)", "impl", "fwd ms", "fwd × limit", "fwd+bwd ms", "fwd+bwd × limit",
                         "fwd peak MiB", "note")
        for r in d.get("rows", []):
            note = r.get("error") or r.get("skipped") or ", ".join(
                f"{k} {v:.2e}" for k, v in r.items() if k.startswith("max_abs_diff"))
            lines.append(_row(tuple(r["shape"]), r["impl"], _ms(r.get("fwd")), _f(r.get("fwd_x_limit")),
                              _ms(r.get("fwdbwd")), _f(r.get("fwdbwd_x_limit")),
                              _f(r.get("fwd_peak_MiB"), ".0f"), note))
        if "target_fwd_within_2x_limit_at_1x98304x96" in d:
            lines.append(f"\ntarget (Triton fwd within 2× of the limit at (1, 98304, 96)): "
                         f"{d['target_fwd_within_2x_limit_at_1x98304x96']}")

    d = S.get("codec", {}).get("data", {})
    if d:
        lines += ["", f"## Codec latency ({d.get('image')}, random weights, batch 1)", ""]
        lines += _header("model", "params M", "encode ms", "decode ms", "encode peak MiB", "decode peak MiB",
                         "bpp", "note")
        lines.insert(-2, "Peak MiB: CUDA memory allocated above the resident weights "
                         "(totals in results.json).\n")
        for r in d.get("rows", []):
            note = r.get("error") or r.get("skipped") or ("" if r.get("decode_repeatable", True) else
                                                          "decode NOT repeatable")
            lines.append(_row(r["model"], _f(r.get("params_M"), ".1f"), _ms(r.get("encode")),
                              _ms(r.get("decode")),
                              _f(r.get("encode_peak_MiB"), ".0f"), _f(r.get("decode_peak_MiB"), ".0f"),
                              _f(r.get("bpp"), ".3f"), note))
        if "phase2_vs_base" in d:
            p = d["phase2_vs_base"]
            lines.append(f"\nphase2 / base: decode time × {_f(p['decode_time_ratio'])}, encode time × "
                         f"{_f(p['encode_time_ratio'])}, decode peak memory × {_f(p['decode_peak_ratio'])} "
                         f"(with weights × {_f(p.get('decode_peak_with_weights_ratio'))}; {p['seed_claim']})")
        if "base_decode_ms_vs_paper" in d:
            p = d["base_decode_ms_vs_paper"]
            lines.append(f"\nhpcm-base decode {_f(p['ours_ms'], '.1f')} ms vs the paper's {p['paper_ms']} ms "
                         "(different GPU)")

    d = S.get("crossdev", {}).get("data", {})
    if d.get("presets"):
        t = d.get("totals", {})
        lines += ["", "## Cross-device exactness (encode CUDA → decode CPU and the reverse)", "",
                  f"totals: {t}", "",
                  "| preset | trained | images | cases | failures | corrections | max pixel diff | "
                  "max abs Δσ CUDA | max abs Δμ CUDA | rel Δμ CUDA (format 4 metric; δ_μ 3e-5) |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for name, r in d["presets"].items():
            dev_ = r.get("cuda_deviation") or {}
            lines.append(f"| {name} | {r.get('trained')} | {r['images']} | {r['cases']} | "
                         f"{len(r['failures'])} | {r['corrections']} | {r['max_pixel_diff']} | "
                         f"{dev_.get('dsigma', '–')} | {dev_.get('dmu', '–')} | "
                         f"{dev_.get('rel_dmu_v4', '–')} |")
        for name, r in d["presets"].items():
            for f in r["failures"][:3]:
                lines.append(f"- {name}: {f}")

    d = S.get("codec", {}).get("data", {})
    if d.get("rows_1536x1024"):
        lines += ["", "## Codec at 1536x1024 (one run each after a warm-up)", "",
                  "| model | encode ms | decode ms | encode peak MiB | decode peak MiB | bpp |",
                  "|---|---|---|---|---|---|"]
        for r in d["rows_1536x1024"]:
            if "decode" not in r:
                lines.append(f"| {r['model']} | {r.get('skipped') or r.get('error', '')[:80]} | | | | |")
                continue
            lines.append(f"| {r['model']} | {_ms(r['encode'])} | {_ms(r['decode'])} | "
                         f"{r.get('encode_peak_MiB') or 0:.0f} | {r.get('decode_peak_MiB') or 0:.0f} | "
                         f"{r['bpp']:.4f} |")

    e = S.get("official", {})
    if e:
        d = e.get("data", {})
        lines += ["", "## Official HPCM-Base, same weights and input", ""]
        if e["status"] == "skipped":
            lines.append(f"skipped: {e.get('reason')}")
        else:
            lines.append(f"- forward ms: {d.get('forward_ms')}; max |x̂ ours − official| "
                         f"{_f(d.get('forward_max_abs_diff_x_hat'), '.2e')}")
            if "ours" in d and "official_codec" in d:
                o, f = d["ours"], d["official_codec"]
                lines.append(f"- encode ms ours {_ms(o.get('encode'))} / official {_ms(f.get('encode'))}; "
                             f"decode ms ours {_ms(o.get('decode'))} / official {_ms(f.get('decode'))}; "
                             f"ratio {_f(d.get('decode_ratio_ours_over_official'))} (target ≤ 0.5)")
            if d.get("codec_error"):
                lines.append(f"- codec error: {d['codec_error']}")

    d = S.get("profile", {}).get("data", {})
    if d:
        lines += ["", "## Kernel launches (one profiled call after 2 warm-ups)", ""]
        lines += _header("case", "wall ms", "kernels", "launch calls", "GPU busy ms", "busy fraction",
                         "mean kernel µs", "cpu ops")
        for r in d.get("rows", []):
            if "error" in r:
                lines.append(_row(r["case"], "error: " + r["error"][:120], "", "", "", "", "", ""))
                continue
            lines.append(_row(r["case"], _f(r.get("wall_ms"), ".1f"), r.get("kernels"),
                              r.get("kernel_launch_calls"),
                              _f(r.get("gpu_busy_ms"), ".1f"), _f(r.get("gpu_busy_fraction")),
                              _f(r.get("mean_kernel_us"), ".1f"), r.get("cpu_ops")))

    d = S.get("train", {}).get("data", {})
    if d:
        lines += ["", "## Training throughput (bf16 autocast on CUDA; one fixed random batch)", ""]
        lines += _header("model", "batch", "patch", "compile", "images/s", "s/step", "first step s",
                         "peak MiB", "graph breaks", "note")
        for r in d.get("rows", []):
            note = (r.get("error") or r.get("skipped") or "")[-160:]
            lines.append(_row(r["model"], r["batch"], r["patch"], r["compile"] or "eager",
                              _f(r.get("images_per_s"), ".1f"), _f(r.get("s_per_step"), ".3f"),
                              _f(r.get("first_step_s"), ".1f"), _f(r.get("peak_MiB"), ".0f"),
                              _f(r.get("graph_breaks"), "d"), note))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
