"""Platform deviation of the entropy parameters: the largest |Δσ|, |Δμ| between ways of running the network.

The decoder recomputes σ and μ of every step from ẑ and the ŷ decoded so far. This script measures how
much they move when the same network runs differently: 1 thread (reference), 2 threads, oneDNN off,
float64, and CUDA when available. To isolate the network's own arithmetic, every variant is fed the
reference run's ŷ pieces (a replay coder), so the deviations do not compound through different
decisions. It reports, per preset, the largest absolute and relative deviations over the coded
elements of all 11 steps, and the cosine-score gaps of the memory bank's top-k reads (multiref presets).

Run: ``python benchmarks/platform_deviation.py [--presets ...] [--quality 1 8] [--images N] [--crop 256]
[--pixels]``.
The function :func:`measure` is reusable (e.g. from a GPU suite: ``variants=("cuda",)``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

from hpcm.entropy.conditional import MEAN_SCALE_VERSION
from hpcm.models.hpcm import StepCoder

KODAK = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kodak"
DEFAULT_PRESETS = ("hpcm-tiny", "hpcm-phase2-tiny", "hpcm-multiref-phase2-tiny")


class _Record(StepCoder):
    """Eval coder: records the masked σ, μ of every step; when replaying, returns the given ŷ pieces."""

    def __init__(self, replay: list[torch.Tensor] | None = None) -> None:
        self.replay = replay
        self.pieces: list[torch.Tensor] = []
        self.sigmas: list[np.ndarray] = []
        self.mus: list[np.ndarray] = []

    def code(self, step, sigma, mu, mask, y):  # type: ignore[override]
        keep = mask.expand_as(sigma).bool()
        self.sigmas.append(sigma[keep].double().cpu().numpy())
        self.mus.append(mu[keep].double().cpu().numpy())
        if self.replay is not None:
            return self.replay[len(self.sigmas) - 1].to(device=sigma.device, dtype=sigma.dtype)
        piece = (torch.round((y - mu * mask) * mask) + mu * mask)
        self.pieces.append(piece.detach().cpu().double())
        return piece


class _Scores:
    """Wraps the memory banks' ``select`` to record the gap between the k-th and (k+1)-th score."""

    def __init__(self, model) -> None:
        self.gaps: list[float] = []
        self.banks = []
        memory = getattr(model, "memory", None)
        if memory is None:
            return
        for mod in memory.modules():
            if hasattr(mod, "select") and hasattr(mod, "topk"):
                self.banks.append(mod)

    @contextlib.contextmanager
    def active(self):
        originals = []
        for bank in self.banks:
            orig = bank.select
            originals.append((bank, orig))

            def select(scores, _orig=orig, _bank=bank):
                k = int(_bank.topk)
                if scores.shape[1] > k:
                    top = torch.sort(scores.double(), dim=1, descending=True).values
                    self.gaps.append(float((top[:, k - 1] - top[:, k]).min()))
                return _orig(scores)

            bank.select = select
        try:
            yield self
        finally:
            for bank, orig in originals:
                bank.select = orig


def _run(model, x, coder, dtype=torch.float32, device="cpu", quality=None):
    from hpcm.codec.api import deterministic_math

    m = model.to(device=device, dtype=dtype)
    xx = x.to(device=device, dtype=dtype)
    with torch.no_grad(), deterministic_math():
        y = m.g_a(xx)
        gains = m._gains(quality, 1)  # variable rate: the latent of that quality, as compress codes it
        if gains is not None:
            y = y * gains[0].to(device=device, dtype=dtype)
        z = m.h_a(y)
        z_hat = torch.round(z - m.means_hyper) + m.means_hyper
        params = m.h_s(z_hat)
        m.context_pass(params, coder, y)
    return y


