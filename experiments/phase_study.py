"""The measured phase study: baseline vs RWKV Phase 1–4 vs multi-reference Phase 2 (all ``-tiny``).

Re-runnable end to end; every stage leaves a JSON marker so a later session continues with ``--resume``:

1. **train** each (variant, quality) with identical data, seed, steps, batch, patch and λ through the
   project's own ``hpcm train`` (a subprocess ``python -m hpcm train``; run folder
   ``OUT/<variant>/q<Q>/``, marker ``train.done.json``). No validation set is given, so nothing is selected
   on Kodak: the exported weights are ``checkpoint_last`` (the weights after exactly ``--steps`` steps);
2. **export** with ``hpcm export`` (``model.safetensors`` + ``.json``; marker ``export.done.json``);
3. **eval** every exported model on Kodak with real files (``hpcm.eval.runner.evaluate``:
   ``compress_image`` → bytes → ``decompress_image``; marker/result ``eval.json``);
4. **profile** every variant (``hpcm.eval.profile.profile_model``, trained weights of the highest quality)
   at 768×512: parameters, kMACs/pixel, encode/decode time, peak memory (``OUT/profile/<variant>.json``);
5. **report**: per-variant CompressAI-schema JSONs, BD-rate (PSNR) against the baseline
   (``hpcm.eval.bdrate``), per-λ deltas, RD and training-loss plots, ``summary.json`` and the Markdown
   report (``--report``; raw files in the folder of the same stem next to it).

Usage (see ``docs/results/phase_study.md``)::

    OMP_NUM_THREADS=1 python experiments/phase_study.py --steps 2000 --batch-size 8 --patch-size 128
    python experiments/phase_study.py --resume            # continue an interrupted study
    python experiments/phase_study.py --report-only       # rebuild the report from OUT
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
VARIANTS = (
    "hpcm-tiny",
    "hpcm-phase1-tiny",
    "hpcm-phase2-tiny",
    "hpcm-phase3-tiny",
    "hpcm-phase4-tiny",
    "hpcm-multiref-phase2-tiny",
)
BASELINE = "hpcm-tiny"
PROFILE_SIZE = (512, 768)  # (H, W): a landscape Kodak image
MARKER_VERSION = 1
NARROW_OVERLAP_DB = 0.5  # BD-rates over a narrower common PSNR range are flagged as dominated by noise


class StudyError(RuntimeError):
    """A stage failed or the output folder holds an incompatible study."""


# ------------------------------------------------------------------------------------------ markers
def write_json(path: Path, doc: Any) -> Path:
    """Write ``doc`` as indented JSON atomically (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True, allow_nan=True) + "\n")
    os.replace(tmp, path)
    return path


def read_json(path: Path) -> Any:
    """The JSON document at ``path``, or ``None`` when the file is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def marker_matches(path: Path, settings: dict[str, Any]) -> bool:
    """True when the stage marker at ``path`` exists and was written for exactly ``settings``."""
    doc = read_json(path)
    return isinstance(doc, dict) and doc.get("version") == MARKER_VERSION and doc.get("settings") == settings


def write_marker(path: Path, settings: dict[str, Any], **result: Any) -> Path:
    """Record that a stage finished for ``settings`` (plus what it produced)."""
    return write_json(path, {"version": MARKER_VERSION, "settings": settings, **result})


# ------------------------------------------------------------------------------------------ settings
def run_dir(out: Path, variant: str, quality: int) -> Path:
    """Run folder of one (variant, quality)."""
    return out / variant / f"q{quality}"


def init_path(args: argparse.Namespace, quality: int) -> Path | None:
    """The warm-start weights of ``quality`` (``--init-from`` with ``{q}`` filled in), or ``None``."""
    if not args.init_from:
        return None
    return Path(args.init_from.format(q=quality)).resolve()


def train_settings(args: argparse.Namespace, variant: str, quality: int) -> dict[str, Any]:
    """Everything that determines the trained weights of one run (compared by the resume markers)."""
    from hpcm.train.loss import lambda_for

    return {
        "model": variant,
        "quality": quality,
        "lmbda": lambda_for(quality, "mse"),
        "metric": "mse",
        "data": [str(Path(d).resolve()) for d in args.data],
        "steps": args.steps,
        "batch_size": args.batch_size,
        "patch_size": args.patch_size,
        "seed": args.seed,
        "lr": args.lr,
        "downscale_prob": args.downscale_prob,
        "init_from": args.init_files.get(quality),
    }


def train_command(args: argparse.Namespace, variant: str, quality: int, resume: bool) -> list[str]:
    """``python -m hpcm train ...`` of one run."""
    s = train_settings(args, variant, quality)
    cmd = [sys.executable, "-m", "hpcm", "train", "--model", variant, "--data", *s["data"],
           "--out", str(run_dir(args.out, variant, quality)), "--steps", str(args.steps),
           "--batch-size", str(args.batch_size), "--patch-size", str(args.patch_size),
           "--quality", str(quality), "--metric", "mse", "--seed", str(args.seed), "--lr", str(args.lr),
           "--downscale-prob", str(args.downscale_prob), "--device", "cpu",
           "--num-workers", str(args.num_workers), "--log-every", str(max(1, min(20, args.steps))),
           "--save-every", str(max(1, min(200, args.steps))), "--val-every", str(args.steps + 1),
           "--no-progress"]
    if resume:
        cmd.append("--resume")
    elif s["init_from"] is not None:
        cmd += ["--init-from", s["init_from"]["path"]]
    return cmd


# ------------------------------------------------------------------------------------------ stages
def _thread_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[k] = str(threads)
    src = str(ROOT / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def last_train_metrics(run: Path) -> dict[str, Any]:
    """Last ``split == "train"`` entry of the run's ``metrics.jsonl`` (empty if none)."""
    last: dict[str, Any] = {}
    path = run / "metrics.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("split") == "train":
                last = entry
    return last


