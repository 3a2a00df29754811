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
    "small": {"M": 192, "g_channels": (64, 128, 192)},  # the registered hpcm-small-vr (session 9)
    # transform capacity at M = 192 (session 22; docs/results "what more transform capacity would cost"):
    # widened from the shipped hpcm-small-vr with `hpcm widen`, so both start where it stands
    "small_g384": {"M": 192, "g_channels": (64, 128, 384)},
    "small_g96": {"M": 192, "g_channels": (96, 192, 384)},
}


def config(name: str):
    from hpcm.models.registry import hpcm_tiny_vr

    return replace(hpcm_tiny_vr(), **CANDIDATES[name])


def build(name: str):
    from hpcm.models.hpcm import HPCM

    return HPCM(config(name))


def __getattr__(name: str):
    """``width_probe:<candidate>`` factories for ``hpcm train --model`` / ``hpcm widen --model``."""
    if name in CANDIDATES:
        return lambda: build(name)
    raise AttributeError(f"module 'width_probe' has no attribute {name!r}")


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


def _holdout_images(count: int):
    from hpcm.train.data import find_images
    from hpcm.train.trainer import split_holdout

    data = Path(__file__).resolve().parents[2] / "shared" / "data" / "train"
    return split_holdout(find_images([str(data)]), count)


def _pca(args: argparse.Namespace) -> None:
    """PSNR of the best linear code with K numbers per 16x16 RGB block (what y at H/16 with M=K channels
    carries), on held-out training images: block PCA fitted on training images, kept at full precision."""
    import numpy as np
    from PIL import Image

    def blocks(paths: list[Path]) -> np.ndarray:
        out = []
        for path in paths:
            a = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255.0
            h, w = a.shape[0] // 16 * 16, a.shape[1] // 16 * 16
            tiles = a[:h, :w].reshape(h // 16, 16, w // 16, 16, 3).transpose(0, 2, 1, 3, 4)
            out.append(tiles.reshape(-1, 768))
        return np.concatenate(out)

    train, held = _holdout_images(16)
    rng = np.random.default_rng(0)
    fit = blocks([train[i] for i in rng.choice(len(train), args.fit_images, replace=False)])
    test = blocks(held)
    mean = fit.mean(0)
    _, vecs = np.linalg.eigh(np.cov((fit - mean).T))
    vecs = vecs[:, ::-1]
    print(f"block PCA (16x16x3 = 768 values) fitted on {args.fit_images} training images, "
          f"tested on the {len(held)} held-out ones")
    for k in args.components:
        basis = vecs[:, :k]
        rec = np.clip((test - mean) @ basis @ basis.T + mean, 0, 1)
        print(f"  {k:4d} numbers per block: {10 * np.log10(1 / np.mean((rec - test) ** 2)):6.2f} dB")


def _ceiling(args: argparse.Namespace) -> None:
    """A trained model's transform ceiling: PSNR with ŷ = y (no quantisation) next to the codec's."""
    import torch

    from hpcm.eval.metrics import psnr, to_uint8
    from hpcm.models.io import load_model
    from hpcm.train.data import ValidationImages
    from hpcm.train.trainer import pad_to_multiple, size_multiple

    torch.set_num_threads(args.threads)
    _, held = _holdout_images(16)
    images = ValidationImages(held[: args.images])
    model = load_model(args.weights).eval()
    for q in args.qualities:
        coded = exact = 0.0
        for _, x in images:
            h, w = x.shape[-2:]
            xp = pad_to_multiple(x, size_multiple(model))
            with torch.no_grad():
                out = model(xp, training=False, quality=q)
                gain, inverse = model.quality_gains.gains(torch.tensor([q]))
                unquantised = model.g_s(model.g_a(xp) * gain * inverse)
            coded += psnr(to_uint8(x), to_uint8(out["x_hat"][..., :h, :w].clamp(0, 1)))
            exact += psnr(to_uint8(x), to_uint8(unquantised[..., :h, :w].clamp(0, 1)))
        n = len(images)
        print(f"q{q:g}: codec {coded / n:.2f} dB, y unquantised {exact / n:.2f} dB ({n} held-out images)")


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
    pca = sub.add_parser("pca")
    pca.add_argument("--components", type=int, nargs="+", default=[64, 96, 128, 160, 192, 256, 320])
    pca.add_argument("--fit-images", type=int, default=300)
    ceiling = sub.add_parser("ceiling")
    ceiling.add_argument("weights", nargs="?", default="hpcm-tiny-vr")
    ceiling.add_argument("--qualities", type=float, nargs="+", default=[1.0, 4.0, 8.0])
    ceiling.add_argument("--images", type=int, default=8)
    ceiling.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    {"speed": _speed, "pca": _pca, "ceiling": _ceiling}[args.command](args)


if __name__ == "__main__":
    main()
