"""hpcm: learned image compression with HPCM and its RWKV / multi-reference variants."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["HPCM", "__version__", "create_model", "list_models"]


def __getattr__(name: str) -> Any:
    """Lazy re-exports, so ``import hpcm`` stays cheap (no torch import until needed)."""
    if name in ("create_model", "list_models"):
        from hpcm.models import registry

        return getattr(registry, name)
    if name == "HPCM":
        from hpcm.models.hpcm import HPCM

        return HPCM
    raise AttributeError(f"module 'hpcm' has no attribute {name!r}")
