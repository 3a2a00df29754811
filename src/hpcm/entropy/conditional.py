"""The conditional entropy model of y and the step coders of HPCM's step loop (one seam, three modes).

:class:`ConditionalGGM` owns everything that the training forward, the encoder and the decoder must agree
on for y: the scale table and its quantised CDFs, the GGM likelihood (it *is* the model's ``GGM``, so the
official state-dict names stay), the rule that maps σ to a table index, the grid that μ is put on, and
:meth:`ConditionalGGM.quantize` / :meth:`ConditionalGGM.dequantize`. The three step coders
(:class:`LikelihoodCoder`, :class:`EncodeCoder`, :class:`DecodeCoder`) only call these.

Exact decoding on any platform (format versions 2-4, docs/format.md "Exact decoding")
-------------------------------------------------------------------------------------
The decoder recomputes σ and μ in floating point; another thread count, oneDNN on or off, another CPU or
a GPU moves them in the last bits (measured: relative deviations ≤ 2.8e-5 for σ and ≤ 3.3e-6 for μ over
all presets, docs/determinism.md). Two things make the decoded ŷ bit-exact anyway:

1. **μ on a grid.** μ is rounded to a multiple of 2^-k (``mean_grid_bits`` k = 5), so
   ŷ = q + μ_grid is an exact dyadic number on every platform; the later steps then see the same ŷ.
2. **Every decision is resolved.** The only float → integer decisions are the scale index (σ against the
   table boundaries) and the μ bin (μ·2^k against the half-integers). An element whose value lies within
   the tolerance of an edge may be decided differently by another platform. Per step the encoder writes a
   short *syndrome* of its decisions to a side stream; the decoder computes its own decisions and, when the
   syndromes differ, finds the near-edge decision whose flip explains the difference (else, best effort,
   2-4 among the 16 nearest their edges). A deviation that cannot be resolved is a clean ``FormatError``;
   the latent checksum in the header catches anything else.

Format 4 (default): the side stream of format 3; the μ band is measured against max(1, σ, |μ|) instead of
max(1, |μ|). μ deviates by about the same *absolute* amount for all elements of a step whose activations
are large, so small μ of a wide distribution were the tight spot (the default model at high quality:
δ_μ 2.0x its largest deviation at q8 under format 3, 6.4x under format 4 with the same weights;
docs/determinism.md "Format 4").
Format 3 (still read; :class:`SideWriterV3`): tolerances per decision type, δ_σ = 1.5e-4 and δ_μ = 3e-5
(``SCALE_TOLERANCE``, ``MEAN_TOLERANCE``); the syndrome is the XOR of pseudo-random 64-bit weights of the
decisions with odd value, cut to h bits (any ±1 move of decision i toggles w_i); the decoder flips, among
its decisions within δ of an edge whose weight matches, the one nearest its edge, and the encoder chooses
(h, salt) so that no two decisions the decoder could confuse (normalised distances summing to ≤ 2.2)
share their low h bits: one wrong decision per step is always corrected. Widths are coded as a per-image
offset from round(2·log2 n) plus a unary per-step option index. About 20 bytes per Kodak image.
Format 2 (:meth:`ConditionalGGM.write_side_v2`, still read): one δ = 2e-4, an additive syndrome with a
3-bit width code and a 1-bit salt per step; about 32 bytes per Kodak image.
Coding the position of every near-edge element instead would cost 2-8 % of the file (150-900 such
elements per Kodak image at δ = 5e-5 alone).
"""

from __future__ import annotations

import math
import zlib
from abc import ABC, abstractmethod
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hpcm.entropy.ggm import GGM
from hpcm.entropy.side_bits import (
    BAND_BITS,
    BAND_SHARE,
    BAND_VERSION,
    MEAN_TOLERANCE,
    SCALE_TOLERANCE,
    V3_MAX_BITS,
    V3_OFFSET_BITS,
    V3_SALTS,
    SideReader,
    SideWriter,
    file_mean_tolerance,
    read_side_head,
)
from hpcm.errors import FormatError, HPCMError
from hpcm.models import schedule as S

__all__ = [
    "CODING_VERSIONS",
    "MEAN_GRID_BITS",
    "SIDE_FORMAT",
    "MEAN_TOLERANCE",
    "SCALE_TOLERANCE",
    "TOLERANCE",
    "SYNDROME_BITS",
    "ConditionalGGM",
    "Decisions",
    "SideWriter",
    "SideReader",
    "SideWriterV3",
    "SideReaderV3",
    "StepCoder",
    "LikelihoodCoder",
    "EncodeCoder",
    "DecodeCoder",
    "file_mean_tolerance",
    "latent_checksum",
    "ste_round",
]

#: μ is put on multiples of 2^-MEAN_GRID_BITS (format version 2).
MEAN_GRID_BITS = 5
#: δ: relative tolerance band around every decision edge (σ relative to the boundary, μ relative to
#: max(1, |μ|)). 70x (shipped weights) / 7x (any preset) the largest deviation measured between 1 and 2
#: threads, oneDNN off and float64 (docs/determinism.md).
TOLERANCE = 2e-4
#: Syndrome widths the encoder may choose per step (3-bit code in the side stream).
SYNDROME_BITS = (14, 16, 17, 18, 19, 20, 22, 32)
WIDTH_CODE_BITS = 3
#: Salts per width (1-bit code).
SALTS = 2
SALT_BITS = 1
#: The encoder guarantees unique single-flip syndromes for elements within this many δ of an edge. A decoder
#: candidate (within δ by the decoder's values, which deviate by < δ) is within 2δ by the encoder's values.
ENCODER_BAND = 2.2

#: Several wrong decisions in one step: subsets of up to MAX_FLIPS of the RANKED candidates nearest their
#: edges are searched (best effort, see ConditionalGGM._ranked_search).
MAX_FLIPS = 4
RANKED = 16

