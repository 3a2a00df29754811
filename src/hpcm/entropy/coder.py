"""Table-driven symbol coder over ``constriction``'s ANS, with escape codes (spec hpcm.md §7.2).

Stream layout (what the decoder pops, in order).  For every ``encode``/``decode`` call:

1. the in-range part: symbols grouped by table row, rows in ascending order, positions within a row in
   their original (C-order) order; each group is one vectorised call against that row's Categorical
   model.  A symbol v of row r is coded as q = v − offset[r]; q outside [0, max_symbol[r]) is replaced
   by the escape symbol max_symbol[r] (the table's tail-mass symbol);
2. for the escaped positions of the call (in position order), their *class* (bit length − 1 of
   w = u + 1, see below), uniform over 64 values (6 bits each);
3. the mantissas of w below its leading 1, split into chunks of ≤ 16 bits (least significant first),
   each coded with a uniform model over 2^size values.

The escape value u ≥ 0 maps the out-of-range q bijectively: u = 2·(q − max_symbol) for overflow and
u = 2·(−q − 1) + 1 for underflow, so any int32 symbol round-trips exactly.  This is our own bypass
scheme (Elias-gamma-like), not the Rans64 4-bit-chunk one; the bitstream is not CompressAI-compatible.

``constriction``'s ``AnsCoder`` is a stack: the encoder buffers every call and pushes them in reverse
at :meth:`SymbolEncoder.finish`, so the decoder reads calls in forward order.  The Categorical models
are built from the table's integer frequencies (exactly, see ``tables.constriction_weights``), so
encoder and decoder agree bit-exactly and the payload equals the ideal code length of the quantised
model up to a few bytes (:func:`estimate_bits`).
"""

from __future__ import annotations

from dataclasses import dataclass

import constriction
import numpy as np

from hpcm.entropy.tables import CdfTable
from hpcm.errors import FormatError

__all__ = ["SymbolEncoder", "SymbolDecoder", "estimate_bits", "ESCAPE_CLASS_BITS", "ESCAPE_CHUNK_BITS"]

#: Bits used for the class (bit-length) field of an escaped value (uniform over 2^6 = 64 classes).
ESCAPE_CLASS_BITS = 6
#: Largest mantissa chunk coded with one uniform model.
ESCAPE_CHUNK_BITS = 16
# |q| < 2^33 for int32 symbols and int32 offsets, so u < 2^34 and the class (bit length − 1) ≤ 34.
_MAX_CLASS = 34
_INT32_MIN = -(2**31)
_INT32_MAX = 2**31 - 1

_UNIFORM_CLASS = constriction.stream.model.Uniform(1 << ESCAPE_CLASS_BITS)
_UNIFORM_FAMILY = constriction.stream.model.Uniform()


def _as_int_array(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer array, got {a.dtype}")
    return a


def _check_indexes(indexes: np.ndarray, table: CdfTable) -> np.ndarray:
    """Flatten and validate table indexes → int64 (N,)."""
    idx = _as_int_array(indexes, "indexes").reshape(-1).astype(np.int64, copy=False)
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= table.num_rows):
        raise ValueError(f"table index out of range [0, {table.num_rows})")
    return idx


