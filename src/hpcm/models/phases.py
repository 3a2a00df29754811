"""The HPCM × RWKV phases: which context components each phase swaps (torch-free).

| component             | baseline   | phase1     | phase2     | phase3        | phase4           |
|-----------------------|------------|------------|------------|---------------|------------------|
| attn_s1 / attn_s2     | cross attn | cross attn | RWKV cell  | RWKV cell     | RWKV cell        |
| attn_s3               | cross attn | RWKV cell  | RWKV cell  | RWKV cell     | RWKV cell        |
| context_net[0], [1]   | 1x1 conv   | 1x1 conv   | 1x1 conv   | RWKVFusionNet | RWKVFusionNet    |
| y_spatial_prior_*     | DWConvRB   | DWConvRB   | DWConvRB   | DWConvRB      | RWKVSpatialPrior |

(phase2 cell hidden rates: 2 / 3 / 4 for s1 / s2 / s3.)
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hpcm.models.components import RWKVCellSpec, RWKVNetSpec, RWKVPriorSpec
from hpcm.models.config import HPCMConfig

PHASES = ("baseline", "phase1", "phase2", "phase3", "phase4")
PHASE2_HIDDEN_RATES = (2, 3, 4)


def apply_phase(cfg: HPCMConfig, phase: str) -> HPCMConfig:
    """Return ``cfg`` with the context components of ``phase`` ("baseline", "phase1" … "phase4")."""
    if phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r}; expected one of {PHASES}")
    if phase == "baseline":
        return cfg
    cells = list(cfg.cells)
    if phase == "phase1":
        cells[2] = RWKVCellSpec(hidden_rate=4)
    else:
        cells = [RWKVCellSpec(hidden_rate=hr) for hr in PHASE2_HIDDEN_RATES]
    kw: dict[str, Any] = {"cells": tuple(cells)}
    if phase in ("phase3", "phase4"):
        kw["context_nets"] = (RWKVNetSpec(num_blocks=1, hidden_rate=4),) * 2
    if phase == "phase4":
        kw["prior_s12"] = RWKVPriorSpec(depths=(2, 1))
        kw["prior_s3"] = RWKVPriorSpec(depths=(3, 2))
    return replace(cfg, **kw)


def phase_of(cfg: HPCMConfig, baseline: HPCMConfig) -> str | None:
    """Which phase of ``baseline`` ``cfg``'s context components are (None if a custom mix)."""
    target = replace(cfg, memory=None)
    for phase in PHASES:
        if apply_phase(replace(baseline, memory=None), phase) == target:
            return phase
    return None
