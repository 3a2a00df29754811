"""The phase study (issue 20): baseline vs RWKV Phase 1–4 vs multi-reference Phase 2, all ``-tiny``.

The driver; the analysis, run layout, convergence check and report live in :mod:`hpcm.eval.study`.
Re-runnable end to end; every stage leaves a JSON marker so a later session continues with ``--resume``:

1. **train** every run through ``hpcm train`` (subprocess ``python -m hpcm train``; run folder
   ``OUT/<variant>/seed<S>/q<Q>/`` or ``.../vr/``, marker ``train.done.json``): identical data, 256² crops,
   schedule and warm start for every arm; the baseline with every ``--seeds`` seed (the noise floor), the
   other arms with the first. Validation every ``--val-every`` steps on ``--val-holdout`` training images
   held out of training — never Kodak — feeds the convergence check. The exported weights are the last
   step's (``checkpoint_last``): nothing is selected on any validation set;
2. **export** with ``hpcm export`` (``model.safetensors`` + ``.json``; marker ``export.done.json``);
3. **eval** every exported model on Kodak with real files (``hpcm.eval.runner.evaluate``; ``eval-q<Q>.json``);
4. **profile** every variant at 768×512 with its trained weights (``OUT/profile/<variant>.json``);
5. **report**: ``--report`` (``docs/results/phase_study.md``) and its raw folder (the same stem): the
   issue-20 study in ``issue20/`` (summary, convergence, per-arm evaluations, speed), the Base-width cost
   from ``benchmarks/phase_cost.py`` (``cost-base.json``) and session 2's study (the folder's top level).

Usage (see ``docs/results/phase_study.md``)::

    OMP_NUM_THREADS=1 python experiments/phase_study.py --jobs 2            # start (long: CPU-hours)
    python experiments/phase_study.py --resume                              # continue
    python experiments/phase_study.py --steps 40000 --resume                # extend every run
    python experiments/phase_study.py --measure-speed 4                     # steps/s per variant → estimate
    python experiments/phase_study.py --report-only                         # rebuild the report
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from hpcm.eval import study as S  # noqa: E402

SHARED = ROOT.parent / "shared"
PROFILE_SIZE = (512, 768)  # (H, W): a landscape Kodak image
SHIPPED_INIT = "src/hpcm/weights/hpcm-tiny-q{q}.safetensors"  # fixed-rate arms (only q3 still ships)
SHIPPED_INIT_VR = "src/hpcm/weights/hpcm-tiny-vr.safetensors"  # --variable-rate arms
RAW_CURRENT = "issue20"  # subfolder of the raw folder holding the issue-20 study


def _thread_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[k] = str(threads)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    src = str(ROOT / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _portable(path: str | Path) -> str:
    """A path as the markers record it: relative to the repository when inside it (so run folders made
    on another machine, e.g. a GPU slot, match here), else absolute. Commands run with cwd = ROOT."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(ROOT))
    except ValueError:
        return str(p)


def _qkey(quality: int | None) -> str:
    return "vr" if quality is None else str(quality)