# -- format version 3 (docs/format.md "Side stream, version 3") --
#: Coding rules written by default (2: per-step width code + salt + additive syndrome; 3: below; 4: the
#: side stream of 3 with the μ distance of MEAN_SCALE_VERSION; 5: that of 4 with a per-file μ band).
SIDE_FORMAT = 5
#: The coding rules a ``version`` argument selects (the file format versions, docs/format.md): 1, the official
#: unquantised μ without a side stream; 2 and 3, μ on the grid with that side-stream layout; 4, the layout of
#: 3 with μ distances over max(1, σ, |μ|); 5, that of 4 with the file's μ band (BAND_VERSION).
CODING_VERSIONS = (1, 2, 3, 4, 5)
#: From this version on, a μ decision's edge distance is divided by max(1, min(σ, top boundary), |μ|), not
#: by max(1, |μ|): μ's deviation between platforms follows the scale of the step's activations, which σ
#: tracks (measured: docs/determinism.md "Format 4").
MEAN_SCALE_VERSION = 4
#: v3 distances are normalised by their type's δ; a decoder candidate has normalised distance < 1 (by its
#: own values). Two decisions whose normalised distances sum to ≤ PAIR_BAND (2 + margin) could be confused by
#: the decoder's tie-break, so the encoder gives them different syndrome changes.
PAIR_BAND = 2.2


@lru_cache(maxsize=16)
def _combinations(n: int, t: int) -> np.ndarray:
    """All t-subsets of range(n) as an int array (C(n, t), t)."""
    from itertools import combinations

    return np.array(list(combinations(range(n), t)), dtype=np.int64).reshape(-1, t)


def ste_round(x: Tensor) -> Tensor:
    """Round in the forward pass, identity gradient."""
    return x + (torch.round(x) - x).detach()


def latent_checksum(y_hat: Tensor) -> int:
    """CRC-32 of ŷ as little-endian float32 in C order, -0.0 normalised to +0.0 (stored in v2 headers)."""
    a = (y_hat.detach().to(device="cpu", dtype=torch.float32) + 0.0).contiguous().numpy()
    return zlib.crc32(a.astype("<f4", copy=False).tobytes())


# --- syndromes --------------------------------------------------------------------------------------


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 arrays (wrapping arithmetic; platform independent)."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _weights_at(step: int, salt: int, positions: np.ndarray) -> np.ndarray:
    """Odd pseudo-random uint64 weights of the decisions at ``positions`` (a fixed function of step, salt and
    the position)."""
    seed = np.uint64((step * 64 + salt) * 0x100000001B3 & 0xFFFFFFFFFFFFFFFF)
    return _splitmix64(_splitmix64(positions.astype(np.uint64) ^ seed)) | np.uint64(1)


@lru_cache(maxsize=128)
def _weights(step: int, salt: int, n: int) -> np.ndarray:
    """The weights of all n decisions of a step (cached; read-only)."""
    w = _weights_at(step, salt, np.arange(n, dtype=np.uint64))
    w.flags.writeable = False
    return w


def _syndrome(w: np.ndarray, d: np.ndarray, bits: int) -> int:
    with np.errstate(over="ignore"):
        total = int(np.sum(w * d.astype(np.uint64), dtype=np.uint64))
    return total & ((1 << bits) - 1)


def _flip_values(w: np.ndarray, sign: np.ndarray, bits: int) -> np.ndarray:
    """Syndrome change (mod 2^bits) of moving each decision by ``sign`` (±1)."""
    mask = (1 << bits) - 1
    w = w.astype(np.int64) & mask  # low bits survive the cast (bits ≤ 32)
    return np.where(sign > 0, w, (-w) & mask).astype(np.int64)


# --- format v3: XOR syndromes of the decision parities -----------------------------------------------


def _weights_v3_at(step: int, salt: int, positions: np.ndarray) -> np.ndarray:
    """v3 weights of the decisions at ``positions``: splitmix64(splitmix64(i XOR seed)), no forced bit."""
    seed = np.uint64((step * 64 + salt) * 0x100000001B3 & 0xFFFFFFFFFFFFFFFF)
    return _splitmix64(_splitmix64(positions.astype(np.uint64) ^ seed))


@lru_cache(maxsize=128)
def _weights_v3(step: int, salt: int, n: int) -> np.ndarray:
    """v3 weights of all n decisions of a step (cached; read-only)."""
    w = _weights_v3_at(step, salt, np.arange(n, dtype=np.uint64))
    w.flags.writeable = False
    return w


def _xor_syndrome(w: np.ndarray, d: np.ndarray) -> int:
    """XOR of the weights of the odd decisions (64 bits; a ±1 move of decision i toggles w_i)."""
    if d.size == 0:
        return 0
    return int(np.bitwise_xor.reduce(w * (d & 1).astype(np.uint64)))


def _max_ctz(x: np.ndarray) -> int:
    """The largest number of trailing zero bits among uint64 values (64 if one is 0; 0 for none)."""
    if x.size == 0:
        return 0
    with np.errstate(over="ignore"):
        low = x & (~x + np.uint64(1))  # the lowest set bit of each (a power of two; 0 for 0)
    if int(low.min()) == 0:
        return 64
    return int(low.max()).bit_length() - 1


def base_bits(n: int) -> int:
    """round(2·log2 n) in integer arithmetic (⌊log2(2 n⁴)⌋ // 2; 0 for n = 0): the v3 width predictor."""
    return ((2 * n**4).bit_length() - 1) // 2 if n > 0 else 0


def _reverse_bits(x: np.ndarray) -> np.ndarray:
    """Each uint64 with its 64 bits in reverse order."""
    x = x.astype(np.uint64, copy=True)
    for shift, mask in ((1, 0x5555555555555555), (2, 0x3333333333333333), (4, 0x0F0F0F0F0F0F0F0F)):
        s, m = np.uint64(shift), np.uint64(mask)
        x = ((x >> s) & m) | ((x & m) << s)
    return x.byteswap()


