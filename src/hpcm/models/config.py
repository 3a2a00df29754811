"""``HPCMConfig``: every architectural choice of an HPCM model, JSON round-trippable.

The defaults describe the official HPCM-Base (spec hpcm.md §2, §3.2, §4.7, §4.8). Weights files store
``config.to_dict()`` so a model can be rebuilt exactly with ``HPCMConfig.from_dict``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from hpcm._fields import unknown_fields
from hpcm.layers.memory_config import MemoryBankConfig
from hpcm.models.components import ComponentSpec, ConvNetSpec, CrossCellSpec, DWConvPriorSpec, as_spec


def _default_cells() -> tuple[ComponentSpec, ComponentSpec, ComponentSpec]:
    return tuple(CrossCellSpec(window=w, heads=32) for w in (4, 8, 8))


def _default_context_nets() -> tuple[ComponentSpec, ComponentSpec]:
    return (ConvNetSpec(), ConvNetSpec())


@dataclass
class HPCMConfig:
    """Architecture of an HPCM model.

    M, N: latent y / hyper-latent z channels (M a multiple of 8).
    g_channels / g_depths: the three PConvRB stages of g_a (g_s mirrors them).
    h_a_depths: PConvRB blocks of h_a at M channels and at N channels; h_s_depths: at N and at 2M.
    cells: per-scale (s1, s2, s3) context cells; context_nets: the s1->s2 and s2->s3 nets;
    prior_s12 / prior_s3: spatial priors (each a registered component kind's spec,
    ``hpcm.models.components``; JSON ``{"kind": ..., <fields>}``). GGM beta and bounds, scale table
    (min, max, levels).
    memory: the multi-reference memory bank (``MemoryBankConfig``; JSON its dict), None for none.
    rate_lambdas: anchor λ of a variable-rate model (``hpcm.layers.gain.QualityGains``; quality k has
    ``rate_lambdas[k - 1]``); empty for a fixed-rate model (the official architecture).
    """

    M: int = 320
    N: int = 256
    g_channels: tuple[int, int, int] = (96, 192, 384)
    g_depths: tuple[int, int, int] = (2, 2, 4)
    h_a_depths: tuple[int, int] = (1, 3)
    h_s_depths: tuple[int, int] = (3, 1)
    mlp_ratio: int = 4
    partial_ratio: int = 4
    cells: tuple[ComponentSpec, ComponentSpec, ComponentSpec] = field(default_factory=_default_cells)
    context_nets: tuple[ComponentSpec, ComponentSpec] = field(default_factory=_default_context_nets)
    prior_s12: ComponentSpec = field(default_factory=lambda: DWConvPriorSpec(depths=(2, 1)))
    prior_s3: ComponentSpec = field(default_factory=lambda: DWConvPriorSpec(depths=(3, 2)))
    ggm_beta: float = 1.5
    scale_bound: float = 0.12
    likelihood_bound: float = 1e-9
    scale_table: tuple[float, float, int] = (0.12, 64.0, 60)
    memory: MemoryBankConfig | None = None
    rate_lambdas: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        self.rate_lambdas = tuple(float(v) for v in self.rate_lambdas)
        self.g_channels = tuple(int(c) for c in self.g_channels)
        self.g_depths = tuple(int(d) for d in self.g_depths)
        self.h_a_depths = tuple(int(d) for d in self.h_a_depths)
        self.h_s_depths = tuple(int(d) for d in self.h_s_depths)
        self.scale_table = (float(self.scale_table[0]), float(self.scale_table[1]), int(self.scale_table[2]))
        self.cells = tuple(as_spec("cell", c) for c in self.cells)
        self.context_nets = tuple(as_spec("context_net", c) for c in self.context_nets)
        self.prior_s12 = as_spec("prior", self.prior_s12)
        self.prior_s3 = as_spec("prior", self.prior_s3)
        if isinstance(self.memory, dict):
            self.memory = MemoryBankConfig.from_dict(self.memory)
        elif self.memory is not None and not isinstance(self.memory, MemoryBankConfig):
            raise TypeError(f"memory: a MemoryBankConfig, dict or None, not {type(self.memory).__name__}")
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` on inconsistent settings."""
        if self.M % 8:
            raise ValueError(f"M must be a multiple of 8 (8 channel groups), got {self.M}")
        if len(self.g_channels) != 3 or len(self.g_depths) != 3:
            raise ValueError("g_channels and g_depths need 3 entries")
        if len(self.cells) != 3 or len(self.context_nets) != 2:
            raise ValueError("need 3 cell specs (s1, s2, s3) and 2 context net specs")
        for c in (*self.g_channels, self.M, self.N, 2 * self.M):
            if c % self.partial_ratio:
                raise ValueError(f"channel count {c} not divisible by partial_ratio {self.partial_ratio}")
        lam = self.rate_lambdas
        if lam and (len(lam) < 2 or lam[0] <= 0 or any(b <= a for a, b in zip(lam, lam[1:], strict=False))):
            raise ValueError(f"rate_lambdas must be >= 2 increasing positive values, got {list(lam)}")
        for spec in (*self.cells, *self.context_nets, self.prior_s12, self.prior_s3):
            spec.validate(self.M)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (tuples become lists, specs and the memory bank their ``to_dict``)."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HPCMConfig:
        """Inverse of ``to_dict``; unknown keys raise ``ValueError``."""
        unknown = unknown_fields(cls, data)
        if unknown:
            raise ValueError(f"unknown HPCMConfig fields: {unknown}")
        return cls(**data)


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    return obj