# ------------------------------------------------------------------------------------------ stages
def train_stage(args: argparse.Namespace, variant: str, seed: int, quality: int | None) -> dict[str, Any]:
    """Train one run (or skip it when its marker matches); returns the marker document."""
    s = args.settings
    run = S.run_dir(args.out, variant, seed, quality)
    settings = S.train_settings(s, variant, seed, quality, args.init_files)
    marker = run / "train.done.json"
    if S.marker_matches(marker, settings):
        return S.read_json(marker)
    has_ckpt = (run / "checkpoint_last.safetensors").exists()
    done = S.read_json(marker)
    if isinstance(done, dict) and not has_ckpt:  # finished elsewhere (a GPU slot) with other settings
        theirs = done.get("settings") or {}
        diff = sorted(k for k in set(theirs) | set(settings) if theirs.get(k) != settings.get(k))
        raise S.StudyError(f"{run} was trained with other settings ({', '.join(diff)} differ); give the "
                           "settings it was trained with, or another --out")
    if has_ckpt and not args.resume:
        raise S.StudyError(f"{run} already holds a run: pass --resume or another --out")
    cmd = S.train_command(s, args.out, variant, seed, quality, resume=has_ckpt, python=sys.executable,
                          init_files=args.init_files, num_workers=args.num_workers)
    run.mkdir(parents=True, exist_ok=True)
    log_path = run / "train.log"
    print(f"[train] {variant} seed {seed} {_qkey(quality)}: {shlex.join(cmd[1:])}", file=sys.stderr,
          flush=True)
    t0 = time.perf_counter()
    with open(log_path, "a") as log:
        rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=_thread_env(s["threads"]),
                             cwd=ROOT)
    seconds = time.perf_counter() - t0
    train_log = S.read_metrics(run, "train")
    last = train_log[-1] if train_log else {}
    if rc != 0 or int(last.get("step", -1)) != s["steps"]:
        raise S.StudyError(f"training {variant} seed {seed} {_qkey(quality)} failed (exit {rc}, step "
                           f"{last.get('step')}); see {log_path}")
    S.write_marker(marker, settings, seconds=seconds, threads=s["threads"], jobs=args.jobs, resumed=has_ckpt,
                   final_train=last, command=cmd[1:])
    return S.read_json(marker)


def export_stage(args: argparse.Namespace, variant: str, seed: int, quality: int | None) -> Path:
    """``hpcm export`` of the run's ``checkpoint_last`` to ``model.safetensors`` (variable-rate runs: the
    header-safe preset name ``<variant>+vr`` replaces the factory string)."""
    from hpcm.cli.main import main as hpcm_main

    run = S.run_dir(args.out, variant, seed, quality)
    settings = S.train_settings(args.settings, variant, seed, quality, args.init_files)
    model = run / "model.safetensors"
    marker = run / "export.done.json"
    if S.marker_matches(marker, settings) and model.exists():
        return model
    rc = hpcm_main(["export", str(run / "checkpoint_last.safetensors"), "-o", str(model), "--force"])
    if rc != 0:
        raise S.StudyError(f"export of {run} failed (exit {rc})")
    if quality is None:
        from hpcm.models.io import load_model, read_weights_metadata, save_weights

        meta = read_weights_metadata(model)
        loaded = load_model(str(model))
        drop = ("config", "fingerprint", "format", "format_version")
        meta = {k: v for k, v in meta.items() if k not in drop}
        save_weights(loaded, model, {**meta, "preset": S.vr_preset_name(variant)})
    fingerprint = (S.read_json(model.with_suffix(".json")) or {}).get("fingerprint")
    S.write_marker(marker, settings, model=str(model), fingerprint=fingerprint)
    return model


def eval_stage(args: argparse.Namespace, variant: str, seed: int, quality: int | None,
               eval_quality: int) -> dict[str, Any]:
    """Evaluate one exported model at ``eval_quality`` on Kodak with real files (CompressAI schema)."""
    from hpcm.eval.runner import evaluate

    s = args.settings
    run = S.run_dir(args.out, variant, seed, quality)
    fp = (S.read_json(run / "model.json") or {}).get("fingerprint")
    settings = {"weights_fingerprint": fp, "kodak": s["kodak"], "limit": s["limit"], "quality": eval_quality}
    path = run / f"eval-q{eval_quality}.json"
    doc = S.read_json(path)
    if isinstance(doc, dict) and doc.get("study_settings") == settings:
        return doc
    label = S.arm_label(variant, seed, s)
    print(f"[eval] {label} q{eval_quality}", file=sys.stderr, flush=True)
    # a variable-rate model codes at the evaluated quality (hpcm.eval.runner passes it to the codec)
    doc = evaluate([str(run / "model.safetensors")], s["kodak"], limit=s["limit"], name=label,
                   qualities=[eval_quality], show_progress=False)
    doc["study_settings"] = settings
    S.write_json(path, doc)
    return doc


