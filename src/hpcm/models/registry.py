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
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from hpcm.models.components import CellSpec, PriorSpec
from hpcm.models.config import HPCMConfig


@dataclass(frozen=True)
class _Entry:
    factory: Callable[[], HPCMConfig]
    description: str


_REGISTRY: dict[str, _Entry] = {}


def register_model(name: str, config_factory: Callable[[], HPCMConfig], description: str = "") -> None:
    """Register ``name``; ``config_factory()`` must return a fresh ``HPCMConfig``."""
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    _REGISTRY[name] = _Entry(config_factory, description)


def list_models() -> dict[str, str]:
    """Registered names -> one-line descriptions."""
    return {name: e.description for name, e in sorted(_REGISTRY.items())}


def get_config(name: str, **overrides: Any) -> HPCMConfig:
    """The preset's config with ``overrides`` (HPCMConfig fields) applied."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return HPCMConfig.from_dict({**_REGISTRY[name].factory().to_dict(), **overrides})


def create_model(name: str, **overrides: Any):
    """Build the registered model ``name`` (an ``HPCM``) with config ``overrides``."""
    from hpcm.models.hpcm import HPCM

    return HPCM(get_config(name, **overrides))


def _base() -> HPCMConfig:
    return HPCMConfig()


def _large() -> HPCMConfig:
    return HPCMConfig(
        g_depths=(2, 2, 8), prior_s12=PriorSpec(depths=(2, 2)), prior_s3=PriorSpec(depths=(4, 3))
    )


def _tiny() -> HPCMConfig:
    return HPCMConfig(
        M=64,
        N=64,
        g_channels=(32, 64, 96),
        g_depths=(1, 1, 2),
        h_a_depths=(1, 1),
        h_s_depths=(1, 1),
        mlp_ratio=2,
        partial_ratio=4,
        cells=(CellSpec(window=4, heads=8), CellSpec(window=8, heads=8), CellSpec(window=8, heads=8)),
        prior_s12=PriorSpec(depths=(1, 1)),
        prior_s3=PriorSpec(depths=(2, 1)),
    )


#: Anchor λ (MSE) of the variable-rate presets, quality 1..8: HPCM's six rate points (quality 1..5 keep
#: the fixed-rate presets' λ) and two above them, continuing the ×1.93 progression, for high quality.
VR_LAMBDAS = (0.0018, 0.0035, 0.0067, 0.013, 0.025, 0.0483, 0.0932, 0.18)


def _tiny_vr() -> HPCMConfig:
    return replace(_tiny(), rate_lambdas=VR_LAMBDAS)


register_model("hpcm-base", _base, "official HPCM-Base (68.5 M parameters)")
register_model("hpcm-large", _large, "official HPCM-Large (89.7 M parameters)")
register_model("hpcm-tiny", _tiny, "HPCM structure at CPU-trainable size (M=64, N=64)")
register_model("hpcm-tiny-vr", _tiny_vr, "hpcm-tiny with quality gains: one model for qualities 1..8")

# The RWKV phases and multi-reference presets register themselves on import.
from hpcm.models import variants as _variants  # noqa: E402,F401
