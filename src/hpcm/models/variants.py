"""HPCM variants as configurations: the RWKV phases and the multi-reference memory bank.

Every variant is the official HPCM with some context components swapped (``hpcm.models.components``):

| component             | baseline   | phase1     | phase2     | phase3        | phase4           |
|-----------------------|------------|------------|------------|---------------|------------------|
| attn_s1 / attn_s2     | cross attn | cross attn | RWKV cell  | RWKV cell     | RWKV cell        |
| attn_s3               | cross attn | RWKV cell  | RWKV cell  | RWKV cell     | RWKV cell        |
| context_net[0], [1]   | 1x1 conv   | 1x1 conv   | 1x1 conv   | RWKVFusionNet | RWKVFusionNet    |
| y_spatial_prior_*     | DWConvRB   | DWConvRB   | DWConvRB   | DWConvRB      | RWKVSpatialPrior |

(phase2 cell hidden rates: 2 / 3 / 4 for s1 / s2 / s3.) Multi-reference presets add a per-image
``HierarchicalMemoryManager`` (``config.memory``) on top of any of these: ``-multiref-phase1`` has a bank
at s3 only, ``-multiref-phase2`` at all three scales with hierarchical transfer.

Registered names: ``hpcm-phase{1..4}`` (Base widths), ``hpcm-phase{1..4}-tiny`` (``hpcm-tiny`` widths),
``hpcm-multiref-phase{1,2}`` (+ ``-light`` / ``-accurate`` memory configurations) and their ``-tiny``
counterparts. Seed-style constructors (``HPCM_Phase1(M=320, N=256)``, ``HPCM_MultiRef_Phase2(...)``) build
the same configurations.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hpcm.models.components import CellSpec, ContextNetSpec, PriorSpec
from hpcm.models.config import HPCMConfig
from hpcm.models.registry import get_config, register_model

PHASES = ("baseline", "phase1", "phase2", "phase3", "phase4")
PHASE2_HIDDEN_RATES = (2, 3, 4)

#: Memory-bank keyword arguments of the seed-style constructors, with their defaults.
MULTIREF_KWARGS: dict[str, Any] = {
    "max_refs_s1": 2,
    "max_refs_s2": 3,
    "max_refs_s3": 4,
    "topk_refs_s1": 1,
    "topk_refs_s2": 2,
    "topk_refs_s3": 2,
    "value_resolution": 8,
    "compress_ratio": 4,
    "enable_hierarchical_transfer": True,
}
MULTIREF_PROFILES: dict[str, dict[str, Any]] = {
    "": {},
    "light": {
        "max_refs_s1": 1,
        "max_refs_s2": 2,
        "max_refs_s3": 3,
        "compress_ratio": 8,
        "value_resolution": 4,
    },
    "accurate": {
        "max_refs_s1": 3,
        "max_refs_s2": 4,
        "max_refs_s3": 6,
        "topk_refs_s1": 2,
        "topk_refs_s2": 3,
        "topk_refs_s3": 3,
        "compress_ratio": 2,
        "value_resolution": 16,
    },
}
MULTIREF_SCALES = {"phase1": ("s3",), "phase2": ("s1", "s2", "s3")}


def apply_phase(cfg: HPCMConfig, phase: str) -> HPCMConfig:
    """Return ``cfg`` with the context components of ``phase`` ("baseline", "phase1" … "phase4")."""
    if phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r}; expected one of {PHASES}")
    if phase == "baseline":
        return cfg
    cells = list(cfg.cells)
    if phase == "phase1":
        cells[2] = CellSpec(kind="rwkv", hidden_rate=4)
    else:
        cells = [CellSpec(kind="rwkv", hidden_rate=hr) for hr in PHASE2_HIDDEN_RATES]
    kw: dict[str, Any] = {"cells": tuple(cells)}
    if phase in ("phase3", "phase4"):
        kw["context_nets"] = (ContextNetSpec(kind="rwkv", num_blocks=1, hidden_rate=4),) * 2
    if phase == "phase4":
        kw["prior_s12"] = PriorSpec(kind="rwkv", depths=(2, 1))
        kw["prior_s3"] = PriorSpec(kind="rwkv", depths=(3, 2))
    return replace(cfg, **kw)


def multiref_memory(scales: tuple[str, ...], **kwargs: Any) -> dict[str, Any]:
    """``HPCMConfig.memory`` dict for a bank at ``scales`` (kwargs: ``MULTIREF_KWARGS`` names)."""
    unknown = set(kwargs) - set(MULTIREF_KWARGS)
    if unknown:
        raise TypeError(f"unknown memory-bank arguments: {sorted(unknown)}")
    merged = {**MULTIREF_KWARGS, **kwargs}
    return {**merged, "enabled_scales": list(scales)}


#: Registered variant name -> the width preset whose baseline it modifies.
BASELINE_OF: dict[str, str] = {}


def baseline_name(name: str) -> str:
    """The width preset (``hpcm-base``, ``hpcm-tiny`` …) that the preset ``name`` is a variant of."""
    return BASELINE_OF.get(name, name)


def phase_of(cfg: HPCMConfig, baseline: HPCMConfig) -> str | None:
    """Which phase of ``baseline`` ``cfg``'s context components are (None if a custom mix)."""
    target = replace(cfg, memory=None).to_dict()
    for phase in PHASES:
        if apply_phase(replace(baseline, memory=None), phase).to_dict() == target:
            return phase
    return None