def profile_stage(args: argparse.Namespace, variant: str) -> dict[str, Any]:
    """Profile ``variant`` at 768×512 with its trained weights (first seed, highest quality)."""
    import torch

    from hpcm.eval.profile import profile_model
    from hpcm.models.io import load_model

    s = args.settings
    q = None if s.get("variable_rate") else max(s["qualities"])
    weights = S.run_dir(args.out, variant, s["seeds"][0], q) / "model.safetensors"
    fp = (S.read_json(weights.with_suffix(".json")) or {}).get("fingerprint")
    settings = {"weights_fingerprint": fp, "size": list(args.profile_size), "repeat": args.profile_repeat,
                "threads": s["threads"]}
    path = args.out / "profile" / f"{variant}.json"
    doc = S.read_json(path)
    if isinstance(doc, dict) and doc.get("settings") == settings:
        return doc
    print(f"[profile] {variant}", file=sys.stderr, flush=True)
    rows = profile_model(variant, [tuple(args.profile_size)], repeat=args.profile_repeat,
                         factory=lambda _name: load_model(str(weights)))
    doc = {"version": S.MARKER_VERSION, "settings": settings, "quality": q, "row": asdict(rows[0]),
           "torch_threads": torch.get_num_threads()}
    S.write_json(path, doc)
    return doc


def _child_cpu_seconds() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def measure_speed(args: argparse.Namespace, steps: int) -> dict[str, Any]:
    """Training cost per step of every variant at the study's batch and patch: two ``hpcm train`` runs in
    a temporary folder, of 1 and ``1 + steps`` steps; the difference of their CPU time (the training
    process and its data loader, ``RUSAGE_CHILDREN``) divided by ``steps`` is the CPU seconds per step,
    free of start-up and far less sensitive to other processes than wall time (also recorded: the
    median wall time of the logged steps after the first)."""
    import statistics

    s = {**args.settings, "val_holdout": 0}
    cpu_per_step: dict[str, float] = {}
    wall_per_step: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for v in s["variants"]:
            q = None if s.get("variable_rate") else s["qualities"][0]
            cpu = []
            for n in (1, 1 + steps):
                run_s = {**s, "steps": n}
                out = Path(tmp) / f"n{n}"
                cmd = S.train_command(run_s, out, v, s["seeds"][0], q, resume=False, python=sys.executable,
                                      init_files=args.init_files, num_workers=args.num_workers)
                cmd[cmd.index("--log-every") + 1] = "1"
                print(f"[speed] {v}: {n} step(s)", file=sys.stderr, flush=True)
                c0 = _child_cpu_seconds()
                rc = subprocess.call(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     env=_thread_env(s["threads"]), cwd=ROOT)
                cpu.append(_child_cpu_seconds() - c0)
                if rc != 0:
                    raise S.StudyError(f"speed run of {v} failed (exit {rc}): {shlex.join(cmd[1:])}")
                log = S.read_metrics(S.run_dir(out, v, s["seeds"][0], q), "train")
            cpu_per_step[v] = (cpu[1] - cpu[0]) / steps
            rates = [e["images_per_s"] / s["batch_size"] for e in log[1:] if e.get("images_per_s")]
            if rates:
                wall_per_step[v] = 1.0 / statistics.median(rates)
    return {"steps_per_s": {v: 1.0 / c for v, c in cpu_per_step.items() if c > 0},
            "cpu_s_per_step": cpu_per_step, "wall_s_per_step": wall_per_step, "steps_measured": steps,
            "batch_size": s["batch_size"], "patch_size": s["patch_size"], "threads": s["threads"],
            "num_workers": args.num_workers, "machine": S.machine_info(),
            "loadavg": [round(x, 2) for x in os.getloadavg()], "measured": time.strftime("%Y-%m-%d %H:%M"),
            "note": args.speed_note}


