"""Model registry: names -> ``HPCMConfig`` factories, and ``create_model``.

Presets:

- ``hpcm-base``: official HPCM-Base (M=320, N=256), 68,505,299 parameters, 918.56 kMACs/pixel.
- ``hpcm-large``: official HPCM-Large, 89,718,803 parameters, 1261.32 kMACs/pixel.
- ``hpcm-tiny``: the same structure at CPU-trainable size: M=64, N=64, g stages 32/64/96 with
  1/1/2 PConvRB (mlp 2), h_a/h_s 1+1 blocks, priors (1, 1) and (2, 1), attention windows 4/8/8
  with 8 heads (head_dim 16). 1,952,035 parameters and about 25.8 kMACs/pixel (forward, eval, measured
  with torch FlopCounterMode on a 256x256 input, MACs = FLOPs / 2; the same count gives the base and
  large figures above, equal to the spec's §10.2 values).
- ``hpcm-tiny-vr``: ``hpcm-tiny`` with quality-conditioned gains (``hpcm.layers.gain``): one set of
  weights for every quality in 1..8 (fractional qualities interpolate), anchors ``VR_LAMBDAS``.
- ``hpcm-phase{1..4}`` / ``hpcm-phase{1..4}-tiny``: the RWKV phases (``hpcm.models.phases``) at the base /
  tiny widths; ``hpcm-multiref-phase{1,2}[-light|-accurate][-tiny]``: a multi-reference memory bank
  (``MEMORY_PRESETS``) at s3 only (phase1) or at s1/s2/s3 with hierarchical transfer (phase2).

Every preset is declared once below with its literal name: the four width presets as decorated factories
(``@register_model``), the variants as rows of ``PHASE_PRESETS`` and ``MULTIREF_PRESETS``. The
seed-style constructors of ``hpcm.models.variants`` are thin aliases over these rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from hpcm.layers.memory_config import MEMORY_PRESETS
from hpcm.models.components import CrossCellSpec, DWConvPriorSpec
from hpcm.models.config import HPCMConfig
from hpcm.models.phases import apply_phase
from hpcm.rates import VR_LAMBDAS

__all__ = [
    "MULTIREF_PRESETS",
    "PHASE_PRESETS",
    "VR_LAMBDAS",
    "ModelEntry",
    "baseline_name",
    "create_model",
    "get_config",
    "get_entry",
    "list_models",
    "register_model",
    "unregister_model",
]


@dataclass(frozen=True)
class ModelEntry:
    """A registered preset: its config factory, one-line description and the width preset it varies."""

    name: str
    factory: Callable[[], HPCMConfig]
    description: str
    baseline: str


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, description: str = "", *, baseline: str | None = None):
    """Decorator: register a config factory (``() -> HPCMConfig``, a fresh config per call) as ``name``.

    ``baseline``: the width preset whose phase table ``hpcm describe`` shows (default: ``name`` itself).
    """

    def decorate(factory: Callable[[], HPCMConfig]) -> Callable[[], HPCMConfig]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = ModelEntry(name, factory, description, baseline or name)
        return factory

    return decorate


def unregister_model(name: str) -> None:
    """Remove ``name`` (tests, experiments); unknown names are ignored."""
    _REGISTRY.pop(name, None)


def list_models() -> dict[str, str]:
    """Registered names -> one-line descriptions."""
    return {name: e.description for name, e in sorted(_REGISTRY.items())}


def get_entry(name: str) -> ModelEntry:
    """The registry entry of ``name`` (``KeyError`` listing the known names)."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def get_config(name: str, **overrides: Any) -> HPCMConfig:
    """The preset's config with ``overrides`` (HPCMConfig fields) applied."""
    return HPCMConfig.from_dict({**get_entry(name).factory().to_dict(), **overrides})


def baseline_name(name: str) -> str:
    """The width preset (``hpcm-base``, ``hpcm-tiny`` …) that the preset ``name`` is a variant of."""
    entry = _REGISTRY.get(name)
    return entry.baseline if entry is not None else name


def create_model(name: str, **overrides: Any):
    """Build the registered model ``name`` (an ``HPCM``) with config ``overrides``."""
    from hpcm.models.hpcm import HPCM

    return HPCM(get_config(name, **overrides))


# --- width presets --------------------------------------------------------------------------------


@register_model("hpcm-base", "official HPCM-Base (68.5 M parameters)")
def hpcm_base() -> HPCMConfig:
    return HPCMConfig()


@register_model("hpcm-large", "official HPCM-Large (89.7 M parameters)")
def hpcm_large() -> HPCMConfig:
    return HPCMConfig(
        g_depths=(2, 2, 8), prior_s12=DWConvPriorSpec(depths=(2, 2)), prior_s3=DWConvPriorSpec(depths=(4, 3))
    )