def train_stage(args: argparse.Namespace, variant: str, quality: int) -> dict[str, Any]:
    """Train one run (or skip it when its marker matches); returns the marker document."""
    run = run_dir(args.out, variant, quality)
    settings = train_settings(args, variant, quality)
    marker = run / "train.done.json"
    if marker_matches(marker, settings):
        return read_json(marker)
    has_ckpt = (run / "checkpoint_last.safetensors").exists()
    if has_ckpt and not args.resume:
        raise StudyError(f"{run} already holds a run: pass --resume or another --out")
    cmd = train_command(args, variant, quality, resume=has_ckpt)
    run.mkdir(parents=True, exist_ok=True)
    log_path = run / "train.log"
    print(f"[train] {variant} q{quality}: {shlex.join(cmd[1:])}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    with open(log_path, "a") as log:
        rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=_thread_env(args.threads),
                             cwd=ROOT)
    seconds = time.perf_counter() - t0
    last = last_train_metrics(run)
    if rc != 0 or int(last.get("step", -1)) != args.steps:
        raise StudyError(f"training {variant} q{quality} failed (exit {rc}, step {last.get('step')}); "
                         f"see {log_path}")
    write_marker(marker, settings, seconds=seconds, threads=args.threads, jobs=args.jobs,
                 resumed=has_ckpt, final_train=last, command=cmd[1:])
    return read_json(marker)


def export_stage(args: argparse.Namespace, variant: str, quality: int) -> Path:
    """``hpcm export`` of the run's ``checkpoint_last`` to ``model.safetensors``."""
    from hpcm.cli.main import main as hpcm_main

    run = run_dir(args.out, variant, quality)
    settings = train_settings(args, variant, quality)
    model = run / "model.safetensors"
    marker = run / "export.done.json"
    if marker_matches(marker, settings) and model.exists():
        return model
    rc = hpcm_main(["export", str(run / "checkpoint_last.safetensors"), "-o", str(model), "--force"])
    if rc != 0:
        raise StudyError(f"export of {run} failed (exit {rc})")
    fingerprint = (read_json(model.with_suffix(".json")) or {}).get("fingerprint")
    write_marker(marker, settings, model=str(model), fingerprint=fingerprint)
    return model


def eval_settings(args: argparse.Namespace, variant: str, quality: int) -> dict[str, Any]:
    """What determines one evaluation (weights fingerprint, data set, image limit)."""
    run = run_dir(args.out, variant, quality)
    fp = (read_json(run / "model.json") or {}).get("fingerprint")
    return {"weights_fingerprint": fp, "kodak": str(Path(args.kodak).resolve()), "limit": args.limit}


def eval_stage(args: argparse.Namespace, variant: str, quality: int) -> dict[str, Any]:
    """Evaluate one exported model on Kodak with real files; returns the CompressAI-schema document."""
    from hpcm.eval.runner import evaluate

    run = run_dir(args.out, variant, quality)
    settings = eval_settings(args, variant, quality)
    marker = run / "eval.json"
    doc = read_json(marker)
    if isinstance(doc, dict) and doc.get("study_settings") == settings:
        return doc
    print(f"[eval] {variant} q{quality}", file=sys.stderr, flush=True)
    doc = evaluate([str(run / "model.safetensors")], args.kodak, limit=args.limit, name=variant,
                   show_progress=False)
    doc["study_settings"] = settings
    write_json(marker, doc)
    return doc


