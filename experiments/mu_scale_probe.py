"""Which scale should a μ decision's tolerance band follow? (session 18; docs/determinism.md "Format 4")

For hpcm-small-vr (shipped weights) at q1, q4, q8 on three 256² Kodak crops, every coded element's σ, μ and
its largest |Δμ| over 2 threads, oneDNN off and float64 against 1 thread (each variant fed the reference ŷ,
as ``benchmarks/platform_deviation.py`` does). For each candidate normaliser s of the μ edge distance it
prints the smallest δ covering every element (margin 1) and the expected number of near-edge μ decisions
at that δ, Σ min(1, 2·δ·s·2^5): the side stream grows with it, so at equal margin smaller is better.
Also |Δμ| by |μ| range. Run: ``python experiments/mu_scale_probe.py [-o OUT.json]`` (~5 min, 2 cores).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import platform_deviation as pdv  # noqa: E402


class _Channels(pdv._Record):
    """Also records the channel of every coded element."""

    def __init__(self, replay=None) -> None:
        super().__init__(replay)
        self.channels: list[np.ndarray] = []

    def code(self, step, sigma, mu, mask, y):  # type: ignore[override]
        self.channels.append(mask.expand_as(sigma).bool().nonzero()[:, 1].numpy())
        return super().code(step, sigma, mu, mask, y)


def probe(model, quality: float, images) -> dict:
    gains = model._gains(quality, 1)[0].detach().reshape(-1).double().numpy()
    parts: dict[str, list[np.ndarray]] = {"sigma": [], "mu": [], "dmu": [], "gain": []}
    for _, x in images:
        ref = _Channels()
        with pdv._variant("1 thread"):
            pdv._run(model, x, ref, quality=quality)
        mu = np.concatenate(ref.mus)
        dmu = np.zeros_like(mu)
        for name in ("2 threads", "oneDNN off", "float64"):
            rec = _Channels(replay=ref.pieces)
            with pdv._variant(name):
                pdv._run(model, x, rec, dtype=torch.float64 if name == "float64" else torch.float32,
                         quality=quality)
            model.to(dtype=torch.float32)
            dmu = np.maximum(dmu, np.abs(np.concatenate(rec.mus) - mu))
        parts["sigma"].append(np.concatenate(ref.sigmas))
        parts["mu"].append(mu)
        parts["dmu"].append(dmu)
        parts["gain"].append(gains[np.concatenate(ref.channels)])
    sigma, mu, dmu, gain = (np.concatenate(parts[k]) for k in ("sigma", "mu", "dmu", "gain"))
    am = np.abs(mu)
    norms = {f"max({k},|mu|)": np.maximum(k, am) for k in (1, 2, 4, 8, 16)}
    norms["max(g_c,|mu|)"] = np.maximum(gain, am)
    norms["max(mean gain,|mu|)"] = np.maximum(gains.mean(), am)
    norms["max(1,sigma,|mu|)"] = np.maximum(np.maximum(1, sigma), am)
    out: dict = {"elements": int(mu.size), "max_abs_mu": float(am.max()), "max_dmu": float(dmu.max())}
    for name, s in norms.items():
        need = float((dmu / s).max())
        near = float(np.minimum(1, 2 * need * s * 32).sum())
        out[name] = {"delta_needed": need, "near_edge_at_margin_1": near}
    edges = [0, 0.1, 0.5, 1, 2, 5, 10, 20, 50, 200]
    out["max_dmu_by_abs_mu"] = [
        {"abs_mu": [lo, hi], "elements": int(((am >= lo) & (am < hi)).sum()),
         "max_dmu": float(dmu[(am >= lo) & (am < hi)].max(initial=0.0))}
        for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    return out


def main(argv: list[str] | None = None) -> int:
    from hpcm.models.io import load_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="hpcm-small-vr")
    ap.add_argument("--quality", type=float, nargs="+", default=[1.0, 4.0, 8.0])
    ap.add_argument("-o", "--out", type=Path)
    args = ap.parse_args(argv)
    model = load_model(args.model).eval()
    images = pdv.kodak_images(3, 256)
    results = {f"q{q:g}": probe(model, q, images) for q in args.quality}
    text = json.dumps({"model": args.model, "images": [n for n, _ in images], "crop": 256,
                       "results": results}, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