@contextlib.contextmanager
def _variant(name: str):
    prev = torch.get_num_threads()
    try:
        if name == "1 thread":
            torch.set_num_threads(1)
            yield
        elif name == "2 threads":
            torch.set_num_threads(2)
            yield
        elif name == "oneDNN off":
            torch.set_num_threads(1)
            with torch.backends.mkldnn.flags(enabled=False):
                yield
        else:
            torch.set_num_threads(1)
            yield
    finally:
        torch.set_num_threads(prev)


def measure(model, x: torch.Tensor, variants=("2 threads", "oneDNN off", "float64"),
            quality: float | None = None) -> dict:
    """Largest deviations of σ and μ from the 1-thread float32 CPU reference, per variant.

    x: (1, 3, H, W) in [0, 1]; quality: required by variable-rate models, None otherwise.
    Returns {variant: {"dsigma", "rel_dsigma", "dmu", "rel_dmu", "rel_dmu_v4" (format 4's metric)}} and, for
    memory-bank models, "min_topk_gap": the smallest k-th vs (k+1)-th cosine-score gap of the reference.
    """
    model = model.eval()
    em = model.entropy_estimation
    em.update()
    scores = _Scores(model)
    ref = _Record()
    with _variant("1 thread"), scores.active():
        _run(model, x, ref, quality=quality)
    out: dict = {}
    if scores.gaps:
        out["min_topk_gap"] = min(scores.gaps)
    sig_ref = np.concatenate(ref.sigmas)
    mu_ref = np.concatenate(ref.mus)
    for name in variants:
        rec = _Record(replay=ref.pieces)
        dtype = torch.float64 if name == "float64" else torch.float32
        device = "cuda" if name == "cuda" else "cpu"
        with _variant(name):
            _run(model, x, rec, dtype=dtype, device=device, quality=quality)
        model.to(device="cpu", dtype=torch.float32)
        sig, mu = np.concatenate(rec.sigmas), np.concatenate(rec.mus)
        ds, dm = np.abs(sig - sig_ref), np.abs(mu - mu_ref)
        out[name] = {
            "dsigma": float(ds.max()),
            "rel_dsigma": float((ds / np.maximum(np.abs(sig_ref), 0.11)).max()),
            "dmu": float(dm.max()),
            "rel_dmu": float((dm / np.maximum(np.abs(mu_ref), 1.0)).max()),
            # the metric of format 4: over max(1, σ (at most the top boundary), |μ|)
            "rel_dmu_v4": float((dm / em.mean_scale(sig_ref, mu_ref, MEAN_SCALE_VERSION)).max()),
            "max_abs_mu": float(np.abs(mu_ref).max()),
        }
    return out


def decode_variants(model, x: torch.Tensor, variants=("2 threads", "oneDNN off", "float64"),
                    quality: float | None = None) -> dict:
    """Encode x with 1 thread (the side format of the model, 3 by default), decode it under each variant: ŷ
    identical? largest pixel change?

    Returns {variant: {"latent_equal", "corrections", "max_pixel_diff", "pixels_differing"}}.
    """
    from hpcm.entropy.conditional import latent_checksum
    from hpcm.errors import HPCMError

    def to_uint8(x_hat):
        return x_hat.float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu()

    with _variant("1 thread"), torch.no_grad():
        enc = model.compress(x, quality=quality)
        ref = to_uint8(model.decompress(enc["strings"], enc["shape"], quality=quality)["x_hat"])
    out = {}
    for name in variants:
        dtype = torch.float64 if name == "float64" else torch.float32
        device = "cuda" if name == "cuda" else "cpu"
        model.to(device=device, dtype=dtype)
        try:
            with _variant(name), torch.no_grad():
                try:
                    latent = model.decode_latent(enc["strings"], enc["shape"])
                except HPCMError as exc:  # a refusal is reported, not raised
                    out[name] = {"latent_equal": False, "corrections": 0, "max_pixel_diff": -1,
                                 "pixels_differing": -1, "error": str(exc)}
                    continue
                gains = model._gains(quality, 1)  # the checksum covers the coded ŷ, before the inverse gain
                inv = gains[1].to(device=device, dtype=dtype) if gains is not None else 1.0
                y_hat = latent.y_hat
                x_hat = to_uint8(model.g_s(y_hat * inv))
            diff = (x_hat.int() - ref.int()).abs()
            out[name] = {
                "latent_equal": latent_checksum(y_hat) == enc["latent_crc"],
                "corrections": latent.corrections,
                "max_pixel_diff": int(diff.max()),
                "pixels_differing": int((diff > 0).sum()),
            }
        finally:
            model.to(device="cpu", dtype=torch.float32)
    return out


