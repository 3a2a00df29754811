"""The last step of ``scripts/gpu_train.sh``: held-out numbers before and after, and ``summary.md``.

Measures the starting weights (``--init``) and the exported result (``--weights``) on the carried held-out
images (``.gpu/holdout``: the 16 images of ``--val-holdout 16``) at every anchor quality of a variable-rate
model (its own quality for a fixed-rate one), with :func:`hpcm.train.trainer.evaluate` in float32 on
``--device``: likelihood bpp, 8-bit PSNR and the RD loss with each anchor's λ. Writes ``holdout.json`` and
``summary.md`` (the run's steps, crops seen, images/s, the validations of the run, the table) into
``--out``. This is a first look only: whether the weights are committed is decided on the CPU with
``experiments/holdout_compare.py`` (see docs/gpu.md).

    python scripts/gpu_train_report.py --run RUN_DIR --weights OUT/x.safetensors --init W.safetensors \
        --holdout .gpu/holdout --device cuda --out OUT [--max-images N] [--started EPOCH_SECONDS]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any


def measure(path: str, images: Any, device: str) -> dict[str, Any]:
    """Mean and per-anchor held-out metrics of one weights file (``{"error": ...}`` if it cannot load)."""
    import torch

    from hpcm.errors import HPCMError
    from hpcm.models.io import load_model
    from hpcm.train.loss import RateDistortionLoss
    from hpcm.train.trainer import _validate_all

    try:
        model = load_model(path, device=device)
    except (HPCMError, OSError, ValueError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    lmbda = (getattr(model, "weights_info", None) or {}).get("lambda") or 0.01  # fixed-rate models only
    t0 = time.perf_counter()
    res = _validate_all(model, images, RateDistortionLoss(lmbda), torch.device(device), False, None)
    return res | {"seconds": time.perf_counter() - t0}


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def anchors(res: dict[str, Any]) -> list[str]:
    return sorted({k.split("/")[0] for k in res if "/" in k}, key=lambda q: float(q[1:]))


def summary(
    args: argparse.Namespace, meta: dict, log: list[dict], before: dict, after: dict, crops: dict
) -> str:
    train = [e for e in log if e.get("split") == "train"]
    val = [e for e in log if e.get("split") == "val"]
    rates = [e["images_per_s"] for e in train[1:] or train if "images_per_s" in e]
    cfg = meta.get("train_config") or {}
    step = meta.get("step")
    crops_seen = step * cfg.get("batch_size", 0) if isinstance(step, int) else None
    milestones = " ".join(cfg.get("lr_milestones") or []) or "-"
    lines = [
        f"# GPU training slot: {cfg.get('model')} ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
        "",
        f"- machine: {meta.get('machine')}",
        f"- started from: {cfg.get('init_from') or 'initial weights'}",
        f"- steps: {step} (batch {cfg.get('batch_size')}, patch {cfg.get('patch_size')}, amp "
        f"{cfg.get('amp')}, lr {cfg.get('lr')}, milestones {milestones}), "
        f"crops seen: {crops_seen}, skipped steps: "
        f"{meta.get('skipped_steps')}",
        f"- training wall time: {meta.get('train_seconds', math.nan):.0f} s "
        f"(time limit {cfg.get('time_limit')} s); "
        f"median {statistics.median(rates) if rates else math.nan:.1f} images/s",
    ]
    if crops:
        passes = (
            f"; {crops_seen / max(crops.get('count') or 1, 1):.1f} passes over them" if crops_seen else ""
        )
        lines.append(
            f"- data: {crops.get('count')} crops of {crops.get('crop')}² (JPEG q{crops.get('jpeg_quality')})"
            f" from {crops.get('distinct_sources')} training images{passes}; "
            f"prepared at commit {crops.get('commit')}"
        )
    if args.started:
        lines.append(f"- whole command so far: {time.time() - args.started:.0f} s")
    if train:
        last = train[-1]
        lines.append(
            f"- last training window (step {last['step']}): loss {last.get('loss', math.nan):.4f}, "
            f"bpp {last.get('bpp', math.nan):.4f}, PSNR {last.get('psnr', math.nan):.2f} dB"
        )
    if val:
        lines += [
            "",
            "Validations during the run (held-out images, bf16 when the run used it):",
            "",
            "| step | loss | bpp | PSNR |",
            "|---|---|---|---|",
        ]
        lines += [f"| {e['step']} | {e['loss']:.4f} | {e['bpp']:.4f} | {e['psnr']:.2f} |" for e in val]
    lines += [
        "",
        f"Held-out images ({after.get('images', before.get('images'))} in {args.holdout}), float32, "
        "before (--init) and after (exported checkpoint_last):",
        "",
    ]
    if "error" in before or "error" in after:
        lines.append(f"- before: {before.get('error', 'ok')}; after: {after.get('error', 'ok')}")
    qs = anchors(after) or anchors(before)
    if qs and "error" not in after:
        lines += [
            "| quality | bpp before | bpp after | PSNR before | PSNR after | loss before | loss after |",
            "|---|---|---|---|---|---|---|",
        ]

        def cell(r: dict, q: str, key: str, fmt: str) -> str:
            v = r.get(key if q == "mean" else f"{q}/{key}")
            return format(v, fmt) if isinstance(v, int | float) else "—"

        for q in qs + ["mean"]:
            lines.append(
                f"| {q} | {cell(before, q, 'bpp', '.4f')} | {cell(after, q, 'bpp', '.4f')} | "
                f"{cell(before, q, 'psnr', '.2f')} | {cell(after, q, 'psnr', '.2f')} | "
                f"{cell(before, q, 'loss', '.4f')} | {cell(after, q, 'loss', '.4f')} |"
            )
        if "loss" in before and "loss" in after:
            better = sum(after[f"{q}/loss"] < before[f"{q}/loss"] for q in qs if f"{q}/loss" in before)
            lines += [
                "",
                f"Mean RD loss {before['loss']:.4f} -> {after['loss']:.4f} "
                f"({(after['loss'] / before['loss'] - 1) * 100:+.2f} %); lower at {better} of {len(qs)} "
                "qualities.",
            ]
    lines += ["", "Decide on the CPU with experiments/holdout_compare.py (docs/gpu.md), never by Kodak.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="the run folder of hpcm train")
    p.add_argument("--weights", required=True, help="the exported result")
    p.add_argument("--init", default="none", help="the starting weights (none: skip 'before')")
    p.add_argument("--holdout", default=".gpu/holdout")
    p.add_argument("--crops-manifest", default=".gpu/train-crops.json")
    p.add_argument("--device", default="cuda")
    p.add_argument("--max-images", type=int)
    p.add_argument("--started", type=float, help="epoch seconds when the whole command started")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    from hpcm.train.data import ValidationImages

    out, run = Path(args.out), Path(args.run)
    meta_path = run / "checkpoint_last.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    images = ValidationImages(args.holdout, args.max_images)
    after = (
        measure(args.weights, images, args.device) if Path(args.weights).exists() else {"error": "no weights"}
    )
    before = measure(args.init, images, args.device) if args.init != "none" else {"error": "no --init"}
    manifest = Path(args.crops_manifest)
    crops = json.loads(manifest.read_text()) if manifest.exists() else {}
    crops.pop("crops", None)
    (out / "holdout.json").write_text(
        json.dumps(
            {
                "holdout": str(args.holdout),
                "init": args.init,
                "weights": args.weights,
                "before": before,
                "after": after,
                "crops": crops,
            },
            indent=1,
        )
        + "\n"
    )
    text = summary(args, meta, read_jsonl(run / "metrics.jsonl"), before, after, crops)
    (out / "summary.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
