"""Configuration of the multi-reference memory bank (``hpcm.layers.memory_bank``), without torch.

``MemoryBankConfig`` is the typed ``HPCMConfig.memory`` of the multi-reference presets; ``MEMORY_PRESETS`` is
the one table of its named configurations (``default``, ``light``, ``accurate``) that the registered
``hpcm-multiref-*`` presets and the seed-style ``HPCM_MultiRef_*`` constructors use.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from hpcm._fields import unknown_fields

SCALES: tuple[str, str, str] = ("s1", "s2", "s3")
MODES: tuple[str, str] = ("topk", "soft")


@dataclass(frozen=True)
class MemoryBankConfig:
    """Hyper-parameters of the hierarchical memory bank (JSON round-trippable via ``to_dict``/``from_dict``).

    max_refs_s*: FIFO capacity per scale; topk_refs_s*: references kept per read in ``topk`` mode;
    value_resolution: side R of the stored R x R values; compress_ratio: C -> C // ratio key/value width;
    temperature: initial softmax temperature (learnable if ``learnable_temperature``, clamped to
    ``temperature_range``); mode: "topk" or "soft"; enabled_scales: which scales get a bank;
    enable_hierarchical_transfer: move entries s1 -> s2 -> s3 at scale changes.
    """

    max_refs_s1: int = 2
    max_refs_s2: int = 3
    max_refs_s3: int = 4
    topk_refs_s1: int = 1
    topk_refs_s2: int = 2
    topk_refs_s3: int = 2
    value_resolution: int = 8
    compress_ratio: int = 4
    temperature: float = 0.1
    temperature_range: tuple[float, float] = (0.02, 1.0)
    learnable_temperature: bool = True
    mode: str = "topk"
    enabled_scales: tuple[str, ...] = SCALES
    enable_hierarchical_transfer: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "enabled_scales", tuple(str(s) for s in self.enabled_scales))
        tr = self.temperature_range
        object.__setattr__(self, "temperature_range", (float(tr[0]), float(tr[1])))
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` on inconsistent settings."""
        for s in SCALES:
            if self.max_refs(s) < 1:
                raise ValueError(f"max_refs_{s} must be >= 1, got {self.max_refs(s)}")
            if self.topk_refs(s) < 1:
                raise ValueError(f"topk_refs_{s} must be >= 1, got {self.topk_refs(s)}")
        if self.value_resolution < 1:
            raise ValueError(f"value_resolution must be >= 1, got {self.value_resolution}")
        if self.compress_ratio < 1:
            raise ValueError(f"compress_ratio must be >= 1, got {self.compress_ratio}")
        lo, hi = self.temperature_range
        if not 0 < lo <= self.temperature <= hi:
            raise ValueError(f"temperature {self.temperature} outside range {self.temperature_range}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        bad = [s for s in self.enabled_scales if s not in SCALES]
        if bad or len(set(self.enabled_scales)) != len(self.enabled_scales):
            raise ValueError(f"enabled_scales must be distinct names from {SCALES}: {self.enabled_scales}")

    def max_refs(self, scale: str) -> int:
        """Capacity of the bank of ``scale``."""
        return int(getattr(self, f"max_refs_{scale}"))

    def topk_refs(self, scale: str) -> int:
        """Number of references kept per read at ``scale`` in top-k mode."""
        return int(getattr(self, f"topk_refs_{scale}"))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (tuples become lists)."""
        d = asdict(self)
        d["enabled_scales"] = list(self.enabled_scales)
        d["temperature_range"] = list(self.temperature_range)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MemoryBankConfig:
        """Inverse of ``to_dict``; unknown keys raise ``ValueError``."""
        unknown = unknown_fields(cls, data)
        if unknown:
            raise ValueError(f"unknown MemoryBankConfig fields: {unknown}")
        kw = dict(data)
        if "enabled_scales" in kw:
            kw["enabled_scales"] = tuple(kw["enabled_scales"])
        if "temperature_range" in kw:
            kw["temperature_range"] = tuple(kw["temperature_range"])
        return cls(**kw)


#: The named memory-bank configurations, each declared once (fields not given keep the defaults above).
MEMORY_PRESETS: dict[str, MemoryBankConfig] = {
    "default": MemoryBankConfig(),
    "light": MemoryBankConfig(
        max_refs_s1=1, max_refs_s2=2, max_refs_s3=3, compress_ratio=8, value_resolution=4,
    ),
    "accurate": MemoryBankConfig(
        max_refs_s1=3, max_refs_s2=4, max_refs_s3=6, topk_refs_s1=2, topk_refs_s2=3, topk_refs_s3=3,
        compress_ratio=2, value_resolution=16,
    ),
}
MULTIREF_DEFAULT = MEMORY_PRESETS["default"]
MULTIREF_LIGHT = MEMORY_PRESETS["light"]
MULTIREF_ACCURATE = MEMORY_PRESETS["accurate"]