def _confusable_width(w: np.ndarray, a: np.ndarray) -> int:
    """The narrowest syndrome width h at which no two decisions the decoder could confuse share their low h
    weight bits: 1 + the longest common low-bit run of w_i, w_j over pairs with a_i + a_j ≤ PAIR_BAND (0 for
    none; 65 for equal weights). ``w``: uint64 weights, ``a``: their float32 normalised distances
    (< PAIR_BAND), in any order.

    Sorted once by the bit-reversed weights, the decisions sharing their low h bits are runs; a run holds a
    confusable pair iff at least two of its members lie within PAIR_BAND − (its smallest a) (the pair rule
    a_j ≤ PAIR_BAND − a_i is monotone). A galloping search over h, O(n) per probe after the sort.
    :func:`_confusable_width_pairs` enumerates the pairs instead (O(n²); the reference in the tests)."""
    if a.size < 2:
        return 0
    rev = _reverse_bits(w)
    order = np.argsort(rev)  # the order within a run of equal weights does not matter
    rev, a = rev[order], a[order]

    def collides(h: int) -> bool:
        first = np.zeros(a.size, dtype=bool)  # the first member of each run of equal low h bits
        first[0] = True
        if h:
            key = rev >> np.uint64(64 - h)
            first[1:] = key[1:] != key[:-1]
        starts = np.flatnonzero(first)
        limit = PAIR_BAND - np.minimum.reduceat(a, starts)  # float32, as the pair rule is written everywhere
        within = a <= limit[np.cumsum(first) - 1]
        return bool((np.add.reduceat(within.astype(np.int64), starts) >= 2).any())

    # gallop from round(2·log2 n) (where the answer usually lies, ± a few) to a bracket, then bisect
    guess = min(max(base_bits(a.size), 1), 63)
    step = 1
    if collides(guess):
        lo, hi = guess, None
        while hi is None:
            nxt = min(lo + step, 64)
            if not collides(nxt):
                hi = nxt
            elif nxt == 64:
                return 65  # equal weights: no width separates them
            else:
                lo, step = nxt, 2 * step
    else:
        lo, hi = None, guess
        while lo is None:
            nxt = max(hi - step, 0)
            if collides(nxt):
                lo = nxt
            elif nxt == 0:
                return 0  # no confusable pair
            else:
                hi, step = nxt, 2 * step
    while hi - lo > 1:  # collides(lo), not collides(hi)
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if collides(mid) else (lo, mid)
    return hi


def _confusable_width_pairs(w: np.ndarray, a: np.ndarray) -> int:
    """:func:`_confusable_width` by enumerating every confusable pair (O(n²) memory and time)."""
    order = np.argsort(a, kind="stable")
    w, a = w[order], a[order]
    last = np.searchsorted(a, PAIR_BAND - a, side="right") - 1
    count = np.maximum(last - np.arange(a.size), 0)
    first = np.repeat(np.arange(a.size), count)
    offs = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    second = first + 1 + offs
    return _max_ctz(w[first] ^ w[second]) + 1 if first.size else 0


class _StepV3:
    """What the v3 encoder keeps of a step until the image is done: the decisions and, per salt, the
    narrowest syndrome width that separates every confusable pair of near-edge decisions."""

    __slots__ = ("step", "dec", "nd", "hmin")

    def __init__(self, step: int, dec: Decisions, nd: np.ndarray) -> None:
        self.step, self.dec, self.nd = step, dec, nd
        near = np.flatnonzero(nd < PAIR_BAND)
        hmin = np.zeros(V3_SALTS, dtype=np.int64)
        if near.size:
            a = nd[near]
            for salt in range(V3_SALTS):
                w = _weights_v3_at(step, salt, near)
                # a single flip changes the syndrome (nonzero low bits); no confusable pair shares them
                hmin[salt] = max(_max_ctz(w) + 1, _confusable_width(w, a))
        self.hmin = hmin

    def choice(self, p: int) -> tuple[int, int, int]:
        """(t, width, salt) of the first working option of the enumeration that starts at width p."""
        t = min(V3_SALTS * max(0, int(h) - p) + s for s, h in enumerate(self.hmin))
        return t, p + t // V3_SALTS, t % V3_SALTS


class SideWriterV3:
    """Format-v3 side stream: the steps are collected, then one width offset F for the image is chosen and
    each step is written as a unary option index t (its width and salt) and its XOR syndrome. From
    ``version`` 5 on, the μ band exponent e follows F: the widest band within BAND_SHARE of
    ``coded_bytes``."""

    def __init__(self, entropy_model: ConditionalGGM, version: int = 3) -> None:
        self.em = entropy_model
        self.version = version
        self.decisions: list[tuple[int, Decisions]] = []

    def add(self, step: int, dec: Decisions) -> None:
        self.decisions.append((step, dec))

    def steps(self, band: int = 0) -> list[_StepV3]:
        """The collected steps with μ band exponent ``band`` (δ_μ = mean_tolerance·2^band)."""
        tol = self.em.mean_tolerance * 2.0**band
        return [_StepV3(step, dec, self.em.normalized(dec, tol)) for step, dec in self.decisions]

    @staticmethod
    def costs(steps: list[_StepV3]) -> np.ndarray:
        """Side-stream bits of ``steps`` (before the byte padding and the band field) for every value of the
        offset field."""
        fields = np.arange(1 << V3_OFFSET_BITS)
        bits = np.full(fields.size, V3_OFFSET_BITS, dtype=np.int64)
        salts = np.arange(V3_SALTS)
        for st in steps:
            p = np.maximum(0, base_bits(st.dec.vector.size) - fields)  # (F,)
            t = (V3_SALTS * np.maximum(0, st.hmin[None, :] - p[:, None]) + salts[None, :]).min(axis=1)
            bits += t + 1 + p + t // V3_SALTS
        return bits

    def choose_band(self, coded_bytes: int) -> tuple[int, list[_StepV3]]:
        """(e, steps): the widest μ band whose stream stays within max(BAND_SHARE of ``coded_bytes``, the
        narrowest band's stream) (0, format 4's band, before ``BAND_VERSION``). Tried from the widest down, so
        a large file computes its steps once."""
        if self.version < BAND_VERSION:
            return 0, self.steps(0)
        tried: dict[int, tuple[int, list[_StepV3]]] = {}

        def cost(band: int) -> int:
            if band not in tried:
                steps = self.steps(band)
                tried[band] = (int(self.costs(steps).min()), steps)
            return tried[band][0]

        share = int(BAND_SHARE * 8 * coded_bytes)
        widest = (1 << BAND_BITS) - 1
        budget = share if cost(widest) <= share else max(share, cost(0))
        band = next((b for b in range(widest, 0, -1) if cost(b) <= budget), 0)
        cost(band)
        return band, tried[band][1]

    def finish(self, coded_bytes: int = 0) -> bytes:
        """The stream; ``coded_bytes``: the size of the file's other streams (sets the μ band, format 5)."""
        band, steps = self.choose_band(coded_bytes)
        out = SideWriter()
        field = int(np.argmin(self.costs(steps)))  # the cheapest; the smallest field among equals
        out.write(field, V3_OFFSET_BITS)
        if self.version >= BAND_VERSION:
            out.write(band, BAND_BITS)
        for st in steps:
            n = st.dec.vector.size
            t, h, salt = st.choice(max(0, base_bits(n) - field))
            if h > V3_MAX_BITS:
                raise HPCMError(f"step {st.step}: no syndrome of at most {V3_MAX_BITS} bits separates its "
                                "near-edge decisions")
            out.write((1 << t) - 1, t)  # t ones, then a zero
            out.write(0, 1)
            w = _weights_v3(st.step, salt, n)
            syn = _xor_syndrome(w, st.dec.vector) & ((1 << h) - 1)
            out.write(syn, h)
            self.em._self_check_v3(st, w, h, syn)
        return out.finish()


