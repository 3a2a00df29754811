"""Cross-device exactness (issue 16, item 8): encode on CUDA and decode on CPU, and the reverse.

For every preset (default: every registered Base-size and tiny preset; trained weights where shipped,
else the deterministic initial weights) and every Kodak image (optionally a crop), a format-v2 file is
written on one device and decoded on the other. A case fails when the decode raises (unresolvable
decision, latent checksum) — a wrong ŷ cannot pass silently, the latent checksum is checked on every
decode. Reported per preset: failures, side-stream corrections made by the decoders, the largest pixel
difference between the CPU and the CUDA reconstruction of the same file, and (``--deviation``) the
largest |Δσ|, |Δμ| of CUDA against the 1-thread CPU reference (benchmarks/platform_deviation.py).

Needs a CUDA device; TF32 is kept off (``hpcm.codec.api.deterministic_math``). Call :func:`run` from a
GPU suite, or: ``python benchmarks/cross_device.py [--presets ...] [--images 24] [--crop 0] [--json]``.
Base presets on the CPU take seconds per image; use ``--crop 256`` or fewer images under a time limit.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

KODAK = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kodak"


def default_presets() -> list[str]:
    from hpcm.models.registry import list_models

    return [n for n in list_models() if n != "hpcm-large"]


def _images(n: int, crop: int) -> list[tuple[str, np.ndarray]]:
    from hpcm.codec.image_io import read_image

    out = []
    for p in sorted(KODAK.glob("kodim*.png"))[:n]:
        img = read_image(p)
        out.append((p.name, np.ascontiguousarray(img[:crop, :crop]) if crop else img))
    return out


def run(presets: list[str] | None = None, n_images: int = 24, crop: int = 0, quality: int = 3,
        deviation: bool = False, time_limit: float | None = None) -> dict:
    """Encode on one device, decode on the other, both directions; returns per-preset results."""
    from hpcm.codec.api import decode, encode
    from hpcm.models.io import load_model

    if not torch.cuda.is_available():
        raise SystemExit("cross_device: no CUDA device")
    t_start = time.perf_counter()
    images = _images(n_images, crop)
    results: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "presets": {}}
    for name in presets or default_presets():
        q = quality if name == "hpcm-tiny" else None
        cpu = load_model(name, quality=q, device="cpu")
        gpu = load_model(name, quality=q, device="cuda")
        rec = {"cases": 0, "failures": [], "corrections": 0, "max_pixel_diff": 0}
        for img_name, image in images:
            if time_limit and time.perf_counter() - t_start > time_limit:
                rec["truncated"] = True
                break
            for enc_model, dec_model, label in ((gpu, cpu, "cuda->cpu"), (cpu, gpu, "cpu->cuda")):
                rec["cases"] += 1
                try:
                    data, _, _ = encode(enc_model, image)
                    dec_model.entropy_estimation.corrections = 0
                    out, _, _ = decode(data, dec_model)
                    rec["corrections"] += dec_model.entropy_estimation.corrections
                    same, _, _ = decode(data, enc_model)
                    diff = int(np.abs(out.astype(np.int16) - same.astype(np.int16)).max())
                    rec["max_pixel_diff"] = max(rec["max_pixel_diff"], diff)
                except Exception as exc:  # noqa: BLE001 - every failure is reported
                    rec["failures"].append(f"{img_name} {label}: {type(exc).__name__}: {exc}")
        if deviation:
            from platform_deviation import measure

            worst: dict = {}
            for _, image in images[:3]:
                x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
                pad_h, pad_w = (-x.shape[-2]) % 64, (-x.shape[-1]) % 64
                x = torch.nn.functional.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
                for key, val in measure(cpu, x, ("cuda",)).get("cuda", {}).items():
                    worst[key] = max(worst.get(key, 0.0), val)
            rec["cuda_deviation"] = worst
        results["presets"][name] = rec
        print(f"{name}: {json.dumps(rec)}", file=sys.stderr, flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", nargs="+", default=None)
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--crop", type=int, default=0, help="top-left crop side (0: full images)")
    ap.add_argument("--deviation", action="store_true", help="also measure |Δσ|, |Δμ| CUDA vs CPU")
    ap.add_argument("--time-limit", type=float, default=None, help="stop adding images after this many s")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    res = run(args.presets, args.images, args.crop, deviation=args.deviation, time_limit=args.time_limit)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"device: {res['device']} (torch {res['torch']})")
        for name, rec in res["presets"].items():
            print(f"{name}: {rec['cases']} cases, {len(rec['failures'])} failures, {rec['corrections']} "
                  f"corrections, max pixel diff {rec['max_pixel_diff']}")
            for f in rec["failures"][:5]:
                print(f"  {f}")
    failures = sum(len(r["failures"]) for r in res["presets"].values())
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
