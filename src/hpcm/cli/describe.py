"""``hpcm models`` and ``hpcm describe MODEL``: what a preset is made of."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch loads only when a command runs, not to build the parser
    from torch import nn

#: Top-level modules of an HPCM model, in the order they are described.
COMPONENTS = (
    "g_a",
    "g_s",
    "h_a",
    "h_s",
    "y_spatial_prior_adaptor_list_s1",
    "y_spatial_prior_adaptor_list_s2",
    "y_spatial_prior_adaptor_list_s3",
    "y_spatial_prior_s1_s2",
    "y_spatial_prior_s3",
    "attn_s1",
    "attn_s2",
    "attn_s3",
    "context_net",
    "memory",
)
#: Components that the phases swap, as rows of the phase table.
PHASE_ROWS = ("attn_s1", "attn_s2", "attn_s3", "context_net", "y_spatial_prior_s1_s2", "y_spatial_prior_s3")


def count_parameters(module: nn.Module | None) -> int:
    """Number of parameters of ``module`` (0 for None)."""
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def component_type(module: nn.Module | None) -> str:
    """Type name of a component; for a ModuleList, the distinct types of its items."""
    from torch import nn

    if module is None:
        return "-"
    if isinstance(module, nn.ModuleList):
        kinds = sorted({type(m).__name__ for m in module})
        return f"{len(module)}× {'/'.join(kinds)}"
    return type(module).__name__


def describe(name: str) -> str:
    """Text description of preset ``name``: components, parameters, and the phase table."""
    from hpcm.models.phases import PHASES, apply_phase, phase_of
    from hpcm.models.registry import baseline_name, create_model, get_config

    model = create_model(name)
    lines = [f"{name}: M={model.M}, N={model.N}, {count_parameters(model):,} parameters"]
    width = max(len(c) for c in COMPONENTS)
    lines.append(f"  {'component':<{width}}  {'type':<34} {'parameters':>12}")
    for comp in COMPONENTS:
        module = getattr(model, comp, None)
        if comp == "memory" and module is None:
            continue
        lines.append(f"  {comp:<{width}}  {component_type(module):<34} {count_parameters(module):>12,}")

    cfg = get_config(name)
    baseline = replace_memory(get_config(baseline_name(name)))
    chosen = phase_of(cfg, baseline)
    columns = [(p + (" ×" if p == chosen else ""), apply_phase(baseline, p)) for p in PHASES]
    if chosen is None:  # a custom mix: its own column, labelled by its component kinds
        columns.append(("this model", cfg))
    lines.append("")
    lines.append(f"  phase table (× = this model{'' if chosen else '; a custom mix, no column matches'}):")
    lines.append(f"  {'component':<{width}}" + "".join(f"  {title:<22}" for title, _ in columns))
    for comp in PHASE_ROWS:
        lines.append(f"  {comp:<{width}}" + "".join(f"  {_spec_of(c, comp).label():<22}" for _, c in columns))
    if cfg.memory is not None:
        lines.append(f"  + multi-reference memory bank at {','.join(cfg.memory.enabled_scales)}")
    return "\n".join(lines)


def replace_memory(cfg):
    """``cfg`` without its memory bank (the phase table is about the context components)."""
    from dataclasses import replace

    return replace(cfg, memory=None)


def _spec_of(cfg, comp: str):
    """The component spec (``hpcm.models.components``) behind the top-level module ``comp``."""
    if comp.startswith("attn_s"):
        return cfg.cells[int(comp[-1]) - 1]
    if comp == "context_net":
        return cfg.context_nets[0]
    return cfg.prior_s12 if comp.endswith("s1_s2") else cfg.prior_s3


def _cmd_describe(args: argparse.Namespace) -> int:
    from hpcm.errors import HPCMError
    from hpcm.models.registry import list_models

    for name in args.model:
        if name not in list_models():
            raise HPCMError(f"unknown model {name!r}; see 'hpcm models'")
        print(describe(name))
        print()
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    import textwrap

    from hpcm.models.bundled import DEFAULT_MODEL, variable_rate_shipped
    from hpcm.models.bundled import notes as bundled_notes
    from hpcm.models.bundled import qualities as bundled_qualities
    from hpcm.models.registry import list_models

    models = list_models()
    width = max(len(n) for n in models)
    for name, desc in models.items():
        shipped = bundled_qualities(name)
        weights = f" [trained weights: quality {', '.join(map(str, shipped))}]" if shipped else ""
        if variable_rate_shipped(name):
            weights = " [trained weights: one file, every quality]"
        if name == DEFAULT_MODEL:
            weights += " (the default model of compress/decompress)"
        print(f"{name:<{width}}  {desc}{weights}")
        for note in bundled_notes(name):  # the full note, said here once (codec commands say a short line)
            print(textwrap.fill(f"weights note: {note}", width=100, initial_indent="  ",
                                subsequent_indent="    "))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("describe", help="components, parameter counts and phase table of a preset")
    p.add_argument("model", nargs="+", help="registered preset name(s), see 'hpcm models'")
    p.set_defaults(func=_cmd_describe, fast_exit=True)
    p = sub.add_parser("models", help="list the registered presets (and which ship trained weights)")
    p.set_defaults(func=_cmd_models, fast_exit=True)
