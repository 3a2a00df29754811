"""hpcm: learned image compression with HPCM and its RWKV / multi-reference variants."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = [
    "HPCM",
    "HPCM_MultiRef_Phase1",
    "HPCM_MultiRef_Phase2",
    "HPCM_Phase1",
    "HPCM_Phase2",
    "HPCM_Phase3",
    "HPCM_Phase4",
    "__version__",
    "create_model",
    "list_models",
    "load_model",
    "migrate",
]


def __getattr__(name: str) -> Any:
    """Lazy re-exports, so ``import hpcm`` stays cheap (no torch import until needed)."""
    if name in ("create_model", "list_models"):
        from hpcm.models import registry

        return getattr(registry, name)
    if name.startswith("HPCM_"):
        from hpcm.models import variants

        return getattr(variants, name)
    if name == "migrate":
        from hpcm.models.migrate import migrate

        return migrate
    if name == "load_model":
        from hpcm.models.io import load_model

        return load_model
    if name == "HPCM":
        from hpcm.models.hpcm import HPCM

        return HPCM
    raise AttributeError(f"module 'hpcm' has no attribute {name!r}")