def eval_in_subprocess(args: argparse.Namespace, variant: str, quality: int) -> None:
    """``eval_stage`` in a child process (``--eval-one``), so that several evaluations run at once."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--out", str(args.out), "--kodak", str(args.kodak),
           "--threads", str(args.threads), "--eval-one", variant, str(quality)]
    if args.limit is not None:
        cmd += ["--limit", str(args.limit)]
    rc = subprocess.call(cmd, env=_thread_env(args.threads), cwd=ROOT)
    if rc != 0:
        raise StudyError(f"evaluation of {variant} q{quality} failed (exit {rc})")


def profile_stage(args: argparse.Namespace, variant: str) -> dict[str, Any]:
    """Profile ``variant`` at 768×512 with its trained weights (highest quality); returns the row dict."""
    import torch

    from hpcm.eval.profile import profile_model
    from hpcm.models.io import load_model

    q = max(args.qualities)
    weights = run_dir(args.out, variant, q) / "model.safetensors"
    fp = (read_json(weights.with_suffix(".json")) or {}).get("fingerprint")
    settings = {"weights_fingerprint": fp, "size": list(args.profile_size), "repeat": args.profile_repeat,
                "threads": args.threads}
    path = args.out / "profile" / f"{variant}.json"
    doc = read_json(path)
    if isinstance(doc, dict) and doc.get("settings") == settings:
        return doc
    h, w = args.profile_size
    print(f"[profile] {variant} at {w}x{h}", file=sys.stderr, flush=True)
    rows = profile_model(variant, [tuple(args.profile_size)], repeat=args.profile_repeat,
                         factory=lambda _name: load_model(str(weights)))
    row = asdict(rows[0])
    doc = {"version": MARKER_VERSION, "settings": settings, "quality": q, "row": row,
           "torch_threads": torch.get_num_threads()}
    write_json(path, doc)
    return doc


# ------------------------------------------------------------------------------------------ analysis
def merge_points(variant: str, docs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One CompressAI-schema document (one point per quality, in order) from per-run eval documents."""
    from hpcm.eval.results import aggregate

    points = []
    provenance = []
    for d in docs:
        points.append((d["quality"][0], d["per_image"]))
        provenance += d.get("meta", {}).get("points", [])
    meta = {"tool": "experiments/phase_study.py (hpcm eval per run)", "points": provenance,
            "images": docs[0].get("meta", {}).get("images", []) if docs else []}
    return aggregate(variant, docs[0]["description"], points, meta=meta)


def bd_vs_baseline(anchor: dict[str, Any], test: dict[str, Any]) -> dict[str, Any]:
    """BD-rate / BD-PSNR (pchip) of ``test`` against ``anchor`` with an honest note on what it means.

    With n ≥ 4 monotone points per curve this is the usual pchip BD-rate. With 2 points pchip is the
    straight line through them (log bpp linear in PSNR), with 3 a monotone cubic through 3 points: the
    value is defined but rests on that interpolation, so it is labelled ``n-point``. With fewer than 2
    monotone points, or curves whose PSNR ranges do not overlap, it is undefined (``None`` + reason).
    """
    from hpcm.eval.bdrate import bd_curves, monotone_curve
    from hpcm.eval.results import rd_points

    ra, da = rd_points(anchor, "psnr")
    rt, dt = rd_points(test, "psnr")
    na, nt = len(monotone_curve(ra, da)[0]), len(monotone_curve(rt, dt)[0])
    out: dict[str, Any] = {"anchor": anchor["name"], "test": test["name"], "method": "pchip",
                           "points": [na, nt], "bd_rate": None, "bd_psnr": None, "overlap_db": None}
    if min(na, nt) < 2:
        out["note"] = f"undefined: fewer than 2 monotone RD points (anchor {na}, test {nt})"
        return out
    rate, dist, overlap, dropped = bd_curves(ra, da, rt, dt, method="pchip")
    out.update(overlap_db=list(overlap), dropped=dropped)
    if not (math.isfinite(rate) and overlap[0] < overlap[1]):
        out["note"] = "undefined: the PSNR ranges of the two curves do not overlap"
        return out
    out.update(bd_rate=rate, bd_psnr=dist if math.isfinite(dist) else None)
    n = min(na, nt)
    shape = "a straight line in log bpp vs PSNR" if n == 2 else "a monotone cubic"
    out["note"] = ("pchip BD-rate" if n >= 4 else
                   f"{n}-point BD-rate: pchip through {n} points ({shape}); indicative only")
    width = overlap[1] - overlap[0]
    out["overlap_width_db"] = width
    if width < NARROW_OVERLAP_DB:
        out["narrow"] = True
        out["note"] += (f"; the curves overlap over only {width:.2f} dB, so a few hundredths of a dB of "
                        "PSNR noise move it by many percent: read the per-λ differences instead")
    return out


