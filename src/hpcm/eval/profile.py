"""``hpcm profile``: parameters, kMACs/pixel, latency and peak memory of model variants across image sizes.

Per model (a registered preset, built with ``hpcm.create_model``: the initial weights, which is enough
for cost) and per size:

- **params**: number of parameters (buffers excluded);
- **kMACs/pixel**: ``torch.utils.flop_counter.FlopCounterMode`` over one eval-mode ``forward`` on a random
  input of the size padded to ``model.size_multiple``; MACs = FLOPs / 2; divided by the padded pixel
  count and 1e3 (``spec/hpcm.md`` §10.2; at 256×256 this is the paper's number);
- **latency**: wall clock, one warm-up call then ``repeat`` timed calls, median reported (min kept in the
  JSON): ``forward`` under ``torch.no_grad`` (CUDA synchronised), ``compress_image`` and
  ``decompress_image`` (the full codec: padding, entropy coding on the CPU, container) on a deterministic
  smooth synthetic image of exactly that size;
- **peak memory**: on CUDA, ``torch.cuda.max_memory_allocated`` minus the allocation before the call; on
  CPU, the growth of the process's resident set: Linux's peak-RSS counter (``VmHWM``) is reset through
  ``/proc/self/clear_refs`` right before the call, after ``gc.collect()`` and glibc ``malloc_trim(0)``
  (with a fixed mmap threshold, so freed tensors go back to the OS), and the reported number is
  ``VmHWM − VmRSS`` before the call. It counts activations, temporaries and coder buffers, not the
  weights already resident, and includes allocator overhead. Where that interface is missing it is
  reported as ``null``.

The latency-vs-pixels exponent is the least-squares slope of log(latency) on log(pixels).
"""

from __future__ import annotations

import ctypes
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

OPS = ("forward", "compress", "decompress")


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """``"256,512,768x512"`` → [(H, W)]: ``N`` is N×N, ``WxH`` is width × height (Kodak is 768x512)."""
    sizes = []
    for item in text.replace(" ", "").split(","):
        if not item:
            continue
        if "x" in item.lower():
            w, h = item.lower().split("x", 1)
            sizes.append((int(h), int(w)))
        else:
            sizes.append((int(item), int(item)))
    if not sizes or any(h <= 0 or w <= 0 for h, w in sizes):
        raise ValueError(f"bad --sizes {text!r}")
    return sizes


def synthetic_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Deterministic smooth (H, W, 3) uint8 test image: bilinear-upsampled coarse noise plus fine grain."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, max(2, height // 32), max(2, width // 32), generator=g)
    base = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    grain = 0.03 * torch.randn(1, 3, height, width, generator=g)
    img = ((base + grain).clamp(0, 1) * 255).round().to(torch.uint8)
    return img[0].permute(1, 2, 0).numpy().copy()


# ---------------------------------------------------------------- memory
_LIBC: Any = None


def _libc() -> Any:
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL("libc.so.6")
            _LIBC.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD = 1 MiB, fixed: big buffers are mmap'd and unmapped
        except (OSError, AttributeError):
            _LIBC = False
    return _LIBC


