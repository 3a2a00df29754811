"""Width probe for a variable-rate preset that can reach high quality (issue 18 item 2).

Candidates are ``hpcm-tiny-vr`` with wider latents and transforms (same depths, cells, λ anchors):

    tiny   M=64,  N=64, g 32/64/96      (the shipped hpcm-tiny-vr)
    w96    M=96,  N=64, g 48/96/144
    w128   M=128, N=96, g 64/128/192
    w160   M=160, N=96, g 64/128/256

``python experiments/width_probe.py speed`` measures encode/decode wall time of each at 768x512 (one
Kodak image, 2 threads, initial weights — the network time does not depend on the weight values; the
entropy-coding time does, so the trained model's time is also measured where one exists). The training
probe trains each candidate from scratch at equal wall time (``experiments/width_probe.sh``) with
``--model width_probe:<name>`` (``PYTHONPATH=experiments``) and compares them on held-out training
images (``experiments/holdout_compare.py``-style likelihood bpp / PSNR at every anchor).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

CANDIDATES: dict[str, dict] = {
    "tiny": {},
    "w96": {"M": 96, "N": 64, "g_channels": (48, 96, 144)},
    "w128": {"M": 128, "N": 96, "g_channels": (64, 128, 192)},
    "w160": {"M": 160, "N": 96, "g_channels": (64, 128, 256)},
}


def config(name: str):
    from hpcm.models.registry import hpcm_tiny_vr

    return replace(hpcm_tiny_vr(), **CANDIDATES[name])


def build(name: str):
    from hpcm.models.hpcm import HPCM

    return HPCM(config(name))


def tiny():
    return build("tiny")


def w96():
    return build("w96")


def w128():
    return build("w128")


def w160():
    return build("w160")


def _speed(args: argparse.Namespace) -> None:
    import torch

    from hpcm.codec.api import compress_image, decompress_image
    from hpcm.codec.image_io import read_image

    torch.set_num_threads(args.threads)
    image = read_image(args.image)
    print(f"image {Path(args.image).name} {image.shape[1]}x{image.shape[0]}, {args.threads} threads, "
          f"quality {args.quality}, best of {args.repeat}")
    base = None
    for name in args.names:
        model = build(name).eval()
        params = sum(p.numel() for p in model.parameters())
        model.update(force=True)
        enc, dec = [], []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            data = compress_image(model, image, quality=args.quality)
            t1 = time.perf_counter()
            decompress_image(data, model)
            dec.append(time.perf_counter() - t1)
            enc.append(t1 - t0)
        e, d = min(enc), min(dec)  # best of N: the least disturbed by other load
        base = base or d
        print(f"{name:6s} {params / 1e6:6.2f} M params  encode {e:5.2f} s  decode {d:5.2f} s  "
              f"decode/tiny {d / base:4.2f}x  ({len(data)} bytes, initial weights)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    speed = sub.add_parser("speed")
    speed.add_argument("names", nargs="*", default=list(CANDIDATES))
    kodak = Path(__file__).resolve().parents[2] / "shared" / "data" / "kodak"
    speed.add_argument("--image", default=str(kodak / "kodim23.png"))
    speed.add_argument("--threads", type=int, default=2)
    speed.add_argument("--quality", type=float, default=8.0)
    speed.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if args.command == "speed":
        _speed(args)


if __name__ == "__main__":
    main()
