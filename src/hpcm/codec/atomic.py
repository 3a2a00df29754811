"""Atomic file output for the codec: the helpers live in :mod:`hpcm.atomic` (used by every writer)."""

from hpcm.atomic import OutputExistsError, atomic_write_bytes, check_output_path

__all__ = ["OutputExistsError", "atomic_write_bytes", "check_output_path"]