def per_quality_deltas(anchor: dict[str, Any], test: dict[str, Any]) -> list[dict[str, Any]]:
    """Per quality present in both documents: Δbpp (% of the anchor's bpp) and ΔPSNR (dB)."""
    a = dict(zip(anchor["quality"], zip(anchor["results"]["bpp"], anchor["results"]["psnr-rgb"])))
    rows = []
    for q, bpp, psnr in zip(test["quality"], test["results"]["bpp"], test["results"]["psnr-rgb"]):
        if q not in a:
            continue
        abpp, apsnr = a[q]
        rows.append({"quality": q, "bpp": bpp, "psnr": psnr, "anchor_bpp": abpp, "anchor_psnr": apsnr,
                     "dbpp_pct": 100.0 * (bpp - abpp) / abpp if abpp else None,
                     "dpsnr_db": psnr - apsnr})
    return rows


def machine_info() -> dict[str, Any]:
    """CPU model and core count (``/proc/cpuinfo``), Python and torch versions."""
    import torch

    model, cores = None, 0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cores += 1
                model = model or line.split(":", 1)[1].strip()
    except OSError:
        pass
    return {"cpu_model": model or platform.processor() or "unknown", "logical_cpus": cores or os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform()}


def build_summary(
    variant_docs: dict[str, dict[str, Any]],
    profiles: dict[str, dict[str, Any]],
    trains: dict[str, dict[int, dict[str, Any]]],
    *,
    baseline: str = BASELINE,
) -> dict[str, Any]:
    """Everything the report shows, from the merged eval documents, profile rows and training markers."""
    out: dict[str, Any] = {"baseline": baseline, "variants": {}}
    anchor = variant_docs.get(baseline)
    for v, doc in variant_docs.items():
        res = doc["results"]
        prof = (profiles.get(v) or {}).get("row") or {}
        entry: dict[str, Any] = {
            "quality": doc["quality"],
            "bpp": res["bpp"],
            "psnr": res["psnr-rgb"],
            "ms_ssim_db": res.get("ms-ssim-db-rgb"),
            "kodak_encode_s": res["encoding_time"],
            "kodak_decode_s": res["decoding_time"],
            "params": prof.get("params"),
            "kmacs_per_pixel": prof.get("kmacs_per_pixel"),
            "encode_s": (prof.get("times") or {}).get("compress"),
            "decode_s": (prof.get("times") or {}).get("decompress"),
            "peak_mib": prof.get("peak_mib"),
            "train_seconds": {str(q): m.get("seconds") for q, m in trains.get(v, {}).items()},
            "final_train_loss": {str(q): (m.get("final_train") or {}).get("loss")
                                 for q, m in trains.get(v, {}).items()},
        }
        if anchor is not None and v != baseline:
            entry["bd"] = bd_vs_baseline(anchor, doc)
            entry["deltas"] = per_quality_deltas(anchor, doc)
        out["variants"][v] = entry
    return out