# ------------------------------------------------------------------------------------------ report
def collect(args: argparse.Namespace) -> dict[str, Any]:
    """Finished stages under ``--out``: merged eval docs per arm, profiles, training markers, convergence
    and the steps each run has reached."""
    s = args.settings
    docs, profiles, trains, conv, steps = {}, {}, {}, {}, {}
    evalq = list(s["qualities"])
    for v, seed in S.study_arms(s):
        label = S.arm_label(v, seed, s)
        evals = []
        for q in S.train_qualities(s):
            run = S.run_dir(args.out, v, seed, q)
            key = f"{v}/seed{seed}/{'vr' if q is None else f'q{q}'}"
            t = S.read_json(run / "train.done.json")
            if t is not None:
                trains.setdefault(label, {})[q if q is not None else "vr"] = t
            val = S.read_metrics(run, "val")
            tl = S.read_metrics(run, "train")
            if val:
                conv[key] = S.convergence(val, train_log=tl)
            if tl:
                steps[key] = int(tl[-1]["step"])
            for eq in ([q] if q is not None else evalq):
                e = S.read_json(run / f"eval-q{eq}.json")
                if e is not None:
                    evals.append(e)
        if len(evals) == len(evalq):
            docs[label] = S.merge_points(label, evals)
        if seed == s["seeds"][0]:
            p = S.read_json(args.out / "profile" / f"{v}.json")
            if p is not None:
                profiles[label] = p
    return {"docs": docs, "profiles": profiles, "trains": trains, "convergence": conv, "steps": steps}


def start_command(s: dict[str, Any]) -> str:
    """The command line that starts (or, with --resume, continues) the study with settings ``s``."""
    parts = ["OMP_NUM_THREADS=1", ".venv/bin/python", "experiments/phase_study.py",
             "--variants", *s["variants"], "--seeds", *map(str, s["seeds"]),
             "--qualities", *map(str, s["qualities"]), "--steps", str(s["steps"]),
             "--batch-size", str(s["batch_size"]), "--patch-size", str(s["patch_size"]), "--lr", str(s["lr"]),
             "--downscale-prob", str(s["downscale_prob"]), "--val-holdout", str(s["val_holdout"]),
             "--val-every", str(S.val_every(s)), "--jobs", str(s["jobs"])]
    if s.get("variable_rate"):
        parts.append("--variable-rate")
    if s["data"] != [_portable(SHARED / "data" / "train")]:
        parts += ["--data", *s["data"]]
    if s.get("val"):
        parts += ["--val", s["val"]]
    if s.get("amp"):
        parts += ["--amp", s["amp"]]
    if s.get("all_seeds"):
        parts.append("--all-seeds")
    if s.get("lr_milestones"):
        parts += ["--lr-milestones", *s["lr_milestones"]]
    return shlex.join(parts) + " --init-from " + (shlex.quote(s["init_from"]) if s["init_from"] else "''")


