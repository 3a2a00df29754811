"""Scale table, quantised GGM CDF tables and the σ → table-index rule (spec hpcm.md §7.1).

A :class:`CdfTable` row r describes one discrete distribution over the integers
``offset[r] .. offset[r] + cdf_length[r] − 3`` plus one *escape* symbol (the tail mass), quantised to
``2**precision`` (16-bit) integer frequencies in which every symbol has frequency ≥ 1.

The rows are stored CompressAI-style as padded CDFs (``cdf[r, :cdf_length[r]]`` runs from 0 to 2^16),
so they can live in model buffers (``quantized_cdf_y``, ``cdf_length_y``, ``offset_y``) and a table can be
rebuilt from those three arrays alone.  For the coder the table also holds, per row, the float
weights that make ``constriction``'s ``Categorical(perfect=False)`` reproduce the integer distribution
*exactly* (see :func:`constriction_weights`), and the ideal code length −log2 p of every symbol.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch

__all__ = [
    "CdfTable",
    "get_scale_table",
    "build_ggm_cdf_table",
    "quantize_pmf",
    "scale_to_index",
    "constriction_weights",
    "ggm_tail_multiplier",
    "CONSTRICTION_PRECISION",
]

#: Probability precision (bits) of constriction's default ``AnsCoder`` / ``Categorical`` models.
CONSTRICTION_PRECISION = 24


def get_scale_table(min: float = 0.12, max: float = 64.0, levels: int = 60) -> torch.Tensor:  # noqa: A002
    """exp(linspace(ln min, ln max, levels)) → (levels,) float32.

    Evaluated exactly like the official code: linspace and exp in float32 torch (so the table, which
    the index rule compares σ with, matches the official ``scale_table`` buffer bit for bit).
    """
    if not (0 < min < max) or levels < 2:
        raise ValueError(f"need 0 < min < max and levels ≥ 2, got {min}, {max}, {levels}")
    return torch.exp(torch.linspace(math.log(min), math.log(max), levels, dtype=torch.float32))


def scale_to_index(sigma: torch.Tensor, scale_table: torch.Tensor) -> torch.Tensor:
    """Index rule of §7.1: the number of entries of ``scale_table[:-1]`` strictly smaller than σ.

    sigma: any shape (e.g. (B, C, H, W)) → torch.int32 of the same shape in [0, len(table) − 1].
    σ ≤ table[0] gives 0 (no lower bound is applied first). Both operands are compared in the wider of
    their dtypes (exact: float32 → float64 is lossless). NaN maps to the last index.
    """
    dtype = torch.promote_types(sigma.dtype, scale_table.dtype)
    if not dtype.is_floating_point:
        dtype = torch.float32
    boundaries = scale_table[:-1].to(device=sigma.device, dtype=dtype).contiguous()
    flat = sigma.detach().to(dtype).reshape(-1).contiguous()
    idx = torch.bucketize(flat, boundaries, out_int32=True, right=False)  # #{b : b < σ}
    return idx.reshape(sigma.shape)


def _upper_gamma_q(a: float, x: np.ndarray) -> np.ndarray:
    """Regularised upper incomplete gamma Q(a, x), float64 (torch's implementation: no SciPy import,
    which alone cost ≈ 0.8 s of every CLI call; tables agree with SciPy's exactly, tested)."""
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
    return torch.special.gammaincc(torch.full_like(xt, a), xt).numpy()


@lru_cache(maxsize=16)
def ggm_tail_multiplier(tail_mass: float = 1e-6, beta: float = 1.5) -> float:
    """Half-width u > 0 (in σ) with P(|X| > u) = ``tail_mass``: −gennorm.ppf(tail_mass/2, β), ≈5.4269.

    Solves Q(1/β, u^β) = tail_mass by bisection on t = u^β in float64 (Q falls monotonically in t).
    """
    if not 0.0 < tail_mass < 1.0 or beta <= 0:
        raise ValueError(f"need 0 < tail_mass < 1 and β > 0, got {tail_mass}, {beta}")
    a = 1.0 / beta
    lo, hi = 0.0, 1.0
    while _upper_gamma_q(a, np.array([hi]))[0] > tail_mass:
        lo, hi = hi, 2.0 * hi
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if _upper_gamma_q(a, np.array([mid]))[0] > tail_mass:
            lo = mid
        else:
            hi = mid
    return float(hi ** a)


def _ggm_lower_tail(u: np.ndarray, beta: float) -> np.ndarray:
    """F(u) for u ≤ 0, as ½·Q(1/β, |u|^β) (float64, no cancellation)."""
    return 0.5 * _upper_gamma_q(1.0 / beta, np.abs(u) ** beta)


def _ggm_pmf_row(scale: float, center: int, beta: float) -> tuple[np.ndarray, float]:
    """pmf over −center..center and the tail mass outside, for scale σ' (float64).

    Each bin is mirrored to the non-positive side (the GGM is symmetric) so that both CDF terms are
    lower-tail values: P(k) = F((−|k| + ½)/σ) − F((−|k| − ½)/σ) for k ≠ 0, P(0) = 1 − 2·F(−½/σ).
    """
    k = np.abs(np.arange(-center, center + 1, dtype=np.float64))
    pmf = _ggm_lower_tail(np.minimum(-k + 0.5, 0.0) / scale, beta) - _ggm_lower_tail((-k - 0.5) / scale, beta)
    pmf[center] = 1.0 - 2.0 * float(_ggm_lower_tail(np.array([-0.5 / scale]), beta)[0])
    tail = 2.0 * float(_ggm_lower_tail(np.array([-(center + 0.5) / scale]), beta)[0])
    return pmf, tail


def quantize_pmf(pmf: np.ndarray, precision: int = 16) -> np.ndarray:
    """Integer frequencies (int64, sum 2^precision, each ≥ 1) approximating a pmf (n,).

    Our scheme: every symbol first gets 1 plus floor(p·(T − n)) with T = 2^precision (so the sum is
    ≤ T); the remaining r < n units go, one each, to the r symbols whose cross-entropy drops most from
    one more unit, p·log(1 + 1/f) (ties broken by position, so the result is deterministic).
    """
    pmf = np.asarray(pmf, dtype=np.float64)
    n = pmf.shape[0]
    total = 1 << precision
    if n < 2 or n > total:
        raise ValueError(f"cannot quantise {n} symbols to {precision} bits")
    if not np.all(np.isfinite(pmf)) or np.any(pmf < 0) or pmf.sum() <= 0:
        raise ValueError("pmf must be finite, non-negative and not all zero")
    p = pmf / pmf.sum()
    freq = 1 + np.floor(p * (total - n)).astype(np.int64)
    remaining = total - int(freq.sum())
    if remaining > 0:
        gain = p * np.log1p(1.0 / freq)
        order = np.argsort(-gain, kind="stable")
        freq[order[:remaining]] += 1
    assert int(freq.sum()) == total and int(freq.min()) >= 1
    return freq


def constriction_weights(freq: np.ndarray, precision: int = 16) -> np.ndarray:
    """Float weights that make constriction's ``Categorical(w, perfect=False)`` equal ``freq`` exactly.

    constriction (24-bit) gives symbol i the left cumulative ⌊cum_w(i)·(2^24 − n)/Σw⌋ + i.  With
    w_i = 2^(24−precision)·f_i − 1 we get Σw = 2^24 − n, a scale of exactly 1, and integer partial sums
    (exact in float64), so the left cumulative is 2^(24−precision)·C_i: the 16-bit distribution, scaled.
    Verified by tests (exact code lengths of power-of-two probabilities).
    """
    shift = CONSTRICTION_PRECISION - precision
    if shift < 0:
        raise ValueError("precision above constriction's 24 bits")
    return (np.asarray(freq, dtype=np.float64) * float(1 << shift)) - 1.0


@dataclass(eq=False)
class CdfTable:
    """Quantised CDF tables, one row per scale (y) or channel (z).

    cdf: int32 (n, Lmax), row r valid on [0, cdf_length[r]) from 0 up to 2^precision.
    cdf_length: int32 (n,) = number of coded symbols + 1 = (2·center + 1) + 2.
    offset: int32 (n,) = −center (value of symbol 0).
    Derived (not part of equality): ``freqs`` (list of int64 (cdf_length−1,)), ``bits`` float64
    (n, Lmax − 1) ideal code length −log2 p of each symbol (padding = inf), ``max_symbol`` int32 (n,) =
    escape symbol = cdf_length − 2, and lazily built constriction models (``models``).
    """

    cdf: np.ndarray
    cdf_length: np.ndarray
    offset: np.ndarray
    precision: int = 16
    freqs: list[np.ndarray] = field(init=False, repr=False, compare=False)
    bits: np.ndarray = field(init=False, repr=False, compare=False)
    max_symbol: np.ndarray = field(init=False, repr=False, compare=False)
    _models: list | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        self.cdf = np.ascontiguousarray(np.asarray(self.cdf, dtype=np.int32))
        self.cdf_length = np.ascontiguousarray(np.asarray(self.cdf_length, dtype=np.int32).reshape(-1))
        self.offset = np.ascontiguousarray(np.asarray(self.offset, dtype=np.int32).reshape(-1))
        n = self.cdf_length.shape[0]
        if self.cdf.ndim != 2 or self.cdf.shape[0] != n or self.offset.shape[0] != n or n == 0:
            raise ValueError("cdf must be (n, Lmax) with cdf_length and offset of length n ≥ 1")
        total = 1 << self.precision
        self.freqs = []
        width = self.cdf.shape[1] - 1
        self.bits = np.full((n, max(width, 1)), np.inf, dtype=np.float64)
        for r in range(n):
            length = int(self.cdf_length[r])
            if length < 3 or length > self.cdf.shape[1]:
                raise ValueError(f"row {r}: cdf_length {length} out of range")
            row = self.cdf[r, :length].astype(np.int64)
            freq = np.diff(row)
            if row[0] != 0 or row[-1] != total or np.any(freq < 1):
                raise ValueError(f"row {r}: not a valid {self.precision}-bit CDF with nonzero frequencies")
            self.freqs.append(freq)
            self.bits[r, : length - 1] = self.precision - np.log2(freq)
        self.max_symbol = (self.cdf_length - 2).astype(np.int32)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CdfTable):
            return NotImplemented
        return (
            self.precision == other.precision
            and np.array_equal(self.cdf_length, other.cdf_length)
            and np.array_equal(self.offset, other.offset)
            and np.array_equal(self.cdf, other.cdf)
        )

    __hash__ = None  # type: ignore[assignment]

    @property
    def num_rows(self) -> int:
        return int(self.cdf_length.shape[0])

    @property
    def models(self) -> list:
        """One concrete ``constriction`` Categorical per row (built on first use), exact to ``freqs``."""
        if self._models is None:
            import constriction

            categorical = constriction.stream.model.Categorical
            self._models = [
                categorical(constriction_weights(f, self.precision), perfect=False) for f in self.freqs
            ]
        return self._models

    @classmethod
    def from_freqs(cls, freqs: list[np.ndarray], offsets: np.ndarray, precision: int = 16) -> CdfTable:
        """Pack per-row integer frequencies (each summing to 2^precision) into a padded CDF table."""
        lengths = np.array([len(f) + 1 for f in freqs], dtype=np.int32)
        cdf = np.zeros((len(freqs), int(lengths.max())), dtype=np.int32)
        for r, f in enumerate(freqs):
            cdf[r, 1 : len(f) + 1] = np.cumsum(f)
            cdf[r, len(f) + 1 :] = cdf[r, len(f)]
        offsets = np.asarray(offsets, dtype=np.int32)
        return cls(cdf=cdf, cdf_length=lengths, offset=offsets, precision=precision)

    def as_tensors(self) -> dict[str, torch.Tensor]:
        """{"cdf", "cdf_length", "offset"} as int32 tensors, e.g. for model buffers."""
        return {
            "cdf": torch.from_numpy(self.cdf.copy()),
            "cdf_length": torch.from_numpy(self.cdf_length.copy()),
            "offset": torch.from_numpy(self.offset.copy()),
        }