@register_model("hpcm-tiny", "HPCM structure at CPU-trainable size (M=64, N=64)")
def hpcm_tiny() -> HPCMConfig:
    return HPCMConfig(
        M=64,
        N=64,
        g_channels=(32, 64, 96),
        g_depths=(1, 1, 2),
        h_a_depths=(1, 1),
        h_s_depths=(1, 1),
        mlp_ratio=2,
        partial_ratio=4,
        cells=tuple(CrossCellSpec(window=w, heads=8) for w in (4, 8, 8)),
        prior_s12=DWConvPriorSpec(depths=(1, 1)),
        prior_s3=DWConvPriorSpec(depths=(2, 1)),
    )


@register_model("hpcm-tiny-vr", "hpcm-tiny with quality gains: one model for qualities 1..8")
def hpcm_tiny_vr() -> HPCMConfig:
    return replace(hpcm_tiny(), rate_lambdas=VR_LAMBDAS)


@register_model(
    "hpcm-small-vr",
    "hpcm-tiny-vr with M=192 and 64/128/192 transform channels, for high quality (widened from hpcm-tiny-vr)",
)
def hpcm_small_vr() -> HPCMConfig:
    return replace(hpcm_tiny_vr(), M=192, g_channels=(64, 128, 192))


# --- variants: one row per preset -----------------------------------------------------------------

#: RWKV phase presets: name -> (width preset, phase).
PHASE_PRESETS: dict[str, tuple[str, str]] = {
    "hpcm-phase1": ("hpcm-base", "phase1"),
    "hpcm-phase2": ("hpcm-base", "phase2"),
    "hpcm-phase3": ("hpcm-base", "phase3"),
    "hpcm-phase4": ("hpcm-base", "phase4"),
    "hpcm-phase1-tiny": ("hpcm-tiny", "phase1"),
    "hpcm-phase2-tiny": ("hpcm-tiny", "phase2"),
    "hpcm-phase3-tiny": ("hpcm-tiny", "phase3"),
    "hpcm-phase4-tiny": ("hpcm-tiny", "phase4"),
}

#: Multi-reference presets on the baseline: name -> (width preset, scales with a bank, memory preset).
MULTIREF_PRESETS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "hpcm-multiref-phase1": ("hpcm-base", ("s3",), "default"),
    "hpcm-multiref-phase1-light": ("hpcm-base", ("s3",), "light"),
    "hpcm-multiref-phase1-accurate": ("hpcm-base", ("s3",), "accurate"),
    "hpcm-multiref-phase2": ("hpcm-base", ("s1", "s2", "s3"), "default"),
    "hpcm-multiref-phase2-light": ("hpcm-base", ("s1", "s2", "s3"), "light"),
    "hpcm-multiref-phase2-accurate": ("hpcm-base", ("s1", "s2", "s3"), "accurate"),
    "hpcm-multiref-phase1-tiny": ("hpcm-tiny", ("s3",), "default"),
    "hpcm-multiref-phase1-light-tiny": ("hpcm-tiny", ("s3",), "light"),
    "hpcm-multiref-phase1-accurate-tiny": ("hpcm-tiny", ("s3",), "accurate"),
    "hpcm-multiref-phase2-tiny": ("hpcm-tiny", ("s1", "s2", "s3"), "default"),
    "hpcm-multiref-phase2-light-tiny": ("hpcm-tiny", ("s1", "s2", "s3"), "light"),
    "hpcm-multiref-phase2-accurate-tiny": ("hpcm-tiny", ("s1", "s2", "s3"), "accurate"),
}


def _phase_factory(width: str, phase: str) -> Callable[[], HPCMConfig]:
    return lambda: apply_phase(get_config(width), phase)


def _multiref_factory(width: str, scales: tuple[str, ...], bank: str) -> Callable[[], HPCMConfig]:
    return lambda: replace(get_config(width), memory=replace(MEMORY_PRESETS[bank], enabled_scales=scales))


for _name, (_width, _phase) in PHASE_PRESETS.items():
    register_model(_name, f"HPCM × RWKV {_phase} at {_width} widths", baseline=_width)(
        _phase_factory(_width, _phase)
    )
for _name, (_width, _scales, _bank) in MULTIREF_PRESETS.items():
    _profile = "" if _bank == "default" else f", {_bank}"
    _desc = f"multi-reference memory bank ({', '.join(_scales)}{_profile}) on the baseline at {_width} widths"
    register_model(_name, _desc, baseline=_width)(_multiref_factory(_width, _scales, _bank))
