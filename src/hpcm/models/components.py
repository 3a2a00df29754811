"""Choosable context components of the HPCM entropy model: a registry of component *kinds*.

HPCM's context model has three swappable roles (the official baseline, the RWKV phases and the
multi-reference variants are configurations of one model):

| role          | config field           | ``build(dim)`` | the module                                      |
|---------------|------------------------|----------------|-------------------------------------------------|
| cell          | cells (s1, s2, s3)     | dim = 2M       | cell(psi, prev) -> new_prev, all (B, 2M, h, w)  |
| context_net   | context_nets (2)       | dim = 2M       | net(C) -> C, (B, 2M, h, w)                      |
| prior         | prior_s12, prior_s3    | dim = M        | prior(x, quant_step) -> psi, 3M -> 2M channels  |

A *kind* of a role is ONE frozen dataclass (its own fields only) registered with
:func:`register_component`; the class is the kind's spec, its builder (``build``) and its display label
(``label``). Everything else derives from the registry: ``HPCM`` construction, the config's JSON form
(``{"kind": ..., <fields>}``), reading configs written before the kinds had their own specs
(:func:`spec_from_dict` drops the fields of the former one-class-per-role specs that a kind does not
have), validation against M and ``hpcm describe``'s labels. A new kind is one class in any module::

    @register_component("cell", "gated")
    @dataclass(frozen=True)
    class GatedCellSpec(ComponentSpec):
        hidden: int = 2

        def build(self, dim):
            return MyGatedCell(dim, self.hidden)

        def label(self):
            return f"gated(h{self.hidden})"

The builders import their layer modules (and torch) lazily, so a kind that is not used costs nothing, and
the specs (hence the registry and ``hpcm models``) load without torch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, fields, is_dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class Role:
    """A swappable slot of the context model.

    default_kind: the kind of a serialised spec without a ``kind`` key;
    legacy_fields: fields of the former single spec class of the role (every kind's fields in one class);
    a config written then carries them all, and a kind that lacks one ignores it when reading.
    """

    name: str
    default_kind: str
    legacy_fields: frozenset[str]


ROLES: dict[str, Role] = {
    "cell": Role("cell", "cross", frozenset({"window", "heads", "hidden_rate", "use_checkpoint"})),
    "context_net": Role("context_net", "conv", frozenset({"num_blocks", "hidden_rate", "use_checkpoint"})),
    "prior": Role("prior", "dwconv", frozenset({"depths", "hidden_rate", "use_checkpoint"})),
}

_KINDS: dict[str, dict[str, type[ComponentSpec]]] = {role: {} for role in ROLES}


class ComponentSpec(ABC):
    """Base of every kind's spec: a frozen dataclass subclass, registered with ``register_component``."""

    role: ClassVar[str] = ""
    kind: ClassVar[str] = ""

    @abstractmethod
    def build(self, dim: int) -> nn.Module:
        """The module; ``dim`` is 2M for cells and context nets, M for priors (see the module table)."""

    def label(self) -> str:
        """Short display name (``hpcm describe``)."""
        return self.kind

    def validate(self, M: int) -> None:  # noqa: N803, B027 (the paper's name; an optional check)
        """Raise ``ValueError`` when the spec cannot serve a model with M latent channels."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able ``{"kind": ..., <fields>}`` (tuples become lists)."""
        out: dict[str, Any] = {"kind": self.kind}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


def register_component(role: str, kind: str, *, replace: bool = False):
    """Class decorator: register a ``ComponentSpec`` dataclass as ``kind`` of ``role``.

    ``replace=True`` allows re-registering a kind (e.g. reloading a module); otherwise a second
    registration of the same name raises ``ValueError``.
    """
    if role not in ROLES:
        raise ValueError(f"unknown component role {role!r}; expected one of {sorted(ROLES)}")

    def decorate(cls: type[ComponentSpec]) -> type[ComponentSpec]:
        if not (isinstance(cls, type) and issubclass(cls, ComponentSpec) and is_dataclass(cls)):
            raise TypeError(f"{cls!r} must be a dataclass subclass of ComponentSpec")
        if kind in _KINDS[role] and not replace:
            raise ValueError(f"{role} kind {kind!r} is already registered")
        cls.role, cls.kind = role, kind
        _KINDS[role][kind] = cls
        return cls

    return decorate


def unregister_component(role: str, kind: str) -> None:
    """Remove ``kind`` of ``role`` (tests, experiments); unknown names are ignored."""
    _KINDS[role].pop(kind, None)


def component_kinds(role: str) -> dict[str, type[ComponentSpec]]:
    """Registered kinds of ``role`` -> their spec classes."""
    return dict(_KINDS[role])


def spec_from_dict(role: str, data: dict[str, Any]) -> ComponentSpec:
    """The spec of ``data`` = ``{"kind": ..., <fields>}`` (also the older all-fields form of the role)."""
    kw = dict(data)
    kind = kw.pop("kind", ROLES[role].default_kind)
    cls = _KINDS[role].get(kind)
    if cls is None:
        raise ValueError(f"unknown {role} kind {kind!r}; registered: {', '.join(sorted(_KINDS[role]))}")
    own = {f.name for f in fields(cls) if f.init}
    unknown = sorted(k for k in kw if k not in own and k not in ROLES[role].legacy_fields)
    if unknown:
        raise ValueError(f"unknown fields for {role} kind {kind!r}: {unknown}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in kw.items() if k in own})


def as_spec(role: str, value: Any) -> ComponentSpec:
    """``value`` (a spec of ``role`` or its dict form) as a spec."""
    if isinstance(value, ComponentSpec):
        if value.role != role:
            raise TypeError(f"expected a {role} spec, got a {value.role or 'unregistered'} spec {value!r}")
        return value
    if isinstance(value, dict):
        return spec_from_dict(role, value)
    raise TypeError(f"expected a {role} spec or dict, got {type(value).__name__}")


# --- the built-in kinds ---------------------------------------------------------------------------


@register_component("cell", "cross")
@dataclass(frozen=True)
class CrossCellSpec(ComponentSpec):
    """Official windowed ``CrossAttentionCell`` (window side, heads over 2M channels)."""

    window: int = 8
    heads: int = 32

    def build(self, dim: int) -> nn.Module:
        from hpcm.layers.attention import CrossAttentionCell

        return CrossAttentionCell(dim, dim, window_size=self.window, num_heads=self.heads)

    def label(self) -> str:
        return f"cross(w{self.window})"

    def validate(self, M: int) -> None:  # noqa: N803
        if (2 * M) % self.heads:
            raise ValueError(f"2M = {2 * M} not divisible by {self.heads} heads")


@register_component("cell", "rwkv")
@dataclass(frozen=True)
class RWKVCellSpec(ComponentSpec):
    """``RWKVContextCell`` (channel-mix hidden rate)."""

    hidden_rate: int = 4
    use_checkpoint: bool = False

    def build(self, dim: int) -> nn.Module:
        from hpcm.layers.rwkv import RWKVContextCell

        return RWKVContextCell(dim, hidden_rate=self.hidden_rate, use_checkpoint=self.use_checkpoint)

    def label(self) -> str:
        return f"RWKVCell(hr{self.hidden_rate})"


@register_component("context_net", "conv")
@dataclass(frozen=True)
class ConvNetSpec(ComponentSpec):
    """Official 1x1 convolution."""

    def build(self, dim: int) -> nn.Module:
        from torch import nn

        return nn.Conv2d(dim, dim, kernel_size=1)

    def label(self) -> str:
        return "conv1x1"


@register_component("context_net", "rwkv")
@dataclass(frozen=True)
class RWKVNetSpec(ComponentSpec):
    """``RWKVFusionNet`` (``num_blocks`` RWKV blocks)."""

    num_blocks: int = 1
    hidden_rate: int = 4
    use_checkpoint: bool = False

    def build(self, dim: int) -> nn.Module:
        from hpcm.layers.rwkv import RWKVFusionNet

        return RWKVFusionNet(
            dim, num_blocks=self.num_blocks, hidden_rate=self.hidden_rate, use_checkpoint=self.use_checkpoint
        )

    def label(self) -> str:
        return f"RWKVFusionNet({self.num_blocks})"


@register_component("prior", "dwconv")
@dataclass(frozen=True)
class DWConvPriorSpec(ComponentSpec):
    """Official DWConvRB stacks; depths: blocks in (branch_1, branch_2) before the final 3M -> 2M 1x1."""

    depths: tuple[int, int] = (2, 1)

    def __post_init__(self) -> None:
        object.__setattr__(self, "depths", tuple(int(d) for d in self.depths))

    def build(self, dim: int) -> nn.Module:
        from hpcm.layers.priors import SpatialPrior

        return SpatialPrior(3 * dim, 2 * dim, depths=self.depths)

    def label(self) -> str:
        return f"DWConvRB{self.depths}"


@register_component("prior", "rwkv")
@dataclass(frozen=True)
class RWKVPriorSpec(ComponentSpec):
    """``RWKVSpatialPrior``; with the depths of a seed-named prior, that class: (2, 1)
    ``RWKVSpatialPrior_S1_S2``, (3, 2) ``RWKVSpatialPrior_S3``."""

    depths: tuple[int, int] = (2, 1)
    hidden_rate: int = 4
    use_checkpoint: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "depths", tuple(int(d) for d in self.depths))

    def build(self, dim: int) -> nn.Module:
        from hpcm.layers.rwkv import RWKVSpatialPrior, RWKVSpatialPrior_S1_S2, RWKVSpatialPrior_S3

        # The seed-named classes are RWKVSpatialPrior with fixed depths (same parameters, same init
        # order): build them where the depths match, so seed-style isinstance checks hold (phase 4).
        named = {(2, 1): RWKVSpatialPrior_S1_S2, (3, 2): RWKVSpatialPrior_S3}.get(self.depths)
        kw = {"hidden_rate": self.hidden_rate, "use_checkpoint": self.use_checkpoint}
        if named is not None:
            return named(dim, **kw)
        return RWKVSpatialPrior(dim, depths=self.depths, **kw)

    def label(self) -> str:
        return f"RWKVPrior{self.depths}"


# --- the former one-class-per-role constructors (kept for existing callers) ------------------------


def CellSpec(kind: str = "cross", **fields_: Any) -> ComponentSpec:  # noqa: N802 (former class name)
    """The ``kind`` cell spec with ``fields_`` (fields the kind does not have are ignored, as before)."""
    return spec_from_dict("cell", {"kind": kind, **fields_})


def ContextNetSpec(kind: str = "conv", **fields_: Any) -> ComponentSpec:  # noqa: N802
    """The ``kind`` context-net spec with ``fields_`` (see ``CellSpec``)."""
    return spec_from_dict("context_net", {"kind": kind, **fields_})


def PriorSpec(kind: str = "dwconv", **fields_: Any) -> ComponentSpec:  # noqa: N802
    """The ``kind`` spatial-prior spec with ``fields_`` (see ``CellSpec``)."""
    return spec_from_dict("prior", {"kind": kind, **fields_})


def build_cell(spec: ComponentSpec, dim: int) -> nn.Module:
    """Cell for a 2M = ``dim`` channel context."""
    return as_spec("cell", spec).build(dim)


def build_context_net(spec: ComponentSpec, dim: int) -> nn.Module:
    """Context net for a 2M = ``dim`` channel context."""
    return as_spec("context_net", spec).build(dim)


def build_prior(spec: ComponentSpec, M: int) -> nn.Module:  # noqa: N803
    """Spatial prior mapping 3M -> 2M channels."""
    return as_spec("prior", spec).build(M)