# ------------------------------------------------------------------------------------------ report
def _f(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return format(value, spec)


def results_table(summary: dict[str, Any]) -> str:
    """Markdown table: one row per variant."""
    head = ("| variant | params (M) | kMACs/px | bpp (per λ) | PSNR dB (per λ) | BD-rate vs baseline | "
            "encode (s) | decode (s) | peak enc / dec (MiB) |")
    lines = [head, "|" + "---|" * 9]
    for v, e in summary["variants"].items():
        bd = e.get("bd")
        if v == summary["baseline"]:
            bd_text = "anchor"
        elif bd is None:
            bd_text = "—"
        elif bd["bd_rate"] is None:
            bd_text = bd["note"]
        else:
            bd_text = f"{bd['bd_rate']:+.2f} % ({min(bd['points'])}-pt"
            bd_text += f"; only {bd['overlap_width_db']:.2f} dB overlap: noise)" if bd.get("narrow") else ")"
        peak = e.get("peak_mib") or {}
        lines.append(
            f"| {v} | {_f(e['params'] / 1e6 if e.get('params') else None, '.3f')} | "
            f"{_f(e.get('kmacs_per_pixel'), '.1f')} | {' / '.join(_f(b, '.4f') for b in e['bpp'])} | "
            f"{' / '.join(_f(p, '.2f') for p in e['psnr'])} | {bd_text} | {_f(e.get('encode_s'), '.3f')} | "
            f"{_f(e.get('decode_s'), '.3f')} | {_f(peak.get('compress'), '.0f')} / "
            f"{_f(peak.get('decompress'), '.0f')} |")
    return "\n".join(lines)


def deltas_table(summary: dict[str, Any]) -> str:
    """Markdown table of per-λ bpp / PSNR differences against the baseline."""
    lines = ["| variant | quality | bpp | Δbpp vs baseline | PSNR (dB) | ΔPSNR vs baseline |",
             "|---|---|---|---|---|---|"]
    for v, e in summary["variants"].items():
        for d in e.get("deltas") or []:
            lines.append(f"| {v} | {d['quality']} | {_f(d['bpp'], '.4f')} | {_f(d['dbpp_pct'], '+.1f')} % | "
                         f"{_f(d['psnr'], '.2f')} | {_f(d['dpsnr_db'], '+.2f')} dB |")
    return "\n".join(lines)


def plot_training(trains: dict[str, dict[int, Path]], output: Path) -> Path:
    """Training loss against step, one line per (variant, quality), from the runs' ``metrics.jsonl``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    colors = plt.get_cmap("tab10").colors
    styles = ["-", "--", ":", "-."]
    for i, (v, runs) in enumerate(trains.items()):
        for j, (q, run) in enumerate(sorted(runs.items())):
            pts = []
            log = run / "metrics.jsonl"
            for line in log.read_text().splitlines() if log.exists() else []:
                e = json.loads(line)
                if e.get("split") == "train" and math.isfinite(e.get("loss", math.nan)):
                    pts.append((e["step"], e["loss"]))
            if pts:
                ax.plot(*zip(*pts), styles[j % len(styles)], color=colors[i % len(colors)], label=f"{v} q{q}")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (λ·255²·MSE + bpp)")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="x-small", ncol=2)
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=110)
    plt.close(fig)
    return output


PROTOCOL = """\
## Protocol

- **Variants** (`src/hpcm/models/variants.py`, all at `hpcm-tiny` widths): the baseline `hpcm-tiny`
  (official cross-attention context cells), `hpcm-phase1-tiny` (RWKV cell at s3), `hpcm-phase2-tiny` (RWKV
  cells at s1/s2/s3), `hpcm-phase3-tiny` (+ RWKV fusion context nets), `hpcm-phase4-tiny` (+ RWKV spatial
  priors) and `hpcm-multiref-phase2-tiny` (the baseline plus the memory bank at s1/s2/s3).
{training}- **Evaluation**: `hpcm eval` (`hpcm.eval.runner.evaluate`) on Kodak with real files:
  `compress_image` → `.hpcm` bytes → `decompress_image`; bpp = 8·file bytes / pixels (header included),
  PSNR-RGB on 8-bit values, per image then the mean. The per-variant CompressAI-schema JSONs are in the
  raw-data folder.
- **Cost**: `hpcm.eval.profile.profile_model` at 768×512 with the trained weights of the highest λ:
  parameters, kMACs/pixel (FlopCounterMode), median `compress_image` / `decompress_image` wall time on a
  synthetic smooth image (one warm-up call), peak memory (growth of the resident set during the call).
- **BD-rate** (PSNR) of every variant against the baseline with `hpcm.eval.bdrate` (the `bjontegaard`
  package, pchip, overlapping PSNR range). With only two λ per curve pchip is the straight line through
  the two points (log bpp linear in PSNR), so the value is a *2-point* BD-rate: defined, but it says only
  how far apart two straight segments are over their common PSNR range and carries the full noise of each
  point. When the PSNR ranges do not overlap it is undefined and the table says so; when they overlap over
  less than 0.5 dB the table flags it (a few hundredths of a dB of noise then move it by many percent).
  The per-λ differences (Δbpp in % and ΔPSNR in dB at equal λ) are always given beside it.
"""


TRAINING_FROM_SCRATCH = """\
- **Training**: `hpcm train` (`src/hpcm/train/`), one run per (variant, λ), every run from scratch with
  the same training folder, seed, number of steps, batch, patch, learning rate and λ (MSE table, qualities
  listed under *Training budget*; loss λ·255²·MSE + bpp). The sample stream is a function of
  (seed, step) only, so every variant sees exactly the same crops in the same order. No validation set
  is used, so nothing is selected on Kodak: the exported weights are those after the last step
  (`checkpoint_last`, then `hpcm export`).
"""

TRAINING_WARM_START = """\
- **Training**: `hpcm train` (`src/hpcm/train/`), one run per (variant, λ). **Warm start**: every run of
  quality q starts from the same weights, `{init}` (sha256 per quality in `summary.json`/`study.json`),
  through `hpcm train --init-from` (`hpcm.migrate`: every tensor whose name and shape match is copied;
  the components a variant replaces or adds — RWKV cells, fusion nets, spatial priors, the memory bank —
  start from their fresh initialisation). The baseline arm continues the same weights under exactly the
  same schedule, so every arm gets the same number of further steps. Same training folder, seed, number
  of steps, batch, patch, learning rate and λ (MSE table; loss λ·255²·MSE + bpp) for every run. The
  sample stream is a function of (seed, step) only, so every variant sees exactly the same crops in the
  same order. No validation set is used, so nothing is selected on Kodak: the exported weights are those
  after the last step (`checkpoint_last`, then `hpcm export`).
"""


def protocol_text(settings: dict[str, Any]) -> str:
    """The protocol section for from-scratch or warm-started studies."""
    init = settings.get("init_from")
    training = TRAINING_WARM_START.format(init=init) if init else TRAINING_FROM_SCRATCH
    return PROTOCOL.format(training=training)


def warm_start_sentence(study: dict[str, Any]) -> str:
    """``", on top of ... steps of the baseline"`` from the recorded warm-start weights."""
    steps = sorted({(w.get("training") or {}).get("step") for w in (study.get("init_weights") or {}).values()}
                   - {None})
    if not steps:
        return ", on top of the warm-start weights."
    text = f"{steps[0]}" if len(steps) == 1 else f"{steps[0]}–{steps[-1]}"
    return (f", on top of the baseline's {text} steps (batch 8 × 128²) that every arm starts from; "
            "the shared components start trained, the new ones do not.")


def render_report(summary: dict[str, Any] | None, study: dict[str, Any], *, raw_dir_name: str) -> str:
    """The Markdown report; with ``summary=None`` it states that the study has not been run."""
    s = study["settings"]
    n_images = "all 24" if s.get("limit") is None else f"the first {s['limit']}"
    cmd = study.get("command") or (
        "OMP_NUM_THREADS=1 .venv/bin/python experiments/phase_study.py "
        f"--steps {s['steps']} --batch-size {s['batch_size']} --patch-size {s['patch_size']} "
        f"--qualities {' '.join(map(str, s['qualities']))} --threads {s['threads']}")
    parts = ["# Phase study: baseline vs RWKV phases 1–4 vs multi-reference (tiny widths)", ""]
    if summary is None:
        parts += [
            "**Status: the full study has not been run yet. There are no numbers in this file.**",
            "The script `experiments/phase_study.py` is complete and was smoke-tested end to end on a tiny",
            "budget (a few steps, 2 Kodak images, written to a temporary folder and not kept); the numbers",
            "from that smoke run are meaningless and were deliberately not recorded. Running the command",
            "below regenerates this file with the table and plots and puts the raw JSON in",
            f"`{raw_dir_name}/`.",
            "",
        ]
    parts += [protocol_text(s), "## How to run", "", "```bash", cmd,
              "# continue an interrupted study (each stage leaves a JSON marker under --out):",
              cmd + " --resume",
              "# rebuild the report and plots from what exists under --out:",
              ".venv/bin/python experiments/phase_study.py --report-only",
              "```", "",
              "Options: `--variants`, `--qualities`, `--steps`, `--batch-size`, `--patch-size`, `--lr`,",
              "`--seed`, `--limit N` (first N Kodak images), `--out` (run root, default `runs/phase_study`),",
              "`--threads` (torch threads per process), `--jobs K` (K trainings / evaluations at once),",
              "`--resume`, `--report-only`, "
              "`--report PATH` (raw files go to the folder of the same stem beside it).", ""]
    budget = (f"{s['steps']} steps × batch {s['batch_size']} × {s['patch_size']}² patches per run "
              f"({s['steps'] * s['batch_size']} crops, seed {s['seed']}, lr {s['lr']}), "
              f"{len(s['variants'])} variants × {len(s['qualities'])} λ = "
              f"{len(s['variants']) * len(s['qualities'])} runs; evaluation on {n_images} Kodak images.")
    parts += ["## Training budget", "", budget, ""]
    if summary is None:
        parts += [
            "The paper's schedule runs to at least 1.9 M steps of 256² crops (learning-rate milestones",
            "at 1.6 / 1.8 / 1.9 M steps, `spec/hpcm.md` §8.3; the batch size is not documented, the code's",
            "default is 32 and the author's rough reference 8, i.e. ≥ 15 M crops). A CPU budget of a few",
            "thousand steps of small patches is 3–4 orders of magnitude less. Whatever the eventual numbers",
            "are, they describe **early training**, not the converged models.", ""]
        return "\n".join(parts)
    m = study.get("machine", {})
    train_total = sum(t or 0 for e in summary["variants"].values() for t in e["train_seconds"].values())
    parts += [
        f"Measured wall time of all training runs: {train_total / 3600:.2f} h "
        f"({s['jobs']} at a time, {s['threads']} torch thread(s) each).", "",
        "**How short this is.** The paper's schedule runs to at least 1.9 M steps of 256² crops (batch",
        "not documented; with the author's rough reference of batch 8 that is ≥ 15 M crops); this study",
        f"gave each run {s['steps'] * s['batch_size']} crops of {s['patch_size']}², i.e. roughly "
        f"{15.2e6 / max(1, s['steps'] * s['batch_size']):,.0f}× fewer crops (and smaller ones)"
        + (warm_start_sentence(study) if s.get("init_from") else "."),
        "The models are in early training. The numbers **can** say: what each variant",
        "costs (parameters and kMACs/pixel do not depend on training; encode/decode time and memory only",
        "through the bitrate) and how",
        "fast each one learns over the first steps under identical data and settings. They **cannot** say",
        "which variant compresses better when trained to convergence: differences in the RD columns mix",
        "architecture with speed of early convergence, come from a single seed, and the BD-rate rests on",
        f"{len(s['qualities'])} points per curve.", "",
        "## Machine", "",
        f"{m.get('cpu_model')}, {m.get('logical_cpus')} logical CPUs; Python {m.get('python')}, "
        f"torch {m.get('torch')}; {m.get('platform')}. Other jobs may have shared the CPUs; timings are "
        "wall clock.", "",
        "## Results", "",
        f"Kodak ({n_images} images), real `.hpcm` files. bpp and PSNR listed per λ in the order "
        f"q{' / q'.join(map(str, s['qualities']))}. Cost columns at "
        f"{s['profile_size'][1]}×{s['profile_size'][0]} (median of {s['profile_repeat']}).", "",
        results_table(summary), "",
        "Per-λ differences against the baseline (same λ, same training):", "",
        deltas_table(summary), "",
        "BD-rate details (method, points, overlapping PSNR range) are in "
        f"`{raw_dir_name}/summary.json`.", "",
        f"![RD curves]({raw_dir_name}/rd-psnr.png)", "",
        f"![training loss]({raw_dir_name}/training-loss.png)", "",
        "## Raw data", "",
        f"`{raw_dir_name}/`: `<variant>.json` (CompressAI `eval_model` schema with per-image records),",
        "`profile-<variant>.json`, `summary.json` (table data, BD-rate details, training wall times and",
        "final training losses), `study.json` (settings, machine, command).", ""]
    return "\n".join(parts)


# ------------------------------------------------------------------------------------------ driver
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), help="presets; the first is the baseline")
    p.add_argument("--qualities", nargs="+", type=int, default=[2, 4], help="MSE λ-table qualities (1..6)")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--patch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--downscale-prob", type=float, default=0.0, help="see `hpcm train --downscale-prob`")
    p.add_argument("--init-from", default=None, metavar="TEMPLATE",
                   help="warm start: weights every variant starts from at quality q (migrated: shared "
                   "components copied, new ones initialised), e.g. 'runs/init/hpcm-tiny-q{q}.safetensors'")
    p.add_argument("--data", nargs="+", default=[str(SHARED / "data" / "train")], help="training folders")
    p.add_argument("--kodak", default=str(SHARED / "data" / "kodak"))
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N Kodak images")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "phase_study", help="run root")
    p.add_argument("--report", type=Path, default=ROOT / "docs" / "results" / "phase_study.md",
                   help="Markdown report; raw files go to the folder of the same stem beside it")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--jobs", type=int, default=1, help="trainings run in parallel")
    p.add_argument("--num-workers", type=int, default=1, help="data loader processes per training")
    p.add_argument("--profile-size", type=int, nargs=2, default=list(PROFILE_SIZE), metavar=("H", "W"))
    p.add_argument("--profile-repeat", type=int, default=3)
    p.add_argument("--resume", action="store_true", help="skip stages whose marker matches; continue runs")
    p.add_argument("--report-only", action="store_true", help="only rebuild the report from --out")
    p.add_argument("--eval-one", nargs=2, metavar=("VARIANT", "QUALITY"), default=None,
                   help=argparse.SUPPRESS)  # internal: one evaluation stage (used with --jobs > 1)
    args = p.parse_args(argv)
    args.out = args.out.resolve()
    if args.steps < 1 or args.batch_size < 1 or args.jobs < 1 or args.threads < 1:
        p.error("--steps, --batch-size, --jobs and --threads must be ≥ 1")
    if len(set(args.qualities)) != len(args.qualities):
        p.error("--qualities must be distinct")
    args.init_files = {}  # quality -> {"path", "sha256"} of the warm-start weights, hashed once here
    if args.init_from and not args.report_only:
        from hpcm.models.io import file_sha256

        for q in args.qualities:
            path = init_path(args, q)
            if not path.is_file():
                p.error(f"--init-from: {path} (quality {q}) does not exist")
            args.init_files[q] = {"path": str(path), "sha256": file_sha256(path)}
    return args


def init_weights_info(args: argparse.Namespace) -> dict[str, Any] | None:
    """Per quality: path, sha256 and recorded training of the warm-start weights (``None``: from scratch)."""
    if not args.init_files:
        return None
    out = {}
    for q, init in args.init_files.items():
        meta = read_json(Path(init["path"]).with_suffix(".json")) or {}
        out[str(q)] = {**init, "preset": meta.get("preset"), "training": meta.get("training")}
    return out


def study_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The study-wide settings recorded in ``OUT/study.json`` and the report."""
    return {"variants": list(args.variants), "qualities": list(args.qualities), "steps": args.steps,
            "batch_size": args.batch_size, "patch_size": args.patch_size, "lr": args.lr, "seed": args.seed,
            "downscale_prob": args.downscale_prob, "init_from": args.init_from,
            "data": [str(Path(d).resolve()) for d in args.data],
            "kodak": str(Path(args.kodak).resolve()), "limit": args.limit, "threads": args.threads,
            "jobs": args.jobs, "profile_size": list(args.profile_size), "profile_repeat": args.profile_repeat}


def collect(args: argparse.Namespace) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]],
                                                dict[str, dict[int, dict[str, Any]]]]:
    """Read the finished stages under ``--out``: (merged eval docs, profiles, training markers)."""
    docs, profiles, trains = {}, {}, {}
    for v in args.variants:
        evals = []
        for q in args.qualities:
            run = run_dir(args.out, v, q)
            t = read_json(run / "train.done.json")
            if t is not None:
                trains.setdefault(v, {})[q] = t
            e = read_json(run / "eval.json")
            if e is not None:
                evals.append(e)
        if len(evals) == len(args.qualities):
            docs[v] = merge_points(v, evals)
        p = read_json(args.out / "profile" / f"{v}.json")
        if p is not None:
            profiles[v] = p
    return docs, profiles, trains


