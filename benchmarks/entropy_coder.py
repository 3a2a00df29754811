"""Benchmark of the hpcm symbol coder: 1M GGM symbols, encode/decode time and rate vs the ideal.

Setup (mirrors ecosystem.md §1.3): latent 1×64×125×125, scales log-uniform in [0.11, 20], residuals
round(σ·GGM(β=1.5) noise) (plus a few out-of-range values to exercise escapes), coded in 11 calls into one
stream like the HPCM schedule. Reports the minimum over repeats, and the rate of

- the stream (bytes·8 / symbols),
- ``estimate_bits`` (ideal code length under the quantised 16-bit tables),
- the continuous GGM likelihood at the symbols' own σ (the training-time rate).

Run: ``.venv/bin/python benchmarks/entropy_coder.py [--repeats 5] [--escapes 100]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy import stats

from hpcm.entropy.coder import SymbolDecoder, SymbolEncoder, estimate_bits
from hpcm.entropy.ggm import GGM
from hpcm.entropy.tables import build_ggm_cdf_table, get_scale_table, scale_to_index


def _best(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--escapes", type=int, default=100, help="out-of-range symbols injected")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    shape = (1, 64, 125, 125)
    n = int(np.prod(shape))
    sigma = np.exp(rng.uniform(np.log(0.11), np.log(20.0), size=shape)).astype(np.float32)
    sym = np.round(stats.gennorm.rvs(1.5, size=shape, random_state=rng) * sigma).astype(np.int32)
    flat = sym.reshape(-1)
    flat[rng.choice(n, args.escapes, replace=False)] = rng.integers(-(10**6), 10**6, size=args.escapes)

    table_scales = get_scale_table(0.12, 64, 60)
    t_table, table = _best(lambda: build_ggm_cdf_table(table_scales), 1)
    _ = table.models  # build constriction models once (cached on the table)
    sigma_t = torch.from_numpy(sigma)
    t_index, idx_t = _best(lambda: scale_to_index(sigma_t, table_scales), args.repeats)
    idx = idx_t.numpy()

    parts = np.array_split(np.arange(n), 11)

    def encode() -> bytes:
        enc = SymbolEncoder(table)
        for p in parts:
            enc.encode(flat[p], idx.reshape(-1)[p])
        return enc.finish()

    t_enc, data = _best(encode, args.repeats)

    def decode() -> np.ndarray:
        dec = SymbolDecoder(table, data)
        out = np.concatenate([dec.decode(idx.reshape(-1)[p]) for p in parts])
        dec.finish()
        return out

    t_dec, decoded = _best(decode, args.repeats)
    assert np.array_equal(decoded, flat), "round trip failed"

    est = estimate_bits(sym, idx, table)
    with torch.no_grad():
        lik = GGM().likelihood(torch.from_numpy(sym).double(), sigma_t.double())
    ggm_bits = float(-torch.log2(lik).sum())
    actual = 8 * len(data)

    threads = torch.get_num_threads()
    print(f"symbols: {n}  (escapes injected: {args.escapes}), 11 calls, torch threads {threads}")
    print(f"table build (60 rows): {t_table * 1e3:8.1f} ms")
    print(f"scale_to_index:        {t_index * 1e3:8.1f} ms")
    print(f"encode:                {t_enc * 1e3:8.1f} ms   ({n / t_enc / 1e6:.1f} Msym/s)")
    print(f"decode:                {t_dec * 1e3:8.1f} ms   ({n / t_dec / 1e6:.1f} Msym/s)")
    print(f"rate, stream:          {actual / n:.5f} bits/symbol")
    print(f"rate, estimate_bits:   {est / n:.5f} bits/symbol   (stream/estimate = {actual / est:.6f})")
    print(f"rate, GGM likelihood:  {ggm_bits / n:.5f} bits/symbol   (stream/GGM = {actual / ggm_bits:.6f})")


if __name__ == "__main__":
    main()