class SideReaderV3:
    """Reads a :class:`SideWriterV3` stream step by step (``mean_tolerance``: δ_μ at band 0)."""

    def __init__(self, data: bytes, version: int = 3, mean_tolerance: float = MEAN_TOLERANCE) -> None:
        self.bits = SideReader(data)
        self.version = version
        self.field: int | None = None
        #: the file's δ_μ (known once the first step is read)
        self.mean_tolerance = mean_tolerance
        #: decisions of this decode that the side stream corrected (diagnostics)
        self.corrections = 0

    def read_step(self, n: int) -> tuple[int, int, int]:
        """(width, salt, syndrome) of the next step, whose decision vector has n entries."""
        if self.field is None:
            self.field, self.mean_tolerance = read_side_head(self.bits, self.version, self.mean_tolerance)
        t = 0
        while self.bits.read(1):
            t += 1
            if t > V3_SALTS * (V3_MAX_BITS + 1):
                raise FormatError("side stream is corrupt (option index too large)")
        h = max(0, base_bits(n) - self.field) + t // V3_SALTS
        if h > V3_MAX_BITS:
            raise FormatError(f"side stream is corrupt (syndrome width {h})")
        return h, t % V3_SALTS, self.bits.read(h)

    def finish(self) -> None:
        self.bits.finish()


class Decisions:
    """The integer decisions of one step (packed elements) and how far each is from its edge.

    index: scale-table indexes (n,); bins: μ-grid bins (n,) (int64). ``dist``: (2n,) relative distance of
    each decision (indexes first, then bins) to its nearest edge; ``sign``: (2n,) ±1, the direction in
    which that edge lies (the decision another platform might have taken is ``d + sign``).
    """

    def __init__(self, index: np.ndarray, bins: np.ndarray, dist: np.ndarray, sign: np.ndarray) -> None:
        self.index, self.bins, self.dist, self.sign = index, bins, dist, sign
        self._vector: np.ndarray | None = None

    @property
    def vector(self) -> np.ndarray:
        """[index | bins] (2n,) int64 (computed once; do not modify)."""
        if self._vector is None:
            self._vector = np.concatenate((self.index, self.bins))
        return self._vector

    def with_vector(self, d: np.ndarray) -> Decisions:
        n = self.index.size
        out = Decisions(d[:n], d[n:], self.dist, self.sign)
        out._vector = d
        return out


# --- the conditional entropy model ---------------------------------------------------------------------