def _status_kb(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class PeakMemory:
    """Context manager measuring the peak memory growth (MiB) of the code inside it (see module doc)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.mib: float | None = None

    def __enter__(self) -> PeakMemory:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return self
        libc = _libc()
        if libc:
            libc.malloc_trim(0)
        self._base = None
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")  # reset VmHWM to the current RSS
            self._base = _status_kb("VmRSS")
        except OSError:
            pass
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mib = (torch.cuda.max_memory_allocated(self.device) - self._base) / 2**20
        elif self._base is not None:
            peak = _status_kb("VmHWM")
            self.mib = None if peak is None else max(0, peak - self._base) / 1024


# ---------------------------------------------------------------- measurements
def count_params(model: torch.nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in model.parameters())


def forward_kwargs(model: torch.nn.Module) -> dict[str, Any]:
    """Extra ``forward`` arguments: a variable-rate model runs at the codec's default quality."""
    from hpcm.codec.api import DEFAULT_VR_QUALITY
    from hpcm.models.protocol import is_variable_rate

    if not is_variable_rate(model):
        return {}

    return {"quality": DEFAULT_VR_QUALITY}


@torch.no_grad()
def count_macs(model: torch.nn.Module, height: int, width: int, device: torch.device) -> float:
    """MACs of one eval forward on a random (1, 3, H, W) input (FLOPs / 2, FlopCounterMode)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.rand(1, 3, height, width, device=device)
    counter = FlopCounterMode(display=False)
    with counter:
        model(x, training=False, **forward_kwargs(model))
    return counter.get_total_flops() / 2.0


def _timed(fn: Callable[[], Any], device: torch.device, repeat: int) -> tuple[list[float], Any, float | None]:
    """Warm-up call, then ``repeat`` timed calls; returns (seconds, last result, peak memory MiB)."""
    result = fn()
    times = []
    peak: float | None = None
    for i in range(repeat):
        if i == 0:
            mem = PeakMemory(device)
            with mem:
                t0 = time.perf_counter()
                result = fn()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                times.append(time.perf_counter() - t0)
            peak = mem.mib
        else:
            t0 = time.perf_counter()
            result = fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - t0)
    return times, result, peak


@dataclass
class ProfileRow:
    """One model at one size."""

    model: str
    height: int
    width: int
    padded: tuple[int, int]
    params: int
    kmacs_per_pixel: float
    times: dict[str, float] = field(default_factory=dict)  # median seconds per op
    times_min: dict[str, float] = field(default_factory=dict)
    peak_mib: dict[str, float | None] = field(default_factory=dict)
    bpp: float | None = None
    roundtrip_exact: bool | None = None

    @property
    def pixels(self) -> int:
        return self.height * self.width


def profile_model(
    name: str,
    sizes: Sequence[tuple[int, int]],
    *,
    device: str = "cpu",
    repeat: int = 3,
    codec: bool = True,
    factory: Callable[[str], torch.nn.Module] | None = None,
    log: Callable[[str], None] | None = None,
) -> list[ProfileRow]:
    """Profile preset ``name`` (``factory(name)``, default ``hpcm.create_model``) at each (H, W)."""
    if factory is None:
        import hpcm

        factory = hpcm.create_model
    dev = torch.device(device)
    model = factory(name).to(dev).eval()
    from hpcm.models.protocol import size_multiple

    multiple = size_multiple(model)
    params = count_params(model)
    rows = []
    for h, w in sizes:
        ph, pw = -(-h // multiple) * multiple, -(-w // multiple) * multiple
        macs = count_macs(model, ph, pw, dev)
        row = ProfileRow(model=name, height=h, width=w, padded=(ph, pw), params=params,
                         kmacs_per_pixel=macs / (ph * pw) / 1e3)
        x = torch.rand(1, 3, ph, pw, device=dev)

        def forward(x: torch.Tensor = x, m: torch.nn.Module = model) -> Any:
            with torch.no_grad():
                return m(x, training=False, **forward_kwargs(m))

        _record(row, "forward", *_timed(forward, dev, repeat))
        del x
        if codec:
            from hpcm.codec.api import compress_image, decompress_image

            image = synthetic_image(h, w)
            data = _record(row, "compress",
                           *_timed(lambda i=image, m=model: compress_image(m, i), dev, repeat))
            row.bpp = 8.0 * len(data) / (h * w)
            decoded = _record(row, "decompress",
                              *_timed(lambda d=data, m=model: decompress_image(d, m), dev, repeat))
            row.roundtrip_exact = bool(np.array_equal(decoded, decompress_image(data, model))
                                       and decoded.shape == image.shape)
        if log:
            log(format_row(row))
        rows.append(row)
    return rows


def _record(row: ProfileRow, op: str, times: list[float], result: Any, peak: float | None) -> Any:
    row.times[op], row.times_min[op], row.peak_mib[op] = statistics.median(times), min(times), peak
    return result


def fit_exponent(pixels: Sequence[float], seconds: Sequence[float]) -> float:
    """Least-squares slope of log(seconds) on log(pixels) (NaN with fewer than two distinct sizes)."""
    pts = [(math.log(p), math.log(s)) for p, s in zip(pixels, seconds) if p > 0 and s > 0]
    if len({p for p, _ in pts}) < 2:
        return math.nan
    slope, _ = np.polyfit([p for p, _ in pts], [s for _, s in pts], 1)
    return float(slope)


def exponents(rows: Sequence[ProfileRow]) -> dict[str, dict[str, float]]:
    """{model: {op: fitted exponent}}."""
    out: dict[str, dict[str, float]] = {}
    for name in dict.fromkeys(r.model for r in rows):
        mine = [r for r in rows if r.model == name]
        out[name] = {op: fit_exponent([r.pixels for r in mine if op in r.times],
                                      [r.times[op] for r in mine if op in r.times])
                     for op in OPS if any(op in r.times for r in mine)}
    return out


# ---------------------------------------------------------------- reports
def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def format_row(r: ProfileRow) -> str:
    """One log line."""
    parts = [f"{r.model} {r.width}x{r.height}: {r.kmacs_per_pixel:.2f} kMACs/px"]
    parts += [f"{op} {r.times[op]:.3f}s" for op in OPS if op in r.times]
    return ", ".join(parts)


#: What the profile's bpp is of (said with every bpp printed: it is not a compression result).
BPP_NOTE = ("bpp: of a deterministic smooth synthetic image of that size (hpcm.eval.profile.synthetic_image, "
            "seed 0), coded with the preset's initial (untrained) weights; a cost check, not a "
            "compression result")


def markdown_table(rows: Sequence[ProfileRow]) -> str:
    """Markdown table of the rows, then the fitted exponents."""
    head = ("| model | size (W×H) | params (M) | kMACs/px | forward (s) | compress (s) | decompress (s) "
            "| bpp (synthetic image) | peak fwd (MiB) | peak enc (MiB) | peak dec (MiB) |")
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        lines.append(
            f"| {r.model} | {r.width}×{r.height} | {r.params / 1e6:.3f} | {r.kmacs_per_pixel:.2f} | "
            f"{_fmt(r.times.get('forward'), '.3f')} | {_fmt(r.times.get('compress'), '.3f')} | "
            f"{_fmt(r.times.get('decompress'), '.3f')} | {_fmt(r.bpp, '.4f')} | "
            f"{_fmt(r.peak_mib.get('forward'), '.0f')} | {_fmt(r.peak_mib.get('compress'), '.0f')} | "
            f"{_fmt(r.peak_mib.get('decompress'), '.0f')} |"
        )
    if any(r.bpp is not None for r in rows):
        lines += ["", BPP_NOTE + "."]
    exps = exponents(rows)
    lines += ["", "Latency ∝ pixels^k, fitted k:", "", "| model | " + " | ".join(OPS) + " |",
              "|---|" + "---|" * len(OPS)]
    for name, by_op in exps.items():
        lines.append(f"| {name} | " + " | ".join(_fmt(by_op.get(op), ".2f") for op in OPS) + " |")
    return "\n".join(lines)


def plot_latency(rows: Sequence[ProfileRow], output: str | os.PathLike[str]) -> Path:
    """Log–log plot of latency against pixels, one line per model and operation, with fitted exponents."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5.2))
    exps = exponents(rows)
    styles = {"forward": "-", "compress": "--", "decompress": ":"}
    colors = plt.get_cmap("tab10").colors
    for i, name in enumerate(dict.fromkeys(r.model for r in rows)):
        mine = sorted((r for r in rows if r.model == name), key=lambda r: r.pixels)
        for op in OPS:
            pts = [(r.pixels, r.times[op]) for r in mine if op in r.times]
            if not pts:
                continue
            k = exps[name].get(op, math.nan)
            ax.plot([p for p, _ in pts], [s for _, s in pts], styles[op], marker="o",
                    color=colors[i % len(colors)], label=f"{name} {op} (k={_fmt(k, '.2f')})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("pixels")
    ax.set_ylabel("latency (s)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def environment(device: str) -> dict[str, Any]:
    """Where the numbers come from."""
    env = {"python": platform.python_version(), "torch": torch.__version__, "machine": platform.machine(),
           "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": device}
    if device.startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return env


def write_report(rows: Sequence[ProfileRow], out_dir: str | os.PathLike[str], *, device: str,
                 repeat: int) -> dict[str, Path]:
    """Write ``profile.json``, ``profile.md`` and ``latency.png`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"environment": environment(device), "repeat": repeat, "bpp_note": BPP_NOTE,
           "exponents": exponents(rows),
           "rows": [{**asdict(r), "pixels": r.pixels} for r in rows], "argv": sys.argv[1:]}
    paths = {"json": out / "profile.json", "markdown": out / "profile.md", "plot": out / "latency.png"}
    paths["json"].write_text(json.dumps(doc, indent=2) + "\n")
    env = doc["environment"]
    header = (f"Profile on {env['device']} ({env['cpu_count']} CPUs, torch {env['torch']}, "
              f"{env['torch_threads']} threads); median of {repeat} runs after one warm-up.\n\n")
    paths["markdown"].write_text(header + markdown_table(rows) + "\n")
    plot_latency(rows, paths["plot"])
    return paths