def kodak_images(n: int, crop: int | None) -> list[tuple[str, torch.Tensor]]:
    from hpcm.codec.image_io import read_image

    paths = sorted(KODAK.glob("kodim*.png"))[:n]
    out = []
    for p in paths:
        img = read_image(p)
        if crop:
            img = img[:crop, :crop]
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).unsqueeze(0).float() / 255.0
        out.append((p.name, x))
    return out


def _models(presets: list[str], qualities: list[float]):
    """(preset, model, quality to code at) for each preset: a variable-rate model once per quality, a
    fixed-rate one with the weights of each quality that is shipped (preset initial weights otherwise)."""
    from hpcm.models.io import load_model

    for preset in presets:
        first = load_model(preset, quality=int(qualities[0]))
        if first.quality_gains is not None:
            for q in qualities:
                yield preset, first, q
        else:
            for i, q in enumerate(qualities):
                yield preset, first if i == 0 else load_model(preset, quality=int(q)), None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", nargs="+", default=list(DEFAULT_PRESETS))
    ap.add_argument("--quality", type=float, nargs="+", default=[3.0],
                    help="hpcm-tiny: its shipped level 3; variable-rate models: any in their range, e.g. 1 8")
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--crop", type=int, default=256, help="top-left crop side (0: full image)")
    ap.add_argument("--cuda", action="store_true", help="also compare CUDA (float32, TF32 off)")
    ap.add_argument("--pixels", action="store_true",
                    help="instead: encode with 1 thread, decode under each variant (ŷ equal? pixel change)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    if args.pixels:
        for preset, model, q in _models(args.presets, args.quality):
            worst: dict = {}
            for name, x in kodak_images(args.images, args.crop or None):
                names = ["2 threads", "oneDNN off", "float64"] + (["cuda"] if args.cuda else [])
                r = decode_variants(model, x, names, quality=q)
                print(f"{preset} {name}: {json.dumps(r)}", file=sys.stderr, flush=True)
                for k, v in r.items():
                    w = worst.setdefault(k, {"latent_equal": True, "corrections": 0, "max_pixel_diff": 0,
                                             "pixels_differing": 0})
                    w["latent_equal"] &= v["latent_equal"]
                    w["corrections"] += v["corrections"]
                    w["max_pixel_diff"] = max(w["max_pixel_diff"], v["max_pixel_diff"])
                    w["pixels_differing"] += max(0, v["pixels_differing"])
                    w["failures"] = w.get("failures", 0) + int(not v["latent_equal"])
            print(preset if q is None else f"{preset} q{q:g}", json.dumps(worst))
        return 0

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    variants = ["2 threads", "oneDNN off", "float64"] + (["cuda"] if args.cuda else [])
    results = {}
    for preset, model, q in _models(args.presets, args.quality):
        worst: dict = {}
        for name, x in kodak_images(args.images, args.crop or None):
            r = measure(model, x, variants, quality=q)
            for k, v in r.items():
                if k == "min_topk_gap":
                    worst[k] = min(worst.get(k, math.inf), v)
                    continue
                w = worst.setdefault(k, {})
                for kk, vv in v.items():
                    w[kk] = max(w.get(kk, 0.0), vv)
            print(f"{preset} {name}: " + json.dumps(r), file=sys.stderr, flush=True)
        results[preset if q is None else f"{preset} q{q:g}"] = worst
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for preset, worst in results.items():
            print(preset)
            for k, v in worst.items():
                print(f"  {k}: {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