class ConditionalGGM(GGM):
    """GGM conditional entropy model of y: tables, index rule, μ grid, quantize, likelihood, symbol coding.

    ``mean_grid_bits``: k, μ is put on multiples of 2^-k (None: the official, unquantised μ; format v1).
    ``tolerance``: δ of the decision bands (format v2). State-dict keys are those of :class:`GGM`.
    Methods whose rules depend on the file format take its ``version`` (``CODING_VERSIONS``) as an argument:
    the module holds no per-call state (a decode's corrections are counted on its side reader).
    """

    scale_table: Tensor

    def __init__(self, beta: float = 1.5, scale_bound: float = 0.12, likelihood_bound: float = 1e-9,
                 scale_table: tuple[float, float, int] = (0.12, 64.0, 60),
                 mean_grid_bits: int | None = MEAN_GRID_BITS, tolerance: float = TOLERANCE) -> None:
        super().__init__(beta, scale_bound, likelihood_bound)
        self._table_args = (float(beta), float(scale_bound))
        self.scale_table_spec = (float(scale_table[0]), float(scale_table[1]), int(scale_table[2]))
        self.mean_grid_bits = mean_grid_bits
        self.tolerance = float(tolerance)
        self.scale_tolerance = SCALE_TOLERANCE
        self.mean_tolerance = MEAN_TOLERANCE
        self.register_buffer("scale_table", torch.empty(0), persistent=False)
        self.table: Any = None  # CdfTable of the y scales, built by update()
        self._edge_tables: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    # -- tables --------------------------------------------------------------------------------------

    def update(self, force: bool = False) -> bool:
        """Build the scale table and its quantised CDFs (§7.1); True if (re)built."""
        from hpcm.entropy import tables

        if not force and self.table is not None and self.scale_table.numel():
            return False
        lo, hi, levels = self.scale_table_spec
        table = tables.get_scale_table(lo, hi, levels)
        self.scale_table = table.to(self.beta.device)
        beta, scale_bound = self._table_args
        self.table = tables.build_ggm_cdf_table(table, beta=beta, scale_bound=scale_bound)
        b32 = table[:-1].numpy().astype(np.float32)
        lb = np.log(b32)
        inf = np.array([np.inf], dtype=np.float32)
        # ln of the boundary below / above each index (±inf where there is none)
        self._edge_tables = (b32, np.concatenate((-inf, lb)), np.concatenate((lb, inf)))
        return True

    # -- the rules both sides share --------------------------------------------------------------------

    def scale_index(self, sigma: Tensor) -> Tensor:
        """σ → int32 table index (§7.1): the number of table boundaries strictly below σ."""
        from hpcm.entropy.tables import scale_to_index

        return scale_to_index(sigma, self.scale_table)

    def mean_bins(self, mu: Tensor) -> Tensor:
        """μ → its grid bin round(μ·2^k) (float tensor of integers; half to even)."""
        return torch.round(mu * (2.0 ** self.mean_grid_bits))

    def grid_bits(self, version: int = SIDE_FORMAT) -> int | None:
        """k of the μ grid under format ``version`` (None: no grid, the official μ; version 1 has none)."""
        if version not in CODING_VERSIONS:
            raise ValueError(f"unknown coding version {version} (known: {CODING_VERSIONS})")
        return None if version == 1 else self.mean_grid_bits

    def mean_grid(self, mu: Tensor, training: bool = False, version: int = SIDE_FORMAT) -> Tensor:
        """μ on the grid of format ``version``: bin·2^-k (exact); straight-through in training; μ itself
        when there is no grid."""
        bits = self.grid_bits(version)
        if bits is None:
            return mu
        g = self.mean_bins(mu) * (2.0**-bits)
        return mu + (g - mu).detach() if training else g

    def quantize(self, y: Tensor, mu: Tensor, mask: Tensor, training: bool = False) -> Tensor:
        """Symbols q = round((y − μ)·mask) (straight-through rounding in training); μ already on the grid."""
        r = (y - mu * mask) * mask
        return ste_round(r) if training else torch.round(r)

    @staticmethod
    def dequantize(q: Tensor, mu: Tensor, mask: Tensor) -> Tensor:
        """The ŷ piece q + μ·mask: the one line that training, encoder and decoder share."""
        return q + mu * mask

    def decisions(self, sigma_p: Tensor, mu_p: Tensor, version: int = SIDE_FORMAT) -> Decisions:
        """Natural decisions (index, μ bin) of packed σ, μ, with their edge distances and directions.

        The index equals :meth:`scale_index` (#boundaries < σ, compared exactly in float32; NaN → last) and
        the bin :meth:`mean_bins` (round half to even of μ·2^k, an exact power-of-two scaling). Distances:
        for σ |ln σ − ln b| to the nearest boundary b (≈ the relative distance), for μ
        (0.5 − |μ·2^k − bin|)·2^-k / max(1, |μ|), from ``version`` 4 on over max(1, min(σ, b_top), |μ|)
        (a NaN σ left out); NaN never counts as near an edge.
        """
        s = sigma_p.detach().reshape(-1).to(device="cpu", dtype=torch.float32).numpy()
        m = mu_p.detach().reshape(-1).to(device="cpu", dtype=torch.float32).numpy()
        b32, lb_lo, lb_hi = self._edge_tables
        n = s.size
        dist = np.empty(2 * n, dtype=np.float32)
        sign = np.empty(2 * n, dtype=np.int64)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            ls = np.log(s)
            index = self._table_index(s, ls)
            d_lo = ls - lb_lo[index]
            d_hi = lb_hi[index] - ls
            np.minimum(d_lo, d_hi, out=dist[:n])
            np.subtract(1, 2 * (d_lo < d_hi), out=sign[:n])
            k = self.mean_grid_bits
            t = m * np.float32(2.0**k)
            rounded = np.rint(t)
            bins = np.where(np.isfinite(rounded), rounded, np.float32(0)).astype(np.int64)
            norm = self.mean_scale(s, m, version)
            np.multiply(np.float32(0.5) - np.abs(t - rounded), np.float32(2.0**-k), out=dist[n:])
            np.divide(dist[n:], norm, out=dist[n:])
            np.subtract(2 * (t >= rounded), 1, out=sign[n:])
        dist[np.isnan(dist)] = np.inf
        return Decisions(index, bins, dist, sign)

    def mean_scale(self, sigma: np.ndarray, mu: np.ndarray, version: int = SIDE_FORMAT) -> np.ndarray:
        """What a μ decision's edge distance is divided by (float32 arrays of packed σ, μ): max(1, |μ|), from
        ``version`` 4 on max(1, min(σ, top boundary), |μ|) (a NaN σ is ignored)."""
        norm = np.maximum(np.float32(1.0), np.abs(mu))
        if version >= MEAN_SCALE_VERSION:
            np.fmax(norm, np.fmin(sigma, self._edge_tables[0][-1]), out=norm)
        return norm

    def _table_index(self, s: np.ndarray, ls: np.ndarray) -> np.ndarray:
        """#table boundaries < σ (int64; NaN → the last index), like ``np.searchsorted(b32, s, "left")``: an
        estimate from ln σ on the log-spaced table, then exact float32 comparisons move it to the rule's
        value (a searchsorted over unsorted keys costs ~20x more)."""
        b32, lb_lo, _ = self._edge_tables
        last = b32.size
        step = (float(lb_lo[-1]) - float(lb_lo[1])) / max(last - 1, 1)
        est = np.clip((ls - lb_lo[1]) * np.float32(1.0 / step) + np.float32(1.0), 0, last)
        # ln σ is NaN for σ < 0 (index 0) and for NaN (the last index)
        index = np.where(np.isnan(est), np.where(np.isnan(s), last, 0), est).astype(np.int64)
        padded = np.concatenate(([-np.inf], b32, [np.inf])).astype(np.float32)  # padded[i] = b32[i - 1]
        for _ in range(last + 1):  # a few rounds at most (the estimate is within one of the rule)
            down = padded[index] >= s  # boundary index-1 is not below σ
            up = padded[index + 1] < s  # boundary index is below σ
            if not (down.any() or up.any()):
                break
            index = index - down + up
        nan = np.isnan(s)
        if nan.any():
            index[nan] = last
        return index

    # -- side information: dispatch on the layout -------------------------------------------------------

    def side_writer(self, version: int = SIDE_FORMAT) -> SideWriter | SideWriterV3:
        """A writer for the side stream of format ``version`` (2, or 3-5: the layout of 3, from 5 with the
        μ band field)."""
        return SideWriterV3(self, version) if self._side_layout(version) == 3 else SideWriter()

    def side_reader(self, data: bytes, version: int = SIDE_FORMAT) -> SideReader | SideReaderV3:
        """A reader of the side stream ``data`` of format ``version`` (2, or 3-5: the layout of 3)."""
        if self._side_layout(version) == 3:
            return SideReaderV3(data, version, self.mean_tolerance)
        return SideReader(data)

    def _side_layout(self, version: int) -> int:
        if self.grid_bits(version) is None:
            raise ValueError(f"format version {version} of this model has no side stream (no μ grid)")
        return min(version, 3)

    def write_side(self, step: int, dec: Decisions, side: SideWriter | SideWriterV3) -> None:
        """Encoder: record the step's side information (v3: collected, written by ``side.finish()``)."""
        if isinstance(side, SideWriterV3):
            side.add(step, dec)
        else:
            self.write_side_v2(step, dec, side)

    def read_side(self, step: int, dec: Decisions, side: SideReader | SideReaderV3) -> Decisions:
        """Decoder: read the step's side information and return the encoder's decisions (or FormatError);
        the decisions it corrects are counted on ``side.corrections``."""
        if isinstance(side, SideReaderV3):
            h, salt, syn = side.read_step(dec.vector.size)
            resolved = self._resolve_v3(step, dec, h, salt, syn, mean_tolerance=side.mean_tolerance)
        else:
            resolved = self.read_side_v2(step, dec, side)
        if resolved is not dec:
            side.corrections += int(np.count_nonzero(resolved.vector != dec.vector))
        return resolved

    # -- side information (format v3) ---------------------------------------------------------------

    def normalized(self, dec: Decisions, mean_tolerance: float | None = None) -> np.ndarray:
        """Edge distances in units of the type's tolerance: σ decisions / δ_σ, μ decisions / δ_μ (float32;
        ``mean_tolerance``: the file's δ_μ, by default ``self.mean_tolerance``)."""
        n = dec.index.size
        nd = np.empty_like(dec.dist)
        np.multiply(dec.dist[:n], np.float32(1.0 / self.scale_tolerance), out=nd[:n])
        band = self.mean_tolerance if mean_tolerance is None else mean_tolerance
        np.multiply(dec.dist[n:], np.float32(1.0 / band), out=nd[n:])
        return nd

    def _resolve_v3(self, step: int, dec: Decisions, h: int, salt: int, syn: int,
                    nd: np.ndarray | None = None, own: int | None = None,
                    weights: np.ndarray | None = None, mean_tolerance: float | None = None) -> Decisions:
        """Decoder rule of v3: Δ = S ⊕ S(d'); among the decisions within δ of an edge (normalised distance < 1
        by the decoder's values) whose weight matches Δ in the low h bits, flip the one nearest its edge;
        else, best effort, 2..MAX_FLIPS of the RANKED nearest whose weights XOR to Δ."""
        mask = (1 << h) - 1
        d = dec.vector
        w = _weights_v3(step, salt, d.size) if weights is None else weights
        if own is None:
            own = _xor_syndrome(w, d)
        delta = (syn ^ own) & mask
        if delta == 0:
            return dec
        if nd is None:
            nd = self.normalized(dec, mean_tolerance)
        cand = np.flatnonzero(nd < 1.0)
        vals = (w[cand] & np.uint64(mask)).astype(np.int64)
        hits = np.flatnonzero(vals == delta)
        flips: list[int] = []
        if hits.size:  # the nearest matching decision (the encoder made sure no confusable pair collides)
            flips = [int(cand[hits[np.argmin(nd[cand[hits]])]])]
        elif cand.size >= 2:
            # v3 syndromes can be short: per subset size, only as many of the nearest candidates as give at
            # most 2^h / 8 subsets (a chance match ≤ 1/8; the latent checksum refuses what one would leave)
            flips = self._ranked_search(cand, vals, nd[cand], delta, mask, xor=True,
                                        max_subsets=2.0 ** (h - 3))
        if not flips:
            raise FormatError(
                f"cannot resolve the entropy parameters of step {step}: this decoder's arithmetic deviates "
                f"from the encoder's by more than the tolerances (σ {self.scale_tolerance:g}, "
                f"μ {mean_tolerance or self.mean_tolerance:g}), or the side stream is corrupt"
            )
        d = d.copy()
        for f in flips:
            d[f] += dec.sign[f]
        return dec.with_vector(d)

    def _self_check_v3(self, st: _StepV3, w: np.ndarray, h: int, syn: int) -> None:
        """Cheap proof that the v3 decoder rule undoes a flip of the encoder's nearest-edge decision."""
        dec, nd = st.dec, st.nd
        if nd.size == 0:
            return
        i = int(np.argmin(nd))
        if not nd[i] < 1.0:
            return
        d = dec.vector.copy()
        d[i] += dec.sign[i]
        sign = dec.sign.copy()
        sign[i] = -sign[i]
        other = Decisions(d[: dec.index.size], d[dec.index.size :], dec.dist, sign)
        other._vector = d
        own = (syn ^ int(w[i])) & ((1 << h) - 1)  # S(d') from S(d): the flip toggles w_i
        got = self._resolve_v3(st.step, other, h, -1, syn, nd=nd, own=own, weights=w)
        if not np.array_equal(got.vector, dec.vector):
            raise HPCMError(f"step {st.step}: the decoder rule does not reproduce the encoder's decisions")

    # -- side information (format v2) ---------------------------------------------------------------

    def write_side_v2(self, step: int, dec: Decisions, side: SideWriter) -> None:
        """Choose a syndrome width and salt that make single flips near an edge identifiable; write them."""
        d = dec.vector
        near = np.flatnonzero(dec.dist < ENCODER_BAND * self.tolerance)
        # widths whose expected number of colliding pairs among the 2·|near| flip values exceeds 2 are skipped
        first = next((c for c, bits in enumerate(SYNDROME_BITS) if (2 * near.size) ** 2 <= 2 ** (bits + 2)),
                     len(SYNDROME_BITS) - 1)
        for code, bits in list(enumerate(SYNDROME_BITS))[first:]:
            for salt in range(SALTS):
                w_near = _weights_at(step, salt, near)
                vals = np.concatenate((_flip_values(w_near, np.ones(near.size), bits),
                                       _flip_values(w_near, -np.ones(near.size), bits)))
                if np.unique(vals).size == vals.size:
                    side.write(code, WIDTH_CODE_BITS)
                    side.write(salt, SALT_BITS)
                    syn = _syndrome(_weights(step, salt, d.size), d, bits)
                    side.write(syn, bits)
                    self._self_check(step, dec, code, salt, syn)
                    return
        raise HPCMError(f"step {step}: no syndrome separates the {near.size} near-edge decisions")

    def _self_check(self, step: int, dec: Decisions, code: int, salt: int, syn: int) -> None:
        """Cheap proof that the decoder's rule reproduces the encoder's decisions, even after a flip."""
        if dec.dist.size == 0:
            return
        i = int(np.argmin(dec.dist))
        if not dec.dist[i] < self.tolerance:
            return
        d = dec.vector.copy()
        d[i] += dec.sign[i]  # what a platform on the other side of the edge decides
        sign = dec.sign.copy()
        sign[i] = -sign[i]
        other = Decisions(d[: dec.index.size], d[dec.index.size :], dec.dist, sign)
        other._vector = d
        bits = SYNDROME_BITS[code]
        w_i = int(_weights_at(step, salt, np.array([i]))[0])
        own = (syn + int(dec.sign[i]) * w_i) & ((1 << bits) - 1)  # S(d') from S(d), linearity
        got = self._resolve(step, other, code, salt, syn, own_syndrome=own)
        if not np.array_equal(got.vector, dec.vector):
            raise HPCMError(f"step {step}: the decoder rule does not reproduce the encoder's decisions")

    def read_side_v2(self, step: int, dec: Decisions, side: SideReader) -> Decisions:
        """Decoder (v2): read the step's syndrome and return the encoder's decisions (or FormatError)."""
        code = side.read(WIDTH_CODE_BITS)
        salt = side.read(SALT_BITS)
        syn = side.read(SYNDROME_BITS[code])
        return self._resolve(step, dec, code, salt, syn)

    def _resolve(self, step: int, dec: Decisions, code: int, salt: int, syn: int,
                 own_syndrome: int | None = None) -> Decisions:
        bits = SYNDROME_BITS[code]
        mask = (1 << bits) - 1
        d = dec.vector
        if own_syndrome is None:
            own_syndrome = _syndrome(_weights(step, salt, d.size), d, bits)
        delta = (syn - own_syndrome) & mask
        if delta == 0:
            return dec
        cand = np.flatnonzero(dec.dist < self.tolerance)
        vals = _flip_values(_weights_at(step, salt, cand), dec.sign[cand], bits)
        hits = cand[vals == delta]
        flips: list[int] = []
        if hits.size == 1:  # one wrong decision: identified uniquely (the encoder made sure)
            flips = [int(hits[0])]
        elif hits.size == 0 and cand.size >= 2:
            flips = self._ranked_search(cand, vals, dec.dist[cand], delta, mask)
        if not flips:
            raise FormatError(
                f"cannot resolve the entropy parameters of step {step}: this decoder's arithmetic deviates "
                f"from the encoder's by more than the tolerance {self.tolerance:g}, or the side stream is "
                "corrupt"
            )
        d = d.copy()
        for f in flips:
            d[f] += dec.sign[f]
        return dec.with_vector(d)

    @staticmethod
    def _ranked_search(cand: np.ndarray, vals: np.ndarray, dist: np.ndarray, delta: int,
                       mask: int, xor: bool = False, max_subsets: float = float("inf")) -> list[int]:
        """Several wrong decisions: a decision goes wrong only when its edge is closer than the deviation, so
        the flips are among the candidates nearest their edges. Subsets of 2..MAX_FLIPS of the RANKED
        nearest candidates are tried, smallest size first, the most plausible (smallest summed distance)
        match wins. Best effort: a false match leaves a wrong ŷ that the latent checksum refuses."""
        order = np.argsort(dist, kind="stable")[:RANKED]
        for t in range(2, MAX_FLIPS + 1):
            if order.size < t:
                break
            r = order.size
            while r > t and math.comb(r, t) > max_subsets:  # fewer subsets than the syndrome can tell apart
                r -= 1
            combos = _combinations(r, t)
            picked = vals[order][combos]
            sums = np.bitwise_xor.reduce(picked, axis=1) if xor else picked.sum(axis=1) & mask
            match = np.flatnonzero(sums == delta)
            if match.size:
                best = match[np.argmin(dist[order][combos[match]].sum(axis=1))]
                return [int(c) for c in cand[order[combos[best]]]]
        return []