def write_report(args: argparse.Namespace) -> Path:
    """Write the report and the raw-data folders from what is finished under ``--out`` (else from the
    committed raw data)."""
    from hpcm.eval.plot import plot_deltas, plot_rd
    from hpcm.eval.results import save_results

    s = args.settings
    raw = args.report.with_suffix("")
    cur_raw = raw / RAW_CURRENT
    found = collect(args) if args.out.exists() else None
    current: dict[str, Any] = {"settings": s, "command": start_command(s)}
    if found and (found["convergence"] or found["docs"]):
        current["convergence"] = found["convergence"]
        current["steps"] = found["steps"]
        if found["docs"]:
            base = [found["docs"][S.arm_label(s["variants"][0], seed, s)] for seed in s["seeds"]
                    if S.arm_label(s["variants"][0], seed, s) in found["docs"]]
            summary = S.build_summary(found["docs"], found["profiles"], {}, baseline=s["variants"][0],
                                      noise=S.seed_spread(base))
            current["summary"] = summary
            cur_raw.mkdir(parents=True, exist_ok=True)
            for label, doc in found["docs"].items():
                save_results(doc, cur_raw / f"{label}.json")
            S.write_json(cur_raw / "summary.json", summary)
            title = f"Kodak, {s['steps']} steps of {s['patch_size']}² crops"
            plot_rd(list(found["docs"].values()), cur_raw / "rd-psnr.png", metric="psnr", title=title)
            plot_deltas(summary, cur_raw / "delta.png", title=title + ": against the baseline")
        S.write_json(cur_raw / "convergence.json",
                     {"convergence": found["convergence"], "steps": found["steps"]})
        S.write_json(cur_raw / "study.json", {"settings": s, "machine": S.machine_info(),
                                              "command": current["command"]})
    else:  # nothing under --out: the committed raw data
        conv = S.read_json(cur_raw / "convergence.json") or {}
        current["convergence"] = conv.get("convergence") or {}
        current["steps"] = conv.get("steps") or {}
        summary = S.read_json(cur_raw / "summary.json")
        if summary is not None:
            current["summary"] = summary
    current["plots"] = [f"{raw.name}/{RAW_CURRENT}/{f}" for f in ("rd-psnr.png", "delta.png")
                        if (cur_raw / f).exists()]
    speed = S.read_json(cur_raw / "speed.json")
    if speed:
        current["speed"] = speed
        current["estimate"] = S.budget_estimate(s, speed["steps_per_s"], done_steps=current.get("steps"))
    if getattr(args, "gpu_suite", None):
        S.write_json(raw / "cost-gpu.json",
                     S.gpu_cost_from_suite(S.read_json(args.gpu_suite) or {}, _portable(args.gpu_suite)))
    gpu_cost = S.read_json(raw / "cost-gpu.json")
    cost = S.read_json(raw / "cost-base.json")
    prev_summary, prev_study = S.read_json(raw / "summary.json"), S.read_json(raw / "study.json")
    previous = (prev_summary, prev_study) if prev_summary and prev_study else None
    text = S.render_report(current, cost, previous, raw_dir_name=raw.name,
                           cost_file=f"{raw.name}/cost-base.json", gpu_cost=gpu_cost)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(text)
    return args.report