def _group(idx: np.ndarray, num_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Stable grouping of positions by row: (order (N,), starts (num_rows + 1,)).

    Small index ranges are cast to an 8/16-bit type so that numpy's stable sort is a linear radix sort.
    """
    if num_rows <= 256:
        key = idx.astype(np.uint8)
    elif num_rows <= (1 << 16):
        key = idx.astype(np.uint16)
    else:
        key = idx
    order = np.argsort(key, kind="stable")
    counts = np.bincount(idx, minlength=num_rows)
    starts = np.zeros(num_rows + 1, dtype=np.int64)
    np.cumsum(counts, out=starts[1:])
    return order, starts


def _bit_length(w: np.ndarray) -> np.ndarray:
    """Bit length of positive int64 values < 2^53 (exact via frexp)."""
    return np.frexp(w.astype(np.float64))[1].astype(np.int64)


def _chunk_layout(classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mantissa widths (= classes) → (owning escape of each chunk, chunk size in bits), LSB chunk first."""
    n_chunks = -(-classes // ESCAPE_CHUNK_BITS)
    owner = np.repeat(np.arange(classes.size), n_chunks)
    first = np.repeat(np.cumsum(n_chunks) - n_chunks, n_chunks)
    j = np.arange(owner.size) - first
    sizes = np.minimum(ESCAPE_CHUNK_BITS, classes[owner] - ESCAPE_CHUNK_BITS * j)
    return owner, sizes


def _escape_bits(u: np.ndarray) -> np.ndarray:
    """Exact bypass cost in bits of escape values u (int64 ≥ 0): 6 + (bit_length(u + 1) − 1)."""
    return ESCAPE_CLASS_BITS + (_bit_length(u + 1) - 1).astype(np.float64)


def _to_escape_value(q: np.ndarray, max_symbol: np.ndarray) -> np.ndarray:
    """Out-of-range q (int64) → u ≥ 0 (overflow even, underflow odd)."""
    return np.where(q >= max_symbol, 2 * (q - max_symbol), 2 * (-q - 1) + 1)


def _from_escape_value(u: np.ndarray, max_symbol: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_to_escape_value`."""
    return np.where(u % 2 == 0, max_symbol + u // 2, -(u // 2) - 1)


@dataclass
class _Call:
    """One buffered encode call: per-row groups of in-range/escape symbols plus escape payload."""

    rows: list[int]
    groups: list[np.ndarray]
    classes: np.ndarray
    chunk_values: np.ndarray
    chunk_sizes: np.ndarray


class SymbolEncoder:
    """Buffers symbols of any number of :meth:`encode` calls; :meth:`finish` returns one ANS stream."""

    def __init__(self, table: CdfTable) -> None:
        self.table = table
        self._calls: list[_Call] = []
        self._finished = False

    def encode(self, symbols: np.ndarray, indexes: np.ndarray) -> None:
        """symbols, indexes: integer arrays of one shape (e.g. (1, C, H, W)), coded in C order."""
        if self._finished:
            raise RuntimeError("encoder already finished")
        symbols = _as_int_array(symbols, "symbols")
        indexes = np.asarray(indexes)
        if symbols.shape != indexes.shape:
            raise ValueError(f"symbols {symbols.shape} and indexes {indexes.shape} differ in shape")
        table = self.table
        idx = _check_indexes(indexes, table)
        sym = symbols.reshape(-1).astype(np.int64)
        if sym.size and (int(sym.min()) < _INT32_MIN or int(sym.max()) > _INT32_MAX):
            raise ValueError("symbols must fit in int32")
        max_sym = table.max_symbol[idx].astype(np.int64)
        q = sym - table.offset[idx]
        escaped = (q < 0) | (q >= max_sym)
        coded = np.where(escaped, max_sym, q).astype(np.int32)

        order, starts = _group(idx, table.num_rows)
        coded = coded[order]
        rows, groups = [], []
        for r in np.flatnonzero(starts[1:] > starts[:-1]).tolist():
            rows.append(r)
            groups.append(coded[starts[r] : starts[r + 1]])

        esc_pos = np.flatnonzero(escaped)
        w = _to_escape_value(q[esc_pos], max_sym[esc_pos]) + 1
        classes = _bit_length(w) - 1
        mantissa = w - (np.int64(1) << classes)
        owner, sizes = _chunk_layout(classes)
        shifts = np.zeros_like(sizes)
        if owner.size:
            # shift of chunk j within its owner = sum of previous chunk sizes of the same owner
            first = np.r_[True, owner[1:] != owner[:-1]]
            csum = np.cumsum(sizes) - sizes
            shifts = csum - np.maximum.accumulate(np.where(first, csum, 0))
        values = (mantissa[owner] >> shifts) & ((np.int64(1) << sizes) - 1)
        self._calls.append(
            _Call(
                rows=rows,
                groups=groups,
                classes=classes.astype(np.int32),
                chunk_values=values.astype(np.int32),
                chunk_sizes=(np.int64(1) << sizes).astype(np.int32),
            )
        )

    def finish(self) -> bytes:
        """Push every buffered call (in reverse) onto one ANS stack → little-endian 32-bit words."""
        if self._finished:
            raise RuntimeError("encoder already finished")
        self._finished = True
        models = self.table.models
        coder = constriction.stream.stack.AnsCoder()
        for call in reversed(self._calls):
            if call.chunk_values.size:
                coder.encode_reverse(call.chunk_values, _UNIFORM_FAMILY, call.chunk_sizes)
            if call.classes.size:
                coder.encode_reverse(call.classes, _UNIFORM_CLASS)
            for r, g in zip(reversed(call.rows), reversed(call.groups)):
                coder.encode_reverse(g, models[r])
        self._calls.clear()
        return np.asarray(coder.get_compressed(), dtype="<u4").tobytes()


class SymbolDecoder:
    """Reads a :class:`SymbolEncoder` stream; call :meth:`decode` with the encoder's index arrays in order.

    Corrupt data never raises anything but :class:`~hpcm.errors.FormatError` (or decodes to some other
    int32 values). :meth:`finish` checks that the stream was consumed exactly (trailing data → error).
    """

    def __init__(self, table: CdfTable, data: bytes) -> None:
        self.table = table
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("data must be bytes")
        data = bytes(data)
        if len(data) % 4:
            raise FormatError(f"entropy-coded stream length {len(data)} is not a multiple of 4")
        words = np.frombuffer(data, dtype="<u4").astype(np.uint32)  # native order for constriction
        try:
            self._coder = constriction.stream.stack.AnsCoder(words)
        except Exception as exc:  # constriction rejects e.g. a zero final word
            raise FormatError(f"invalid entropy-coded stream: {exc}") from exc

    def decode(self, indexes: np.ndarray) -> np.ndarray:
        """indexes: integer array (any shape) → int32 symbols of the same shape."""
        indexes = np.asarray(indexes)
        table = self.table
        idx = _check_indexes(indexes, table)
        order, starts = _group(idx, table.num_rows)
        models = table.models
        coded = np.empty(idx.size, dtype=np.int64)
        try:
            for r in np.flatnonzero(starts[1:] > starts[:-1]).tolist():
                a, b = int(starts[r]), int(starts[r + 1])
                coded[order[a:b]] = self._coder.decode(models[r], b - a)
            max_sym = table.max_symbol[idx].astype(np.int64)
            values = coded + table.offset[idx]
            esc_pos = np.flatnonzero(coded == max_sym)
            if esc_pos.size:
                classes = np.asarray(self._coder.decode(_UNIFORM_CLASS, esc_pos.size), dtype=np.int64)
                if int(classes.max()) > _MAX_CLASS:
                    raise FormatError("corrupt escape code (bit length out of range)")
                owner, sizes = _chunk_layout(classes)
                mantissa = np.zeros(esc_pos.size, dtype=np.int64)
                if owner.size:
                    chunks = self._coder.decode(_UNIFORM_FAMILY, (np.int64(1) << sizes).astype(np.int32))
                    first = np.r_[True, owner[1:] != owner[:-1]]
                    csum = np.cumsum(sizes) - sizes
                    shifts = csum - np.maximum.accumulate(np.where(first, csum, 0))
                    np.add.at(mantissa, owner, np.asarray(chunks, dtype=np.int64) << shifts)
                u = (np.int64(1) << classes) + mantissa - 1
                q = _from_escape_value(u, max_sym[esc_pos])
                values[esc_pos] = q + table.offset[idx[esc_pos]]
        except FormatError:
            raise
        except Exception as exc:  # any constriction failure on corrupt data
            raise FormatError(f"corrupt entropy-coded stream: {exc}") from exc
        if values.size and (int(values.min()) < _INT32_MIN or int(values.max()) > _INT32_MAX):
            raise FormatError("corrupt escape code (value outside int32)")
        return values.astype(np.int32).reshape(indexes.shape)

    def finish(self) -> None:
        """Raise :class:`FormatError` unless the stream has been consumed exactly."""
        if not self._coder.is_empty():
            raise FormatError("trailing data after the last entropy-coded symbol")


def estimate_bits(symbols: np.ndarray, indexes: np.ndarray, table: CdfTable) -> float:
    """Ideal code length (bits) of ``symbols`` under the quantised tables, escape payloads included.

    symbols, indexes: integer arrays of one shape. Equals the coder's payload up to ANS's constant
    overhead (≤ 64 bits for the final state, plus 32-bit word padding).
    """
    symbols = _as_int_array(symbols, "symbols")
    if symbols.shape != np.asarray(indexes).shape:
        raise ValueError("symbols and indexes differ in shape")
    idx = _check_indexes(indexes, table)
    q = symbols.reshape(-1).astype(np.int64) - table.offset[idx]
    max_sym = table.max_symbol[idx].astype(np.int64)
    escaped = (q < 0) | (q >= max_sym)
    coded = np.where(escaped, max_sym, q)
    total = float(table.bits[idx, coded].sum())
    if escaped.any():
        total += float(_escape_bits(_to_escape_value(q[escaped], max_sym[escaped])).sum())
    return total