# --- step coders (the mode-dependent part of the step loop) -------------------------------------------


class StepCoder(ABC):
    """Mode-dependent part of the step loop.

    ``code(step, sigma, mu, mask, y)`` gets the step's raw σ and μ (B, M, h, w) on the step's grid,
    its float mask (1, M, h, w) and the latent on that grid (None when decoding) and returns the
    ŷ piece (zero outside the mask). ``next_scale(scatter)`` is called at each scale transition with
    the scatter function that maps the current grid to the next one. ``bind(em)`` is called by the
    step loop with the model's :class:`ConditionalGGM` before the first step. ``version``: the coding
    rules of this pass (``CODING_VERSIONS``), carried by the coder, not by the model.
    """

    entropy_model: ConditionalGGM | None = None
    version: int = SIDE_FORMAT

    def bind(self, entropy_model: ConditionalGGM) -> None:
        if self.entropy_model is None:
            self.entropy_model = entropy_model

    @abstractmethod
    def code(self, step: S.Step, sigma: Tensor, mu: Tensor, mask: Tensor, y: Tensor | None) -> Tensor:
        """Code the step's elements; return the ŷ piece (B, M, h, w)."""

    def next_scale(self, scatter: Any) -> None:  # noqa: B027 (an optional hook)
        """Move per-grid state to the next (finer) grid; nothing by default."""