# ------------------------------------------------------------------------------------------ driver
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options; ``args.settings`` is the study-wide settings dict."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--variants", nargs="+", default=list(S.VARIANTS),
                   help="presets; the first is the baseline")
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2],
                   help="the baseline trains with every seed (the noise floor), other arms with the first")
    p.add_argument("--all-seeds", action="store_true", help="train every arm with every seed")
    p.add_argument("--qualities", nargs="+", type=int, default=[2, 5],
                   help="MSE λ-table qualities (1..6): one run each, or the evaluated anchors with "
                   "--variable-rate")
    p.add_argument("--variable-rate", action="store_true",
                   help="one variable-rate model per arm (the preset with rate_lambdas=VR_LAMBDAS)")
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--patch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--lr-milestones", nargs="*", default=[], metavar="STEP[:LR]", help="see hpcm train")
    p.add_argument("--downscale-prob", type=float, default=0.5, help="see `hpcm train --downscale-prob`")
    p.add_argument("--val-holdout", type=int, default=16,
                   help="training images held out for validation (the convergence check; never Kodak)")
    p.add_argument("--val-every", type=int, default=0, help="validation interval (0: steps / 10)")
    p.add_argument("--init-from", default=None, metavar="TEMPLATE",
                   help="warm start of every arm ({q}: the quality; with --variable-rate one file); '' for "
                   f"from scratch (default: {SHIPPED_INIT}, with --variable-rate {SHIPPED_INIT_VR})")
    p.add_argument("--data", nargs="+", default=[str(SHARED / "data" / "train")], help="training folders")
    p.add_argument("--kodak", default=str(SHARED / "data" / "kodak"))
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N Kodak images")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "phase_study_256", help="run root")
    p.add_argument("--report", type=Path, default=ROOT / "docs" / "results" / "phase_study.md",
                   help="Markdown report; raw files go to the folder of the same stem beside it")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--jobs", type=int, default=2, help="trainings run in parallel (one core each)")
    p.add_argument("--device", default="cpu", help="training device (cuda where a GPU is lent)")
    p.add_argument("--num-workers", type=int, default=1, help="data loader processes per training")
    p.add_argument("--profile-size", type=int, nargs=2, default=list(PROFILE_SIZE), metavar=("H", "W"))
    p.add_argument("--profile-repeat", type=int, default=3)
    p.add_argument("--resume", action="store_true", help="skip stages whose marker matches; continue runs")
    p.add_argument("--report-only", action="store_true", help="only rebuild the report")
    p.add_argument("--val", default=None, metavar="DIR",
                   help="validate on this folder instead of --val-holdout images (e.g. .gpu/holdout)")
    p.add_argument("--amp", default=None, choices=["bf16"], help="hpcm train --amp (GPU)")
    p.add_argument("--stages", default="train,export,eval,profile",
                   help="comma-separated stages to run (a GPU slot: train,export)")
    p.add_argument("--pack", type=Path, default=None, metavar="DIR",
                   help="after the stages: one .tar per run (weights, markers, metrics) into DIR, ≤ 8 files")
    p.add_argument("--pack-variants", nargs="*", default=None, metavar="VARIANT",
                   help="pack only these variants' runs (default: all)")
    p.add_argument("--unpack", type=Path, default=None, metavar="DIR",
                   help="first: restore the run folders of a --pack DIR into --out (then --resume goes on)")
    p.add_argument("--gpu-suite", type=Path, default=None,
                   help="a GPU suite results.json: import its codec rows as the report's GPU cost")
    p.add_argument("--measure-speed", type=int, default=0, metavar="STEPS",
                   help="only measure each variant's training speed (STEPS steps) into the raw folder")
    p.add_argument("--speed-note", default="", help="machine state, stored with --measure-speed")
    args = p.parse_args(argv)
    if args.init_from is None:
        args.init_from = SHIPPED_INIT_VR if args.variable_rate else SHIPPED_INIT
    args.out = args.out.resolve()
    if min(args.steps, args.batch_size, args.jobs, args.threads) < 1 or args.val_holdout < 0:
        p.error("--steps, --batch-size, --jobs and --threads must be ≥ 1, --val-holdout ≥ 0")
    if len(set(args.qualities)) != len(args.qualities) or len(set(args.seeds)) != len(args.seeds):
        p.error("--qualities and --seeds must be distinct")
    args.settings = {
        "variants": list(args.variants), "seeds": list(args.seeds), "all_seeds": args.all_seeds,
        "qualities": list(args.qualities), "variable_rate": args.variable_rate, "steps": args.steps,
        "batch_size": args.batch_size, "patch_size": args.patch_size, "lr": args.lr,
        "lr_milestones": list(args.lr_milestones), "downscale_prob": args.downscale_prob,
        "val_holdout": args.val_holdout, "val_every": args.val_every or None,
        "init_from": args.init_from or None, "data": [_portable(d) for d in args.data],
        "kodak": _portable(args.kodak), "limit": args.limit, "threads": args.threads,
        "jobs": args.jobs, "device": args.device}
    if args.val:
        args.settings["val"] = _portable(args.val)
    if args.amp:
        args.settings["amp"] = args.amp
    args.init_files = {}  # "q" or "vr" -> {"path", "sha256"} of the warm-start weights, hashed once here
    if args.init_from and not args.report_only:
        from hpcm.models.io import file_sha256

        for q in S.train_qualities(args.settings):
            path = S.init_template_path(str(ROOT / args.init_from) if not Path(args.init_from).is_absolute()
                                        else args.init_from, q)
            if not path.is_file():
                from hpcm.models.io import retired_quality_hint

                retired = retired_quality_hint("hpcm-tiny", q) if args.init_from == SHIPPED_INIT else ""
                p.error(f"--init-from: {path} ({_qkey(q)}) does not exist{retired}")
            args.init_files[_qkey(q)] = {"path": _portable(path), "sha256": file_sha256(path)}
    return args


