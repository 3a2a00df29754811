"""hpcm.entropy: GGM likelihood (β = 1.5), quantised CDF tables and the constriction symbol coder.

The names below load their module (and torch) on first use, so that torch-free parts such as
:mod:`hpcm.entropy.side_bits` can be imported alone (``hpcm info`` does)."""

from __future__ import annotations

import importlib
from typing import Any

#: exported name -> the submodule that defines it
_EXPORTS = {
    "GGM": "ggm",
    "LowerBound": "ggm",
    "ggm_cdf": "ggm",
    "ggm_likelihood": "ggm",
    "CdfTable": "tables",
    "build_ggm_cdf_table": "tables",
    "get_scale_table": "tables",
    "scale_to_index": "tables",
    "SymbolEncoder": "coder",
    "SymbolDecoder": "coder",
    "estimate_bits": "coder",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"hpcm.entropy.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'hpcm.entropy' has no attribute {name!r}")