class LikelihoodCoder(StepCoder):
    """Training / evaluation: quantise ``y - μ_grid`` and accumulate residuals and scales (§4.5).

    After the pass, ``residual`` and ``scales`` are (B, M, H, W) on the y grid: the summed masked
    residuals Σr (not rounded) and the summed masked scales Σσ_m.
    """

    def __init__(self, training: bool, entropy_model: ConditionalGGM | None = None,
                 version: int = SIDE_FORMAT) -> None:
        self.training = training
        self.entropy_model = entropy_model
        self.version = version
        self.residual: Tensor | None = None
        self.scales: Tensor | None = None

    def code(self, step: S.Step, sigma: Tensor, mu: Tensor, mask: Tensor, y: Tensor | None) -> Tensor:
        if y is None:
            raise ValueError("LikelihoodCoder needs the latent")
        em = self.entropy_model
        mu = em.mean_grid(mu, self.training, self.version)
        q = em.quantize(y, mu, mask, self.training)
        r = (y - mu * mask) * mask
        sig_m = sigma * mask
        self.residual = r if self.residual is None else self.residual + r
        self.scales = sig_m if self.scales is None else self.scales + sig_m
        return em.dequantize(q, mu, mask)

    def next_scale(self, scatter: Any) -> None:  # noqa: B027 (an optional hook)
        if self.residual is not None:
            self.residual = scatter(self.residual)
            self.scales = scatter(self.scales)


