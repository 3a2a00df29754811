"""HPCM variants: the RWKV phases and the multi-reference memory bank, and their seed-style constructors.

Every variant is the official HPCM with some context components swapped (``hpcm.models.phases`` holds the
phase table) and optionally a per-image ``HierarchicalMemoryManager`` (``config.memory``, a
``MemoryBankConfig`` from ``MEMORY_PRESETS``): ``-multiref-phase1`` has a bank at s3 only,
``-multiref-phase2`` at all three scales with hierarchical transfer. The presets themselves are declared
once, by name, in ``hpcm.models.registry`` (``PHASE_PRESETS``, ``MULTIREF_PRESETS``).

The seed-style constructors (``HPCM_Phase1(M=320, N=256)``, ``HPCM_MultiRef_Phase2(...)``) are thin aliases
over those registered presets (:func:`seed_constructor`, :func:`seed_multiref_constructor`).
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

from hpcm.layers.memory_config import MEMORY_PRESETS, MemoryBankConfig
from hpcm.models.config import HPCMConfig
from hpcm.models.phases import PHASE2_HIDDEN_RATES, PHASES, apply_phase, phase_of  # noqa: F401 (re-exported)
from hpcm.models.registry import MULTIREF_PRESETS, PHASE_PRESETS, baseline_name, get_config  # noqa: F401

#: Memory-bank keyword arguments of the seed-style multi-reference constructors (``MemoryBankConfig``
#: fields; their defaults are ``MEMORY_PRESETS["default"]``).
MULTIREF_KWARGS = tuple(f.name for f in fields(MemoryBankConfig) if f.name != "enabled_scales")
_CONFIG_FIELDS = frozenset(f.name for f in fields(HPCMConfig))


def multiref_memory(scales: tuple[str, ...], **kwargs: Any) -> MemoryBankConfig:
    """The default bank at ``scales`` with ``kwargs`` (``MULTIREF_KWARGS`` names) changed."""
    _check_names(kwargs, MULTIREF_KWARGS, "memory-bank")
    return replace(MEMORY_PRESETS["default"], enabled_scales=tuple(scales), **kwargs)


def _check_names(kwargs: dict[str, Any], known: Any, what: str) -> None:
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        raise TypeError(f"unknown {what} arguments: {unknown}")


def seed_constructor(preset: str):
    """``ctor(M=320, N=256, **overrides)``: the registered ``preset`` (a phase) at widths M, N."""
    if preset not in PHASE_PRESETS:
        raise KeyError(f"{preset!r} is not a phase preset")

    def ctor(M: int = 320, N: int = 256, **overrides: Any):  # noqa: N803 (users' existing names)
        from hpcm.models.hpcm import HPCM

        _check_names(overrides, _CONFIG_FIELDS, "HPCMConfig")
        return HPCM(get_config(preset, M=M, N=N, **overrides))

    ctor.__doc__ = f"The ``{preset}`` preset at widths M, N (``overrides``: HPCMConfig fields)."
    return ctor


def seed_multiref_constructor(preset: str):
    """``ctor(M=320, N=256, enable_multiref=True, phase="baseline", **kwargs)`` over the ``preset``.

    ``kwargs``: ``MULTIREF_KWARGS`` names (the bank) or HPCMConfig fields; ``phase`` swaps the context
    components (``apply_phase``); ``enable_multiref=False`` drops the bank.
    """
    if preset not in MULTIREF_PRESETS:
        raise KeyError(f"{preset!r} is not a multi-reference preset")

    def ctor(M: int = 320, N: int = 256, enable_multiref: bool = True, phase: str = "baseline",  # noqa: N803
             **kwargs: Any):
        from hpcm.models.hpcm import HPCM

        bank = {k: kwargs.pop(k) for k in list(kwargs) if k in MULTIREF_KWARGS}
        _check_names(kwargs, _CONFIG_FIELDS, "HPCMConfig")
        cfg = apply_phase(get_config(preset, M=M, N=N, **kwargs), phase)
        memory = replace(cfg.memory, **bank) if enable_multiref else None
        return HPCM(replace(cfg, memory=memory))

    scales = ", ".join(MULTIREF_PRESETS[preset][1])
    ctor.__doc__ = f"The ``{preset}`` preset at widths M, N (see seed_multiref_constructor); banks: {scales}."
    return ctor


# --- seed-style constructors (the users' existing names) -------------------------------------------

HPCM_Phase1 = seed_constructor("hpcm-phase1")
HPCM_Phase2 = seed_constructor("hpcm-phase2")
HPCM_Phase3 = seed_constructor("hpcm-phase3")
HPCM_Phase4 = seed_constructor("hpcm-phase4")
HPCM_MultiRef_Phase1 = seed_multiref_constructor("hpcm-multiref-phase1")
HPCM_MultiRef_Phase2 = seed_multiref_constructor("hpcm-multiref-phase2")
