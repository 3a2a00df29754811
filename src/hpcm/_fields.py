"""Shared check for the ``from_dict`` constructors of the config dataclasses."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import fields


def unknown_fields(cls: type, keys: Iterable[str]) -> list[str]:
    """Sorted names in ``keys`` that are not fields of dataclass ``cls`` (empty when all are known)."""
    return sorted(set(keys) - {f.name for f in fields(cls)})
