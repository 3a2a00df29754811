"""Refuse headers whose streams are too short to describe the latent they claim (cheap, before decoding).

The container limits (``container.MAX_SIDE``/``MAX_PIXELS``) bound the work of an honest file, but a
197-byte file claiming 8192x2048 pixels would still make the decoder run the whole network (tens of
seconds, gigabytes). Every latent element is entropy-coded with a row of the model's 16-bit CDF tables,
and no row gives any symbol a probability above ``max(freq) / 2^16``: each element therefore costs at
least ``-log2(max(freq) / 2^16)`` bits (about 1.5e-4 bits for the smallest scale). Summing these minima
over the claimed latent (z: one fixed row per channel; y: the cheapest row of the table) gives a lower
bound on the stream bytes that no real encoder can undercut; a header below it is refused as corrupted.
"""

from __future__ import annotations

import numpy as np

from hpcm.errors import FormatError

#: Bytes allowed below the information bound per stream (the ANS coder's flushed state carries up to
#: this many bytes of information on top of its words).
STREAM_SLACK_BYTES = 8


def _min_bits_per_row(table) -> np.ndarray | None:
    bits = getattr(table, "bits", None)
    return None if bits is None else np.asarray(bits, dtype=np.float64).min(axis=1)


def min_stream_bytes(model, z_shape: tuple[int, int]) -> int | None:
    """Lower bound on the total stream bytes of a file whose hyper-latent grid is ``z_shape``.

    None when ``model`` has no HPCM-style tables (``_y_table``/``_z_table`` after ``update()``) to
    bound with.
    """
    update = getattr(model, "update", None)
    if callable(update):
        update()
    y_bits = _min_bits_per_row(getattr(model, "_y_table", None))
    z_bits = _min_bits_per_row(getattr(model, "_z_table", None))
    M, N = getattr(model, "M", None), getattr(model, "N", None)
    if y_bits is None or z_bits is None or M is None or N is None or len(z_bits) != N:
        return None
    hz, wz = (int(v) for v in z_shape)
    bits = float(z_bits.sum()) * hz * wz + float(y_bits.min()) * int(M) * (4 * hz) * (4 * wz)
    return max(0, int(bits // 8) - 2 * STREAM_SLACK_BYTES)


def check_stream_lengths(header, model) -> None:
    """Raise ``FormatError`` when ``header``'s streams cannot possibly describe its claimed latent."""
    need = min_stream_bytes(model, header.z_shape)
    have = sum(header.stream_lengths)
    if need is not None and have < need:
        raise FormatError(
            f"file is corrupted: {have} bytes of coded data cannot describe a {header.width}x{header.height} "
            f"image (this model needs at least {need} bytes for that size)"
        )
