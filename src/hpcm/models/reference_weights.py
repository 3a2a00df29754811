"""Deterministic full-rank pseudo-random weights of the HPCM reference vectors (spec hpcm.md §15.1).

For a learned parameter ``name`` of shape S with n elements::

    phase = (crc32(name) % 10007) / 10007 * 2 * pi          # float64, left to right
    t = fl(12.9898 * (i + 1)); a = fl(t + phase)             # separate float64 roundings, no FMA
    u = 2 * frac(sin(a) * 43758.5453) - 1
    weight (``.weight``, ndim >= 2): u * sqrt(3 / (n / S[0])) * F;  other: 0.01 * u

``means_hyper`` -> 0, ``scales_hyper`` -> 1, ``adaptive_params_list.*`` -> 1; buffers are untouched.
NumPy evaluates each elementwise operation separately in float64, which gives the required
operation order.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import torch
from torch import nn

#: Factor F of the reference vectors.
REFERENCE_FACTOR = 0.86


def rule_phase(name: str) -> float:
    """Phase of a parameter: (crc32 % 10007) / 10007 * 2 * pi, evaluated left to right."""
    c = zlib.crc32(name.encode("utf-8"))
    return (c % 10007) / 10007 * 2 * math.pi


def rule_u(name: str, n: int) -> np.ndarray:
    """The uniform-looking hash values u_0..u_{n-1} in [-1, 1], float64 (n,)."""
    k = np.arange(1, n + 1, dtype=np.float64)
    t = np.multiply(12.9898, k)
    a = np.add(t, rule_phase(name))
    s = np.multiply(np.sin(a), 43758.5453)
    return 2.0 * (s - np.floor(s)) - 1.0


def rule_multiplier(name: str, shape: tuple[int, ...], factor: float = REFERENCE_FACTOR) -> float:
    """sqrt(3 / fan_in) * F for ``.weight`` tensors with ndim >= 2, else 0.01."""
    if name.endswith(".weight") and len(shape) >= 2:
        n = math.prod(shape)
        return math.sqrt(3.0 / (n / shape[0])) * factor
    return 0.01


def rule_value(name: str, shape: tuple[int, ...], factor: float = REFERENCE_FACTOR) -> np.ndarray:
    """float64 array of ``shape`` for parameter ``name`` under the rule (special keys included)."""
    if name == "means_hyper":
        return np.zeros(shape, dtype=np.float64)
    if name == "scales_hyper" or name.startswith("adaptive_params_list."):
        return np.ones(shape, dtype=np.float64)
    n = math.prod(shape)
    u = rule_u(name, n).reshape(shape)
    if name.endswith(".weight") and len(shape) >= 2:
        return u * math.sqrt(3.0 / (n / shape[0])) * factor  # left to right, as in the rule
    return 0.01 * u


@torch.no_grad()
def apply_reference_weights(model: nn.Module, factor: float = REFERENCE_FACTOR) -> nn.Module:
    """Overwrite every learned parameter of ``model`` with the rule values, cast to its dtype."""
    for name, p in model.named_parameters():
        value = torch.from_numpy(rule_value(name, tuple(p.shape), factor))
        p.copy_(value.to(dtype=p.dtype, device=p.device))
    return model