def write_report(args: argparse.Namespace, study: dict[str, Any]) -> Path:
    """Write the report and the raw-data folder from whatever is finished under ``--out``."""
    from hpcm.eval.plot import plot_rd
    from hpcm.eval.results import save_results

    raw = args.report.with_suffix("")
    docs, profiles, trains = collect(args)
    summary = None
    if docs:
        raw.mkdir(parents=True, exist_ok=True)
        for v, doc in docs.items():
            save_results(doc, raw / f"{v}.json")
        for v, prof in profiles.items():
            write_json(raw / f"profile-{v}.json", prof)
        summary = build_summary(docs, profiles, trains, baseline=args.variants[0])
        write_json(raw / "summary.json", summary)
        write_json(raw / "study.json", study)
        plot_rd(list(docs.values()), raw / "rd-psnr.png", metric="psnr",
                title=f"Kodak, {study['settings']['steps']} training steps (early training)")
        plot_training({v: {q: run_dir(args.out, v, q) for q in args.qualities} for v in docs},
                      raw / "training-loss.png")
    text = render_report(summary, study, raw_dir_name=raw.name)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(text)
    return args.report


def run_study(args: argparse.Namespace) -> Path:
    """All stages in order (skipping finished ones with ``--resume``), then the report."""
    import torch

    torch.set_num_threads(args.threads)
    settings = study_settings(args)
    study_path = args.out / "study.json"
    old = read_json(study_path)
    if old is not None and not args.resume and not args.report_only:
        raise StudyError(f"{args.out} already holds a study: pass --resume or another --out")
    study = {"settings": settings, "machine": machine_info(),
             "command": shlex.join([Path(sys.executable).name, *sys.argv]),
             "init_weights": init_weights_info(args)}
    if args.report_only:
        if old is not None:  # the recorded study decides what to collect
            study = old
            args.variants, args.qualities = old["settings"]["variants"], old["settings"]["qualities"]
        else:
            study["command"] = None  # nothing was run: the report shows the default command
        return write_report(args, study)
    write_json(study_path, study)  # creates --out
    jobs = [(v, q) for v in args.variants for q in args.qualities]
    if args.jobs == 1:
        for v, q in jobs:
            train_stage(args, v, q)
    else:
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            for f in [pool.submit(train_stage, args, v, q) for v, q in jobs]:
                f.result()
    for v, q in jobs:
        export_stage(args, v, q)
    if args.jobs == 1:
        for v, q in jobs:
            eval_stage(args, v, q)
    else:  # one process per evaluation (each with --threads torch threads), --jobs at a time
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            for f in [pool.submit(eval_in_subprocess, args, v, q) for v, q in jobs]:
                f.result()
    for v in args.variants:
        profile_stage(args, v)
    return write_report(args, study)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    sys.path.insert(0, str(ROOT / "src"))
    args = parse_args(argv)
    try:
        if args.eval_one:
            import torch

            torch.set_num_threads(args.threads)
            eval_stage(args, args.eval_one[0], int(args.eval_one[1]))
            return 0
        report = run_study(args)
    except StudyError as exc:
        print(f"phase_study: error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {report}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