def build_ggm_cdf_table(
    scales: torch.Tensor | np.ndarray,
    beta: float = 1.5,
    scale_bound: float = 0.12,
    tail_mass: float = 1e-6,
    precision: int = 16,
) -> CdfTable:
    """Quantised GGM CDFs, one row per entry of ``scales`` (flattened), per spec §7.1.

    s' = max(s, scale_bound); center = ceil(s'·multiplier) evaluated in float32 like the official
    ``update`` (multiplier = −gennorm.ppf(tail_mass/2, β) ≈ 5.4269); pmf over −center..center in float64
    plus the tail mass as the escape symbol; quantised with :func:`quantize_pmf`.
    For z pass ``scales_hyper`` (1, N, 1, 1): row n is channel n.
    """
    if isinstance(scales, torch.Tensor):
        s32 = scales.detach().to(device="cpu", dtype=torch.float32).reshape(-1)
    else:
        s32 = torch.as_tensor(np.asarray(scales, dtype=np.float32)).reshape(-1)
    if s32.numel() == 0:
        raise ValueError("no scales")
    if not bool(torch.isfinite(s32).all()):
        raise ValueError("scales must be finite")
    beta = float(beta)
    s32 = torch.clamp(s32, min=float(np.float32(scale_bound)))
    multiplier = ggm_tail_multiplier(float(tail_mass), beta)
    centers = torch.ceil(s32 * multiplier).to(torch.int64)
    max_center = ((1 << precision) - 2) // 2
    if int(centers.max()) > max_center:
        raise ValueError(f"scale {float(s32.max())} needs more than {precision}-bit precision")
    freqs = []
    for s, c in zip(s32.double().tolist(), centers.tolist()):
        pmf, tail = _ggm_pmf_row(s, int(c), beta)
        freqs.append(quantize_pmf(np.append(pmf, tail), precision))
    return CdfTable.from_freqs(freqs, -centers.numpy().astype(np.int32), precision)
