"""Training checkpoints: one safetensors file holding weights, optimizer state and RNG state.

Layout of ``checkpoint_*.safetensors`` (tensors):

- ``model/<state-dict key>``: every parameter and buffer of the (unwrapped) model;
- ``optim/<param index>/<state key>``: optimizer state tensors (Adam: step, exp_avg, exp_avg_sq);
- ``rng/torch`` (CPU generator state, uint8), ``rng/cuda/<i>`` when CUDA is initialised;
- ``ema/<parameter name>``: the weight average of a run trained with ``--ema`` (:mod:`hpcm.train.ema`).

Header metadata (strings): ``format`` = ``hpcm-train-checkpoint``, ``version``, ``meta`` (JSON: preset, model
config, λ, metric, data, step, git commit, best validation loss, counters …) and ``optim`` (JSON: parameter
groups and the non-tensor optimizer state). The learning-rate schedule is a pure function of the step, so
it needs no state of its own. Files are written to a temporary name, fsync'ed and ``os.replace``'d.
A copy of ``meta`` is written next to the file as ``<name>.json`` for people.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open
from safetensors.torch import save as st_save
from torch import nn

from hpcm.atomic import atomic_write_bytes
from hpcm.errors import CheckpointError

FORMAT = "hpcm-train-checkpoint"
VERSION = "1"


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, replacing an older file (``hpcm.atomic.atomic_write_bytes``)."""
    atomic_write_bytes(path, data, overwrite=True)


def _cpu(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu").contiguous().clone()


def _optimizer_parts(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, state in sd["state"].items():
        for k, v in state.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim/{idx}/{k}"] = _cpu(v)
            else:
                scalars.setdefault(str(idx), {})[k] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    meta: dict[str, Any],
    extra: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write a training checkpoint atomically (see the module docstring); returns its path. ``extra``:
    further tensors under their own prefix (the ``ema/`` weight average)."""
    path = Path(path)
    tensors = {f"model/{k}": _cpu(v) for k, v in model.state_dict().items()}
    tensors.update(extra or {})
    optim_json: dict = {}
    if optimizer is not None:
        opt_tensors, optim_json = _optimizer_parts(optimizer)
        tensors.update(opt_tensors)
    tensors["rng/torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda/{i}"] = s
    header = {
        "format": FORMAT,
        "version": VERSION,
        "meta": json.dumps(meta, sort_keys=True),
        "optim": json.dumps(optim_json),
    }
    atomic_write(path, st_save(tensors, metadata=header))
    atomic_write(path.with_suffix(".json"), (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode())
    return path


def is_training_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a safetensors file written by :func:`save_checkpoint`."""
    try:
        with safe_open(str(path), "pt") as fh:
            return (fh.metadata() or {}).get("format") == FORMAT
    except (OSError, SafetensorError):
        return False


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict]:
    """``(tensors, meta, optim_json)`` of a training checkpoint; :class:`CheckpointError` if unreadable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), "pt") as fh:
            header = fh.metadata() or {}
        if header.get("format") != FORMAT:
            raise CheckpointError(f"{path} is not an hpcm training checkpoint")
        if header.get("version") != VERSION:
            raise CheckpointError(f"{path}: unsupported checkpoint version {header.get('version')!r}")
        tensors = load_file(str(path))
        return tensors, json.loads(header["meta"]), json.loads(header.get("optim", "{}"))
    except (OSError, SafetensorError, json.JSONDecodeError, KeyError) as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from None


def model_state(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ``model/`` entries of a checkpoint, with the prefix removed."""
    return {k[len("model/") :]: v for k, v in tensors.items() if k.startswith("model/")}


def restore_optimizer(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], optim_json: dict
) -> None:
    """Load the optimizer state saved by :func:`save_checkpoint` (the groups must match in size)."""
    groups = optim_json.get("param_groups")
    if groups is None:
        raise CheckpointError("checkpoint has no optimizer state")
    state: dict[int, dict[str, Any]] = {}
    for k, v in tensors.items():
        if k.startswith("optim/"):
            _, idx, name = k.split("/", 2)
            state.setdefault(int(idx), {})[name] = v
    for idx, extra in optim_json.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(extra)
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError) as exc:
        raise CheckpointError(f"optimizer state does not fit this run: {exc}") from None


def restore_rng(tensors: dict[str, torch.Tensor]) -> None:
    """Restore the torch CPU (and CUDA, when present in both) generator states."""
    if "rng/torch" in tensors:
        torch.set_rng_state(tensors["rng/torch"])
    cuda = [tensors[k] for k in sorted(t for t in tensors if t.startswith("rng/cuda/"))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
