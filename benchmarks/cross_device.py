"""Cross-device exactness (issue 16, item 8): encode on CUDA and decode on CPU, and the reverse.

For every preset (default: every registered preset but hpcm-large; trained weights where shipped, else the
deterministic initial weights, with the memory bank's zero-initialised fusion given random weights so the
bank takes part) and every Kodak image, a file of the current format is written on one device and decoded
on the other. A case fails when the decode raises (unresolvable decision, latent checksum): a wrong ŷ
cannot pass silently, the latent checksum is checked on every decode. Reported per preset: cases,
failures, side-stream corrections made by the decoders, the largest pixel difference between the CPU and
the CUDA reconstruction of the same file, and (``--deviation``) the largest |Δσ|, |Δμ| of CUDA against the
1-thread CPU reference on the first image (benchmarks/platform_deviation.py).

The loop is image-major (every preset gets image 1 before any gets image 2), so a time limit cuts images,
not presets. Needs a CUDA device; TF32 is kept off. Called by benchmarks/gpu_suite.py (section
``crossdev``, several worker processes) or: ``python benchmarks/cross_device.py [--presets ...]
[--images 24] [--crop 0] [--deviation] [--time-limit S] [--kodak DIR] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

KODAK = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kodak"
IMAGE_GLOBS = ("kodim*.png", "kodim*.webp")


def default_presets() -> list[str]:
    from hpcm.models.registry import list_models

    return [n for n in list_models() if n != "hpcm-large"]


def _images(kodak: Path, n: int, crop: int) -> list[tuple[str, np.ndarray]]:
    """The first ``n`` Kodak images of ``kodak`` (PNG or lossless WebP), optionally a top-left crop."""
    from PIL import Image

    paths = sorted({p for g in IMAGE_GLOBS for p in kodak.glob(g)}, key=lambda p: p.stem)[:n]
    out = []
    for p in paths:
        img = np.asarray(Image.open(p).convert("RGB"))
        out.append((p.stem, np.ascontiguousarray(img[:crop, :crop]) if crop else img))
    return out


def _load_pair(name: str, quality: int | None):
    """(CPU model, CUDA copy of it): the same weights on both devices."""
    import copy

    from gpu_suite import randomise_memory_output

    from hpcm.models.io import load_model

    cpu = load_model(name, quality=quality, device="cpu")
    if not getattr(cpu, "weights_info", {}).get("trained", True):
        randomise_memory_output(cpu)
    return cpu.eval(), copy.deepcopy(cpu).to("cuda").eval()


def run(presets: list[str] | None = None, n_images: int = 24, crop: int = 0, quality: int = 3,
        deviation: bool = False, time_limit: float | None = None, kodak: Path = KODAK,
        on_update=None) -> dict:
    """Encode on one device, decode on the other, both directions; returns per-preset results."""
    from hpcm.codec.api import decode, encode

    if not torch.cuda.is_available():
        raise SystemExit("cross_device: no CUDA device")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    t_start = time.perf_counter()
    images = _images(Path(kodak), n_images, crop)
    if not images:
        raise SystemExit(f"cross_device: no kodim*.png / kodim*.webp in {kodak}")
    results: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
                     "cpu_threads": torch.get_num_threads(), "images_available": len(images), "presets": {}}
    models: dict = {}
    for name in presets or default_presets():
        q = quality if name == "hpcm-tiny" else None
        cpu, gpu = _load_pair(name, q)
        models[name] = (cpu, gpu)
        rec = {"cases": 0, "images": 0, "failures": [], "corrections": 0, "max_pixel_diff": 0,
               "trained": bool(getattr(cpu, "weights_info", {}).get("trained", False))}
        if deviation:
            from platform_deviation import measure

            x = torch.from_numpy(images[0][1]).permute(2, 0, 1)[None].float() / 255
            side = 256 if sum(p.numel() for p in cpu.parameters()) > 10**7 else 4096  # Base: a crop
            x = x[..., : min(side, x.shape[-2] // 64 * 64), : min(side, x.shape[-1] // 64 * 64)]
            rec["deviation_image"] = f"{images[0][0]} {x.shape[-1]}x{x.shape[-2]}"
            try:
                top = cpu.quality_gains.quality_range[1] if cpu.quality_gains is not None else None
                rec["cuda_deviation"] = measure(cpu, x, ("cuda",), quality=top).get("cuda")
            except Exception as exc:  # noqa: BLE001 - reported, the exactness check goes on
                rec["cuda_deviation"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
            cpu.to("cpu")
        results["presets"][name] = rec
    for img_name, image in images:
        for name, (cpu, gpu) in models.items():
            if time_limit and time.perf_counter() - t_start > time_limit:
                results["truncated"] = True
                return results
            rec = results["presets"][name]
            rec["images"] += 1
            for enc_model, dec_model, label in ((gpu, cpu, "cuda->cpu"), (cpu, gpu, "cpu->cuda")):
                rec["cases"] += 1
                try:
                    data, _, _ = encode(enc_model, image)
                    out, _, times = decode(data, dec_model)
                    rec["corrections"] += int(times.extra["corrections"])
                    same, _, _ = decode(data, enc_model)
                    diff = int(np.abs(out.astype(np.int16) - same.astype(np.int16)).max())
                    rec["max_pixel_diff"] = max(rec["max_pixel_diff"], diff)
                except Exception as exc:  # noqa: BLE001 - every failure is reported
                    rec["failures"].append(f"{img_name} {label}: {type(exc).__name__}: {exc}"[:400])
            if on_update is not None:
                on_update(results)
    results["seconds"] = time.perf_counter() - t_start
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", nargs="+", default=None)
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--crop", type=int, default=0, help="top-left crop side (0: full images)")
    ap.add_argument("--deviation", action="store_true", help="also measure |Δσ|, |Δμ| CUDA vs CPU")
    ap.add_argument("--time-limit", type=float, default=None, help="stop adding images after this many s")
    ap.add_argument("--kodak", type=Path, default=Path(os.environ.get("HPCM_KODAK_DIR", KODAK)))
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--out", type=Path, default=None,
                    help="also write the results (JSON) here, after every image")
    args = ap.parse_args(argv)

    def save(res: dict) -> None:
        if args.out is not None:
            tmp = args.out.with_suffix(".tmp")
            tmp.write_text(json.dumps(res, indent=1))
            tmp.replace(args.out)

    res = run(args.presets, args.images, args.crop, deviation=args.deviation, time_limit=args.time_limit,
              kodak=args.kodak, on_update=save)
    save(res)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"device: {res['device']} (torch {res['torch']})")
        for name, rec in res["presets"].items():
            print(f"{name}: {rec['images']} images, {rec['cases']} cases, {len(rec['failures'])} failures, "
                  f"{rec['corrections']} corrections, max pixel diff {rec['max_pixel_diff']}")
            for f in rec["failures"][:5]:
                print(f"  {f}")
    failures = sum(len(r["failures"]) for r in res["presets"].values())
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
