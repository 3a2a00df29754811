"""What the codec, the trainer and the evaluator need from a model, each defined once.

``CodingModel`` is the typed protocol (``HPCM`` satisfies it; so can a test double); the functions read it
from any ``nn.Module``, with the defaults written here and nowhere else:

- ``size_multiple(model)``: image H and W given to the model must be multiples of it (callers pad);
- ``model_device(model)``: where its parameters live;
- ``is_variable_rate(model)``: whether its quality is chosen per image (``model.variable_rate``);
- ``weights_info(model)`` / ``model_preset(model)``: provenance of the loaded weights (``hpcm.models.io``);
- ``model_config_dict(model)``: the JSON-able architecture (``model.config.to_dict()``) recorded with weights
  and training checkpoints;
- ``format_versions(model)``: the file-format versions whose coding rules its ``forward``, ``compress`` and
  ``decompress`` take as ``format_version=`` (``model.format_versions``; empty: it codes one way only);
- ``synthesis_layouts(model)``: the memory layouts its ``decompress`` can run the synthesis in, taken as
  ``synthesis_layout=`` (``model.synthesis_layouts``; empty: it reconstructs one way only);
- ``can_refine(model)``: whether the encoder can refine its latent (``hpcm.codec.refine``: the model has
  ``analyse``, ``latent_statistics``, ``synthesise`` and ``rate_lambda``, and ``compress`` takes ``latent=``).

Writers set the attributes (``model.preset = ...``, ``model.weights_info = ...``); readers use these
functions, never ``getattr`` with a default of their own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch
    from torch import nn

#: ``size_multiple`` of a model that declares none: any size.
DEFAULT_SIZE_MULTIPLE = 1


@runtime_checkable
class CodingModel(Protocol):
    """A learned codec as the codec, trainer and evaluator use it.

    size_multiple: H and W of an input must be multiples of it. preset: the registered preset it was built
    from (None when unknown). weights_info: provenance of the weights (preset, quality, fingerprint, trained,
    source, ...; filled by ``hpcm.models.io.load_model``, empty for fresh weights).
    ``forward(x, training=None, **kw) -> {"x_hat", "likelihoods"}``.
    """

    size_multiple: int
    preset: str | None
    weights_info: dict[str, Any]

    def __call__(self, x: Any, *args: Any, **kwargs: Any) -> dict[str, Any]: ...


def size_multiple(model: Any) -> int:
    """``model.size_multiple`` (``DEFAULT_SIZE_MULTIPLE`` when it declares none), a positive int."""
    m = int(getattr(model, "size_multiple", DEFAULT_SIZE_MULTIPLE))
    if m < 1:
        raise ValueError(f"model.size_multiple must be >= 1, got {m}")
    return m


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's parameters (CPU for a parameterless module)."""
    import torch

    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def is_variable_rate(model: Any) -> bool:
    """True for a model whose quality is chosen per image (``model.variable_rate``; False when undeclared)."""
    return bool(getattr(model, "variable_rate", False))


def weights_info(model: Any) -> dict[str, Any]:
    """A copy of ``model.weights_info`` (empty when the model has none)."""
    info = getattr(model, "weights_info", None)
    return dict(info) if isinstance(info, dict) else {}


def format_versions(model: Any) -> tuple[int, ...]:
    """``model.format_versions`` as a tuple (empty when undeclared: the model takes no ``format_version``)."""
    return tuple(int(v) for v in getattr(model, "format_versions", ()))


def model_preset(model: Any) -> str | None:
    """The preset recorded with the weights, else ``model.preset``, else None."""
    return weights_info(model).get("preset") or getattr(model, "preset", None)


def model_config_dict(model: Any) -> dict[str, Any] | None:
    """``model.config.to_dict()`` (an ``HPCMConfig``'s JSON-able dict), None for a model without one."""
    config = getattr(model, "config", None)
    return config.to_dict() if hasattr(config, "to_dict") else None


def synthesis_layouts(model: Any) -> tuple[str, ...]:
    """``model.synthesis_layouts`` as a tuple (empty when undeclared: its ``decompress`` takes no
    ``synthesis_layout``)."""
    return tuple(str(v) for v in getattr(model, "synthesis_layouts", ()))


#: what :mod:`hpcm.codec.refine` calls on a model
REFINE_METHODS = ("analyse", "latent_statistics", "synthesise", "rate_lambda")


def can_refine(model: Any) -> bool:
    """True when the encoder can refine the model's latent (it has every method in ``REFINE_METHODS``)."""
    return all(callable(getattr(model, name, None)) for name in REFINE_METHODS)
