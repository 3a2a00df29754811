"""Install exported weights as the package's bundled models (``src/hpcm/weights/``) and update the manifest.

Each input is an ``hpcm export`` file (``.safetensors`` + ``.json``) of one quality. The weights are
copied tensor for tensor (the fingerprint is re-checked on load); the metadata gets a ``note`` (how the
model was trained and what it measured, printed by ``hpcm compress``), the absolute checkpoint path is
made relative to the repository, and ``src/hpcm/weights/SHA256SUMS`` lists every shipped file with its
digest (``tests/test_bundled_weights.py`` checks it).

Usage::

    .venv/bin/python experiments/install_weights.py runs/tiny-q2.safetensors ... \\
        --note "hpcm-tiny, 5,000 steps of batch 8 x 128² on CPU; Kodak BD-rate vs JPEG -40 %"
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "src" / "hpcm" / "weights"
MAX_BYTES = 32 * 1024 * 1024  # one shipped file; tests/test_bundled_weights.py also bounds the folder


def write_manifest(folder: Path) -> Path:
    """``SHA256SUMS`` (``sha256sum`` format) of every ``.safetensors``/``.json`` file in ``folder``."""
    from hpcm.models.io import file_sha256

    lines = [f"{file_sha256(p)}  {p.name}" for p in sorted(folder.iterdir())
             if p.suffix in (".safetensors", ".json")]
    out = folder / "SHA256SUMS"
    out.write_text("\n".join(lines) + "\n")
    return out


def _portable(path: str) -> str:
    """``path`` relative to the repository (``../shared/...`` for the shared data), else unchanged."""
    try:
        return os.path.relpath(Path(path).resolve(), ROOT)
    except ValueError:
        return path


def install(src: Path, note: str, folder: Path = WEIGHTS, before: tuple[int, int] | None = None) -> Path:
    """Copy the exported weights ``src`` into ``folder`` as ``<preset>-q<Q>.safetensors``; return the path.

    ``before``: (steps, crops) the run's starting weights had already been trained for; recorded with the
    run's own counts as ``total_steps`` / ``total_crops_seen`` (``step`` and ``crops_seen`` count only the
    run's own steps)."""
    from hpcm.models.io import load_model, read_weights_metadata, save_weights

    meta = read_weights_metadata(src)
    model = load_model(str(src))  # checks the fingerprint
    fingerprint = model.weights_info["fingerprint"]
    preset, quality = meta.get("preset"), meta.get("quality")
    variable_rate = bool(getattr(model, "variable_rate", False))
    if not preset or (quality is None and not variable_rate):
        raise SystemExit(f"{src}: metadata lacks preset or quality")
    training = dict(meta.get("training") or {})
    if training.get("checkpoint"):
        training["checkpoint"] = _portable(training["checkpoint"])
    training["data"] = [_portable(d) for d in training.get("data") or []]
    if before is not None:
        training["total_steps"] = int(training.get("step", 0)) + before[0]
        training["total_crops_seen"] = int(training.get("crops_seen", 0)) + before[1]
    extra = {k: v for k, v in meta.items() if k not in ("config", "fingerprint", "format", "format_version")}
    extra.update(training=training, note=note, trained=True)
    model.weights_info = {}
    folder.mkdir(parents=True, exist_ok=True)
    dst = folder / (f"{preset}.safetensors" if variable_rate else f"{preset}-q{quality}.safetensors")
    save_weights(model, dst, extra, overwrite=True, half=meta.get("storage") == "float16")  # keep the storage
    size = dst.stat().st_size
    if size > MAX_BYTES:
        raise SystemExit(f"{dst} is {size} bytes: over the {MAX_BYTES >> 20} MiB limit for shipped weights")
    reloaded = load_model(str(dst))
    if reloaded.weights_info["fingerprint"] != fingerprint:
        raise SystemExit(f"{dst}: fingerprint changed while installing")
    record_release(folder, fingerprint, preset, None if variable_rate else quality)
    return dst


def record_release(folder: Path, fingerprint: str, preset: str, quality: int | None) -> None:
    """Append the newly shipped weights to ``RELEASES.json`` (files written with them must stay decodable:
    the decoder names the release that shipped a fingerprint it no longer has)."""
    import datetime
    import json
    import subprocess

    path = folder / "RELEASES.json"
    doc = json.loads(path.read_text()) if path.exists() else {"weights": []}
    if any(e["fingerprint"] == fingerprint for e in doc["weights"]):
        return
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
        release = f"the commit after {head}"
    except (OSError, subprocess.CalledProcessError):
        release = None
    doc["weights"].append({"fingerprint": fingerprint, "preset": preset, "quality": quality,
                           "release": release, "date": datetime.date.today().isoformat()})
    path.write_text(json.dumps(doc, indent=1) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("weights", nargs="+", type=Path, help="exported .safetensors files (one per quality)")
    p.add_argument("--note", required=True, help="how they were trained and what they measured")
    p.add_argument("--folder", type=Path, default=WEIGHTS)
    p.add_argument("--before", nargs=2, type=int, metavar=("STEPS", "CROPS"),
                   help="steps and crops the run's starting weights had been trained for (a continued run)")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    from hpcm.models.io import file_sha256

    for src in args.weights:
        dst = install(src, args.note, args.folder, tuple(args.before) if args.before else None)
        print(f"installed {dst.relative_to(ROOT) if dst.is_relative_to(ROOT) else dst} "
              f"({dst.stat().st_size / 1e6:.2f} MB, sha256 {file_sha256(dst)[:16]}…)", file=sys.stderr)
    print(f"wrote {write_manifest(args.folder)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