def run_study(args: argparse.Namespace) -> Path:
    """All stages in order (skipping finished ones with ``--resume``), then the report."""
    import torch

    s = args.settings
    torch.set_num_threads(s["threads"])
    if args.unpack is not None:
        print(f"unpacked {S.unpack_run_folders(args.unpack, args.out)} runs into {args.out}", file=sys.stderr)
    study_path = args.out / "study.json"
    old = S.read_json(study_path)
    if args.report_only:
        if old is not None:  # the recorded study decides what to collect
            args.settings = old["settings"]
        return write_report(args)
    if args.measure_speed:
        doc = measure_speed(args, args.measure_speed)
        S.write_json(args.report.with_suffix("") / RAW_CURRENT / "speed.json", doc)
        return write_report(args)
    if old is not None and not args.resume:
        raise S.StudyError(f"{args.out} already holds a study: pass --resume or another --out")
    S.write_json(study_path, {"settings": s, "machine": S.machine_info(), "command": start_command(s),
                              "init_weights": args.init_files})
    runs = [(v, seed, q) for v, seed in S.study_arms(s) for q in S.train_qualities(s)]
    stages = set(args.stages.split(","))
    if "train" in stages:
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            for f in [pool.submit(train_stage, args, *r) for r in longest_first(args, runs)]:
                f.result()
    if "export" in stages:
        for r in runs:
            export_stage(args, *r)
    if "eval" in stages:  # decoding does not depend on the thread count (format v2 and later): use them all
        torch.set_num_threads(s["threads"] * args.jobs)
        for v, seed, q in runs:
            for eq in ([q] if q is not None else s["qualities"]):
                eval_stage(args, v, seed, q, eq)
        torch.set_num_threads(s["threads"])
    if "profile" in stages:
        for v in s["variants"]:
            profile_stage(args, v)
    if args.pack is not None:
        return pack_runs(args, runs)
    return write_report(args)


def longest_first(args: argparse.Namespace, runs: list[tuple[str, int, int | None]]
                  ) -> list[tuple[str, int, int | None]]:
    """``runs`` in the order the pool should start them: slowest variant first by the measured CPU seconds
    per step (the raw ``speed.json`` of ``--measure-speed``), so that the longest run does not start last
    and leave the other workers idle; the given order where nothing was measured."""
    speed = S.read_json(args.report.with_suffix("") / RAW_CURRENT / "speed.json") or {}
    cost = speed.get("cpu_s_per_step") or {}
    return sorted(runs, key=lambda r: -float(cost.get(r[0], 0.0)))


def pack_runs(args: argparse.Namespace, runs: list[tuple[str, int, int | None]]) -> Path:
    """``--pack``: :func:`hpcm.eval.study.pack_run_folders` of the chosen runs, with ``study.json``."""
    picked = [r for r in runs if not args.pack_variants or r[0] in args.pack_variants]
    files = S.pack_run_folders(args.out, picked, args.pack)
    total = sum(p.stat().st_size for p in files)
    print(f"packed {len(picked)} runs into {args.pack}: {len(files)} files, {total / 2**20:.1f} MiB",
          file=sys.stderr)
    return args.pack


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    try:
        report = run_study(args)
    except S.StudyError as exc:
        print(f"phase_study: error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {report}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
