"""hpcm.ops: numeric kernels, each with a slow reference beside the fast paths."""

from hpcm.ops.biwkv import IMPLS, MODES, biwkv, biwkv_reference, numba_available

__all__ = ["IMPLS", "MODES", "biwkv", "biwkv_reference", "numba_available"]
