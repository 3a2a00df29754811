"""Moving weights between model variants, freezing, and per-module learning-rate groups.

Pattern syntax (used by :func:`freeze`, :func:`freeze_except` and :func:`param_groups`):

- a plain pattern is an ``fnmatch`` shell pattern (``*``, ``?``, ``[...]``) matched against the full
  parameter name *and* every dotted prefix of it, so ``attn_s3`` matches ``attn_s3.q.weight`` and
  ``*.decay`` matches ``attn_s1.blocks.0.att.decay``;
- a pattern starting with ``re:`` is a Python regular expression searched (``re.search``) in the full
  parameter name, e.g. ``re:(decay|boost)$``.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from hpcm.models.io import strip_wrapper_prefix

__all__ = [
    "MigrationReport",
    "freeze",
    "freeze_except",
    "matches",
    "migrate",
    "param_groups",
    "parse_lr_rules",
]


@dataclass
class MigrationReport:
    """What :func:`migrate` did, key by key (state-dict names of the destination model)."""

    copied: list[str] = field(default_factory=list)
    initialised: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every destination tensor was copied from the source."""
        return not self.initialised

    def to_dict(self) -> dict:
        """JSON-friendly form."""
        return {
            "copied": list(self.copied),
            "initialised": list(self.initialised),
            "dropped": list(self.dropped),
            "mismatched": [[k, list(a), list(b)] for k, a, b in self.mismatched],
        }

    def summary(self) -> str:
        """One line with the counts."""
        return (
            f"migrate: {len(self.copied)} copied, {len(self.initialised)} newly initialised, "
            f"{len(self.dropped)} dropped, {len(self.mismatched)} shape-mismatched"
        )

    def __str__(self) -> str:
        lines = [self.summary()]
        if self.initialised:
            lines.append("  newly initialised (kept the destination's initial values):")
            lines += [f"    {k}" for k in self.initialised]
        if self.mismatched:
            lines.append("  shape-mismatched (source shape -> destination shape, not copied):")
            lines += [f"    {k}: {tuple(a)} -> {tuple(b)}" for k, a, b in self.mismatched]
        if self.dropped:
            lines.append("  dropped (only in the source):")
            lines += [f"    {k}" for k in self.dropped]
        return "\n".join(lines)


@torch.no_grad()
def migrate(src_state_dict: Mapping[str, torch.Tensor], dst_model: nn.Module) -> MigrationReport:
    """Copy into ``dst_model`` every source tensor whose name and shape match (parameters and buffers).

    Tensors of ``dst_model`` with no matching source keep their current (initial) values. A ``module.``
    prefix on all source keys is ignored. Returns a :class:`MigrationReport`.
    """
    src = strip_wrapper_prefix(dict(src_state_dict))
    dst = dst_model.state_dict()
    report = MigrationReport()
    for name, target in dst.items():
        value = src.get(name)
        if value is None:
            report.initialised.append(name)
        elif tuple(value.shape) != tuple(target.shape):
            report.mismatched.append((name, tuple(value.shape), tuple(target.shape)))
            report.initialised.append(name)
        else:
            target.copy_(value.to(dtype=target.dtype, device=target.device))
            report.copied.append(name)
    report.dropped = [k for k in src if k not in dst]
    return report


def matches(name: str, pattern: str) -> bool:
    """Whether a parameter ``name`` matches ``pattern`` (see the module docstring for the syntax)."""
    if pattern.startswith("re:"):
        return re.search(pattern[3:], name) is not None
    parts = name.split(".")
    return any(fnmatch.fnmatchcase(".".join(parts[:i]), pattern) for i in range(len(parts), 0, -1))


def _any_match(name: str, patterns: Iterable[str]) -> bool:
    return any(matches(name, p) for p in patterns)


def freeze(model: nn.Module, patterns: Iterable[str]) -> list[str]:
    """Set ``requires_grad=False`` on parameters matching any pattern; returns their names."""
    patterns = list(patterns)
    frozen = []
    for name, p in model.named_parameters():
        if _any_match(name, patterns):
            p.requires_grad_(False)
            frozen.append(name)
    return frozen


def freeze_except(model: nn.Module, patterns: Iterable[str]) -> list[str]:
    """Freeze every parameter that matches none of ``patterns``; returns the frozen names."""
    patterns = list(patterns)
    frozen = []
    for name, p in model.named_parameters():
        if not _any_match(name, patterns):
            p.requires_grad_(False)
            frozen.append(name)
    return frozen


def parse_lr_rules(specs: Iterable[str]) -> list[tuple[str, float]]:
    """Parse ``PATTERN=FACTOR`` strings (the ``--lr-group`` flag) into rules."""
    rules = []
    for spec in specs:
        pattern, sep, factor = spec.rpartition("=")
        if not sep or not pattern:
            raise ValueError(f"learning-rate rule {spec!r} is not PATTERN=FACTOR")
        try:
            value = float(factor)
        except ValueError:
            raise ValueError(f"learning-rate rule {spec!r}: {factor!r} is not a number") from None
        if value < 0:
            raise ValueError(f"learning-rate rule {spec!r}: factor must be >= 0")
        rules.append((pattern, value))
    return rules


def param_groups(
    model: nn.Module, base_lr: float, rules: Iterable[tuple[str, float]] = ()
) -> list[dict]:
    """Optimizer parameter groups; the first matching ``(pattern, factor)`` rule sets ``lr = base_lr*factor``.

    Trainable parameters matching no rule form the default group (factor 1). Every trainable
    parameter lands in exactly one group; frozen parameters are left out; empty groups are omitted.
    Each group carries ``name`` (the pattern or ``"default"``), ``lr_factor`` and ``param_names``.
    """
    rules = list(rules)
    buckets: list[list[tuple[str, nn.Parameter]]] = [[] for _ in range(len(rules) + 1)]
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        idx = next((i for i, (pat, _) in enumerate(rules) if matches(name, pat)), len(rules))
        buckets[idx].append((name, p))
    groups = []
    labels = [(pat, f) for pat, f in rules] + [("default", 1.0)]
    for (label, factor), bucket in zip(labels, buckets):
        if not bucket:
            continue
        groups.append(
            {
                "params": [p for _, p in bucket],
                "param_names": [n for n, _ in bucket],
                "lr": base_lr * factor,
                "lr_factor": factor,
                "name": label,
            }
        )
    return groups
