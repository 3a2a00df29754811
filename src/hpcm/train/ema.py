"""Exponential moving average of the weights (``hpcm train --ema DECAY``, ``hpcm export --ema``).

After every optimizer step that was taken, every floating-point parameter's average moves towards it:
``avg ← avg + (1 − d)·(p − avg)``, d = ``decay`` (a horizon of about 1 / (1 − decay) steps). The average
starts at the weights of the step it starts at, whose share after k updates is decay^k: no warm-up ramp,
since our runs start from trained weights (a run from random weights should start its average later, or
ship it only after many horizons). The
averages are float32 copies on the model's device, saved in the training checkpoint as ``ema/<name>`` with
``meta["ema"] = {"decay", "updates"}``, so ``--resume`` continues them exactly. An average started on a run
that had none (``--resume --ema``) begins at the resumed weights.

Averaging the iterates of a noisy optimizer approximates what a lower learning rate reaches, without
stopping the run to decay it (Polyak & Juditsky 1992; the "EMA" weights of most modern training recipes).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

PREFIX = "ema/"


class WeightAverage:
    """EMA of ``model``'s floating-point parameters; ``decay`` in (0, 1)."""

    def __init__(self, model: nn.Module, decay: float, updates: int = 0) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.updates = int(updates)
        self.names = [n for n, p in model.named_parameters() if p.is_floating_point()]
        self.averages = [p.to(torch.float32).clone() for p in self._params(model)]

    def _params(self, model: nn.Module) -> list[torch.Tensor]:
        params = dict(model.named_parameters())
        return [params[n].detach() for n in self.names]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the averages towards ``model``'s parameters (after an optimizer step)."""
        weight = 1.0 - self.decay
        params = [p.to(torch.float32) for p in self._params(model)]
        torch._foreach_lerp_(self.averages, params, weight)
        self.updates += 1

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """``{"ema/<name>": (CPU float32 tensor)}`` for the checkpoint."""
        from hpcm.train.checkpoint import _cpu

        return {PREFIX + n: _cpu(a) for n, a in zip(self.names, self.averages, strict=True)}

    def meta(self) -> dict[str, float | int]:
        return {"decay": self.decay, "updates": self.updates}

    def load(self, tensors: dict[str, torch.Tensor], updates: int) -> None:
        """Restore the averages from checkpoint ``tensors`` (its ``ema/`` entries, one for every name)."""
        missing = [n for n in self.names if PREFIX + n not in tensors]
        if missing:
            raise KeyError(f"the checkpoint's EMA lacks {len(missing)} parameters, e.g. {missing[0]}")
        for n, a in zip(self.names, self.averages, strict=True):
            a.copy_(tensors[PREFIX + n])
        self.updates = int(updates)

    @contextlib.contextmanager
    @torch.no_grad()
    def applied_to(self, model: nn.Module) -> Iterator[nn.Module]:
        """Temporarily put the averages into ``model``'s parameters (e.g. to validate them)."""
        params = self._params(model)
        saved = [p.clone() for p in params]
        try:
            for p, a in zip(params, self.averages, strict=True):
                p.copy_(a)
            yield model
        finally:
            for p, s in zip(params, saved, strict=True):
                p.copy_(s)


def has_average(tensors: dict[str, torch.Tensor]) -> bool:
    """Whether checkpoint ``tensors`` hold an EMA of the weights."""
    return any(k.startswith(PREFIX) for k in tensors)


def averaged_model_state(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The checkpoint's model state with every averaged parameter replaced by its average (export)."""
    from hpcm.train.checkpoint import model_state

    state = model_state(tensors)
    for k, v in tensors.items():
        if k.startswith(PREFIX):
            name = k[len(PREFIX):]
            if name not in state:
                raise KeyError(f"EMA entry {name} is not a parameter of the checkpoint's model")
            state[name] = v.to(state[name].dtype)
    return state