class EncodeCoder(StepCoder):
    """Encoding: quantise ``y - μ_grid``; append symbols + table indexes to ``encoder`` and, with a grid,
    the step's syndrome to ``side``."""

    def __init__(self, encoder: Any, entropy_model: ConditionalGGM | None = None,
                 side: SideWriter | SideWriterV3 | None = None, version: int = SIDE_FORMAT) -> None:
        self.encoder = encoder
        self.entropy_model = entropy_model
        self.side = side
        self.version = version

    def code(self, step: S.Step, sigma: Tensor, mu: Tensor, mask: Tensor, y: Tensor | None) -> Tensor:
        if y is None:
            raise ValueError("EncodeCoder needs the latent")
        em = self.entropy_model
        sigma_p = S.pack_channels(sigma * mask, step.chunks)
        if em.grid_bits(self.version) is None:
            indexes = em.scale_index(sigma_p)
        else:
            dec = em.decisions(sigma_p, S.pack_channels(mu * mask, step.chunks), self.version)
            em.write_side(step.index, dec, self.side)
            indexes = torch.from_numpy(dec.index.astype(np.int32)).reshape(sigma_p.shape)
        mu = em.mean_grid(mu, version=self.version)
        q = em.quantize(y, mu, mask)
        symbols = S.pack_channels(q, step.chunks)
        self.encoder.encode(symbols.to(torch.int32).cpu().numpy(), indexes.to(torch.int32).cpu().numpy())
        return em.dequantize(q, mu, mask)


class DecodeCoder(StepCoder):
    """Decoding: resolve the step's decisions (side stream), read the symbols with their indexes."""

    def __init__(self, decoder: Any, entropy_model: ConditionalGGM | None = None,
                 side: SideReader | SideReaderV3 | None = None, version: int = SIDE_FORMAT) -> None:
        self.decoder = decoder
        self.entropy_model = entropy_model
        self.side = side
        self.version = version

    def code(self, step: S.Step, sigma: Tensor, mu: Tensor, mask: Tensor, y: Tensor | None) -> Tensor:
        em = self.entropy_model
        sigma_p = S.pack_channels(sigma * mask, step.chunks)
        bits = em.grid_bits(self.version)
        if bits is None:
            indexes = em.scale_index(sigma_p).cpu().numpy()
            mu_g = mu
        else:
            dec = em.decisions(sigma_p, S.pack_channels(mu * mask, step.chunks), self.version)
            dec = em.read_side(step.index, dec, self.side)
            indexes = dec.index.astype(np.int32).reshape(sigma_p.shape)
            bins = torch.from_numpy(dec.bins).reshape(sigma_p.shape).to(device=mu.device, dtype=mu.dtype)
            mu_g = S.unpack_channels(bins * (2.0**-bits), step.chunks)
        symbols = self.decoder.decode(np.asarray(indexes, dtype=np.int32))
        packed = torch.as_tensor(symbols).reshape(sigma_p.shape).to(device=mu.device, dtype=mu.dtype)
        q = S.unpack_channels(packed, step.chunks) * mask
        return em.dequantize(q, mu_g, mask)


def expected_side_bits(steps: int = len(S.STEPS)) -> float:
    """Typical side-stream size in bits (every step at the narrowest syndrome)."""
    return steps * (WIDTH_CODE_BITS + SALT_BITS + SYNDROME_BITS[0])