def _register_all() -> None:
    for width, suffix in (("hpcm-base", ""), ("hpcm-tiny", "-tiny")):
        for phase in PHASES[1:]:
            BASELINE_OF[f"hpcm-{phase}{suffix}"] = width
            register_model(
                f"hpcm-{phase}{suffix}",
                lambda w=width, p=phase: apply_phase(get_config(w), p),
                f"HPCM × RWKV {phase} at {width} widths",
            )
        for mr, scales in MULTIREF_SCALES.items():
            for profile, extra in MULTIREF_PROFILES.items():
                name = f"hpcm-multiref-{mr}{'-' + profile if profile else ''}{suffix}"
                BASELINE_OF[name] = width
                register_model(
                    name,
                    lambda w=width, s=scales, e=extra: replace(get_config(w), memory=multiref_memory(s, **e)),
                    f"multi-reference memory bank ({', '.join(scales)}{', ' + profile if profile else ''})"
                    f" on the baseline at {width} widths",
                )


_register_all()


# --- seed-style constructors --------------------------------------------------------------------


def _build(phase: str, M: int, N: int, memory: dict[str, Any] | None = None, **overrides: Any):
    from hpcm.models.hpcm import HPCM

    cfg = apply_phase(replace(get_config("hpcm-base"), M=M, N=N, **overrides), phase)
    if memory is not None:
        cfg = replace(cfg, memory=memory)
    return HPCM(cfg)


def HPCM_Phase1(M: int = 320, N: int = 256, **overrides: Any):  # noqa: N802 (users' existing name)
    """HPCM with ``attn_s3`` → ``RWKVContextCell(2M, hidden_rate=4)``."""
    return _build("phase1", M, N, **overrides)


def HPCM_Phase2(M: int = 320, N: int = 256, **overrides: Any):  # noqa: N802
    """HPCM with all three cells RWKV (hidden rates 2/3/4)."""
    return _build("phase2", M, N, **overrides)


def HPCM_Phase3(M: int = 320, N: int = 256, **overrides: Any):  # noqa: N802
    """Phase 2 plus both ``context_net`` → ``RWKVFusionNet``."""
    return _build("phase3", M, N, **overrides)


def HPCM_Phase4(M: int = 320, N: int = 256, **overrides: Any):  # noqa: N802
    """Phase 3 plus both spatial priors → ``RWKVSpatialPrior_S1_S2`` / ``_S3``."""
    return _build("phase4", M, N, **overrides)


def _multiref(mr: str, M: int, N: int, enable_multiref: bool, phase: str, kwargs: dict[str, Any]):
    bank = {k: kwargs.pop(k) for k in list(kwargs) if k in MULTIREF_KWARGS}
    memory = multiref_memory(MULTIREF_SCALES[mr], **bank) if enable_multiref else None
    return _build(phase, M, N, memory=memory, **kwargs)


def HPCM_MultiRef_Phase1(  # noqa: N802
    M: int = 320, N: int = 256, enable_multiref: bool = True, phase: str = "baseline", **kwargs: Any
):
    """HPCM with a memory bank at s3 (``kwargs``: ``MULTIREF_KWARGS`` names or HPCMConfig fields)."""
    return _multiref("phase1", M, N, enable_multiref, phase, kwargs)


def HPCM_MultiRef_Phase2(  # noqa: N802
    M: int = 320, N: int = 256, enable_multiref: bool = True, phase: str = "baseline", **kwargs: Any
):
    """HPCM with memory banks at s1/s2/s3 and hierarchical transfer (see ``HPCM_MultiRef_Phase1``)."""
    return _multiref("phase2", M, N, enable_multiref, phase, kwargs)
