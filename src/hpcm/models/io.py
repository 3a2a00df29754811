"""Model weights on disk: safetensors + JSON metadata, official ``.pth.tar`` checkpoints, fingerprints.

- ``save_weights(model, path, metadata)`` writes ``path`` (.safetensors) and ``path.with_suffix(".json")``.
- ``load_model(spec, quality=..., device=...)`` resolves a preset name (bundled trained weights in
  ``hpcm/weights/<preset>-q<Q>.safetensors`` when shipped, else the preset's deterministic initial
  weights), a ``.safetensors`` file, or an official ``.pth.tar`` checkpoint.
- ``weights_fingerprint(model)``: sha256 over the learned tensors (derived entropy tables excluded).

Every loaded model carries ``model.weights_info`` = {preset, quality, fingerprint, trained, source, ...}.
No pickles are read except through ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import zlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hpcm import rates
from hpcm.atomic import atomic_write_bytes
from hpcm.errors import CheckpointError
from hpcm.models import bundled
from hpcm.models.protocol import is_variable_rate, model_config_dict, model_preset, weights_info

#: Quality -> λ views of the tables in ``hpcm.rates`` (hpcm.md §8.2).
MSE_LAMBDAS = dict(enumerate(rates.MSE_LAMBDAS, start=1))
MSSSIM_LAMBDAS = dict(enumerate(rates.MS_SSIM_LAMBDAS, start=1))
DEFAULT_QUALITY = 3
#: Seed of the deterministic initial weights of a preset (offset by a hash of the preset name).
INIT_SEED = 20250
FINGERPRINT_HEX = 16
WEIGHTS_DIR = bundled.WEIGHTS_DIR
FORMAT_NAME = "hpcm-weights"
FORMAT_VERSION = 1

# Buffers computed by ``model.update()`` from the other tensors: never saved, hashed or required.
_DERIVED_BUFFER = re.compile(r"(^|\.)(scale_table|quantized_cdf_[yz]|cdf_length_[yz]|offset_[yz])$")
_ADAPTIVE = re.compile(r"^adaptive_params_list\.\d+$")


def is_derived_key(key: str) -> bool:
    """True for entropy-table buffers that ``update()`` rebuilds (not part of the learned weights)."""
    return bool(_DERIVED_BUFFER.search(key))


def learned_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model.state_dict()`` without the derived entropy tables, detached on CPU."""
    return {k: v.detach().cpu() for k, v in model.state_dict().items() if not is_derived_key(k)}


def fingerprint_state(state: dict[str, torch.Tensor]) -> str:
    """Truncated (16 hex digits) sha256 over names, dtypes, shapes and bytes of ``state``, in key order."""
    h = hashlib.sha256()
    for key in sorted(state):
        if is_derived_key(key):
            continue
        t = state[key].detach().cpu().contiguous().reshape(-1)
        h.update(key.encode())
        h.update(f"|{t.dtype}|{tuple(state[key].shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:FINGERPRINT_HEX]


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB blocks): the digest recorded for shipped weights."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def weights_fingerprint(model: nn.Module) -> str:
    """Fingerprint of the model's current learned weights (see ``fingerprint_state``)."""
    return fingerprint_state(learned_state(model))


def halvable(name: str, tensor: torch.Tensor) -> bool:
    """Stored as float16 by ``save_weights(half=True)``: float32 convolution kernels (4-D) and linear
    weights (2-D ``*.weight``); not the quality gains, decays, biases or other vectors."""
    matrix = tensor.dim() == 4 or (tensor.dim() == 2 and name.endswith(".weight"))
    return tensor.dtype == torch.float32 and matrix


def save_weights(model: nn.Module, path: str | os.PathLike, metadata: dict[str, Any] | None = None,
                 *, overwrite: bool = True, half: bool = False) -> Path:
    """Write ``path`` (.safetensors) and its JSON sidecar; return ``path``.

    The JSON holds ``metadata`` (preset, quality, lambda, metric, training provenance, ...) plus the
    model config and the weights fingerprint; the same JSON is also embedded in the safetensors header.
    ``half``: store the float32 weight matrices (:func:`halvable`: convolution kernels and the Bi-RWKV
    blocks' linear weights, nearly all the bytes) as float16, rounded to 11 significant bits; biases,
    gains, bounds and other vectors stay float32. Loading turns them back into float32, and the recorded
    fingerprint is that of the loaded model.
    """
    from safetensors.torch import save as st_save

    path = Path(path)
    if path.suffix != ".safetensors":
        raise CheckpointError(f"weights path must end in .safetensors, got {path.name}")
    state = {k: v.contiguous().clone() for k, v in learned_state(model).items()}
    loaded = state  # what loading the file gives back, and therefore what its fingerprint hashes
    if half:
        state = {k: v.half() if halvable(k, v) else v for k, v in state.items()}
        loaded = {k: v.float() if v.dtype == torch.float16 else v for k, v in state.items()}
    info = weights_info(model)
    meta: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "preset": model_preset(model),
        "quality": info.get("quality"),
    }
    meta.update(metadata or {})
    meta["config"] = model_config_dict(model)
    meta["fingerprint"] = fingerprint_state(loaded)
    if half:
        meta["storage"] = "float16"
    meta.setdefault("trained", True)
    text = json.dumps(meta, indent=2, sort_keys=True)
    blob = st_save(state, metadata={"hpcm": text})
    atomic_write_bytes(path, blob, overwrite=overwrite)
    atomic_write_bytes(path.with_suffix(".json"), (text + "\n").encode(), overwrite=overwrite)
    return path


def read_weights_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Metadata of a ``.safetensors`` weights file: the JSON sidecar, else the embedded copy."""
    path = Path(path)
    sidecar = path.with_suffix(".json")
    try:
        if sidecar.is_file():
            return json.loads(sidecar.read_text())
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            text = (fh.metadata() or {}).get("hpcm")
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read metadata of {path}: {exc}") from None
    except Exception as exc:  # safetensors raises its own error type on malformed headers
        raise CheckpointError(f"{path} is not a valid safetensors file: {exc}") from None
    if not text:
        raise CheckpointError(f"{path} has no hpcm metadata (no {sidecar.name} and none embedded)")
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CheckpointError(f"{path}: malformed embedded metadata: {exc}") from None


def _known_presets() -> list[str]:
    from hpcm.models.registry import list_models

    names = list_models()
    return [n if isinstance(n, str) else getattr(n, "name", str(n)) for n in names]


def _seed_for(preset: str) -> int:
    return INIT_SEED + zlib.crc32(preset.encode()) % 100_000


def initial_model(preset: str, **overrides: Any) -> nn.Module:
    """The preset's deterministic initial (untrained) weights: same in every process and run."""
    from hpcm.models.registry import create_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_seed_for(preset))
        model = create_model(preset, **overrides)
    return model


def bundled_weights_path(preset: str, quality: int) -> Path:
    """Where the shipped trained weights of ``preset`` at ``quality`` live (may not exist)."""
    return WEIGHTS_DIR / f"{preset}-q{quality}.safetensors"


def bundled_variable_rate_path(preset: str) -> Path:
    """Where the shipped weights of a variable-rate preset live (one file, every quality; may not exist)."""
    return WEIGHTS_DIR / f"{preset}.safetensors"


def is_variable_rate_preset(preset: str) -> bool:
    """True when the registered preset codes every quality with one set of weights (gain vectors)."""
    from hpcm.models.registry import get_config

    return bool(get_config(preset).rate_lambdas)


#: Every weights file ever shipped (fingerprint, preset, quality, the commit that shipped it).
RELEASES_FILE = WEIGHTS_DIR / "RELEASES.json"


def _release_records() -> list[dict[str, Any]]:
    try:
        return list(json.loads(RELEASES_FILE.read_text())["weights"])
    except (OSError, ValueError, KeyError, TypeError):
        return []


def shipped_weights_record(fingerprint: str) -> dict[str, Any] | None:
    """The ``RELEASES.json`` entry of weights once shipped with this fingerprint (16 hex digits), or None."""
    for entry in _release_records():
        if str(entry.get("fingerprint", ""))[:FINGERPRINT_HEX] == fingerprint[:FINGERPRINT_HEX]:
            return entry
    return None


def release_label(entry: dict[str, Any]) -> str:
    """'hpcm <release> (<date>)' of a ``RELEASES.json`` entry."""
    return f"hpcm {entry.get('release') or '?'} ({entry.get('date')})"


def retired_quality_hint(preset: str, quality: float) -> str:
    """'; <preset> q<Q> was shipped with hpcm <release> ...' for fixed-rate weights that the package once
    shipped and no longer does (the last ``RELEASES.json`` entry of that preset and quality), else ''."""
    if not float(quality).is_integer():
        return ""
    found = [e for e in _release_records() if e.get("preset") == preset and e.get("quality") == int(quality)]
    if not found:
        return ""
    return (f"; {preset} q{int(quality)} was shipped with {release_label(found[-1])} and retired since: "
            "use that release, or its weights with --checkpoint")


def bundled_qualities(preset: str) -> list[int]:
    """Qualities for which trained weights of ``preset`` are shipped (in ``WEIGHTS_DIR``)."""
    from hpcm.models.bundled import qualities

    return qualities(preset, WEIGHTS_DIR)


def _build_from_config(config: dict[str, Any]) -> nn.Module:
    from hpcm.models.config import HPCMConfig
    from hpcm.models.hpcm import HPCM

    try:
        return HPCM(HPCMConfig.from_dict(config))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"invalid model config in weights metadata: {exc}") from None


def _load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` requiring the exact learned key set and shapes (derived tables excepted)."""
    expected = {k: v for k, v in model.state_dict().items() if not is_derived_key(k)}
    given = {k: v for k, v in state.items() if not is_derived_key(k)}
    _check_keys(expected, given, source, allow_missing=())
    model.load_state_dict(given, strict=False)


def _check_keys(expected: dict[str, torch.Tensor], given: dict[str, Any], source: str,
                allow_missing: tuple[re.Pattern, ...]) -> None:
    missing = [k for k in expected if k not in given and not any(p.match(k) for p in allow_missing)]
    unexpected = [k for k in given if k not in expected]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s) (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s) (e.g. {', '.join(unexpected[:3])})")
    bad_type = [k for k, v in given.items() if k in expected and not isinstance(v, torch.Tensor)]
    if bad_type:
        problems.append(f"non-tensor value(s) for {', '.join(bad_type[:3])}")
    shapes = [
        f"{k} {tuple(v.shape)} vs {tuple(expected[k].shape)}"
        for k, v in given.items()
        if k in expected and isinstance(v, torch.Tensor) and tuple(v.shape) != tuple(expected[k].shape)
    ]
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es) (e.g. {'; '.join(shapes[:2])})")
    if problems:
        raise CheckpointError(f"{source} does not fit the model: " + "; ".join(problems))


_UNSAFE_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def torch_load_error(path: str | os.PathLike, exc: BaseException) -> str:
    """One line for a failed ``torch.load(weights_only=True)``; never advises unsafe loading.

    torch's own message for a pickle that holds Python objects is several lines and suggests
    ``weights_only=False``, which would run arbitrary code from the file.
    """
    text = _ANSI.sub("", str(exc))
    if "weights_only" in text or "Weights only load failed" in text:
        found = _UNSAFE_GLOBAL.search(text)
        what = f" ({found.group(1)})" if found else ""
        return (f"cannot load checkpoint {path}: it holds pickled Python objects{what} besides tensors, and "
                "hpcm does not unpickle code; use a file that holds only the state dict or .safetensors")
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"cannot load checkpoint {path}: {type(exc).__name__}: {first[:200]}"


def strip_wrapper_prefix(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` without the ``module.`` prefix (DataParallel / DDP) when every key has it."""
    if state and all(isinstance(k, str) and k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def read_torch_state(path: str | os.PathLike) -> dict[str, Any]:
    """The state dict of a torch checkpoint (``.pth`` / ``.pth.tar`` / ``.pt``), the one torch-file reader.

    Read with ``torch.load(weights_only=True)`` (no code is unpickled); the raw dict or its ``state_dict`` /
    ``model`` / ``network`` entry; a ``module.`` prefix on every key is stripped. Values are not checked.
    """
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except Exception as exc:  # UnpicklingError, RuntimeError (zip), EOFError, ...
        raise CheckpointError(torch_load_error(path, exc)) from None
    for key in ("state_dict", "model", "network"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{path} does not contain a state dict")
    return strip_wrapper_prefix(obj)


def load_official_checkpoint(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load an official HPCM ``.pth.tar`` (raw state dict, or nested under ``"state_dict"``) into ``model``.

    Reads with :func:`read_torch_state`. Missing ``adaptive_params_list.*`` are set to ones (the
    released checkpoints predate them, hpcm.md §9.3); the entropy-table buffers (empty in released
    files) are ignored and rebuilt by ``update()``; a ``module.`` prefix (DataParallel) is stripped.
    Any other missing or unexpected key, or shape mismatch, raises :class:`CheckpointError`.
    """
    path = Path(path)
    obj = read_torch_state(path)
    state = {k: v for k, v in obj.items() if not (isinstance(k, str) and is_derived_key(k))}
    expected = {k: v for k, v in model.state_dict().items() if not is_derived_key(k)}
    _check_keys(expected, state, str(path), allow_missing=(_ADAPTIVE,))
    model.load_state_dict(state, strict=False)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if _ADAPTIVE.match(name) and name not in state:
                param.fill_(1.0)
    return model


def _finish(model: nn.Module, device: str | torch.device, info: dict[str, Any]) -> nn.Module:
    model.eval()
    model.to(device)
    if "fingerprint" not in info:  # (setdefault would hash the weights a second time)
        info["fingerprint"] = weights_fingerprint(model)
    model.weights_info = info
    return model


def load_model(spec: str | os.PathLike, *, quality: int | None = None, device: str | torch.device = "cpu",
               preset: str | None = None) -> nn.Module:
    """Load a model for coding. ``spec``: preset name, ``.safetensors`` path or official ``.pth.tar`` path.

    - preset: bundled trained weights for ``quality`` (default ``DEFAULT_QUALITY`` when any are shipped)
      or, when none are shipped, the preset's deterministic initial weights (``trained=False``);
    - ``.safetensors``: the config comes from its JSON metadata; the recorded fingerprint is checked;
    - ``.pth.tar`` / ``.pth`` / ``.pt``: official checkpoint into ``preset`` (default ``hpcm-base``).
    The model is in eval mode on ``device`` and has ``model.weights_info``.
    """
    text = str(spec)
    path = Path(text)
    if text.endswith(".safetensors"):
        return _load_safetensors(path, device, quality)
    if text.endswith((".pth.tar", ".pth", ".pt", ".tar")):
        name = preset or "hpcm-base"
        model = initial_model(name)
        load_official_checkpoint(model, path)
        info = {"preset": name, "quality": quality, "trained": True, "source": str(path), "lambda": None}
        return _finish(model, device, info)
    presets = _known_presets()
    if text not in presets:
        if path.exists():
            raise CheckpointError(f"{path}: unknown weights file type (expected .safetensors or .pth.tar)")
        raise CheckpointError(f"unknown model {text!r} (known: {', '.join(presets)})")
    if is_variable_rate_preset(text):  # one weights file; the quality is chosen per image when coding
        vr_path = bundled_variable_rate_path(text)
        if vr_path.is_file():
            model = _load_safetensors(vr_path, device, None)
            model.weights_info["source"] = f"bundled:{text}"
            return model
        quality = None
    shipped = bundled_qualities(text)
    if quality is None and shipped:
        quality = DEFAULT_QUALITY if DEFAULT_QUALITY in shipped else shipped[-1]
    if quality is not None and not 1 <= int(quality) <= 255:
        raise CheckpointError(f"quality must be in 1..255, got {quality}")
    if quality is not None and int(quality) in shipped:
        model = _load_safetensors(bundled_weights_path(text, int(quality)), device, quality)
        model.weights_info["source"] = f"bundled:{text}-q{quality}"
        return model
    if shipped:
        raise CheckpointError(f"no trained weights for {text} at quality {quality} (shipped: "
                              f"{', '.join(map(str, shipped))}{retired_quality_hint(text, quality)})")
    model = initial_model(text)
    info = {
        "preset": text,
        "quality": None if quality is None else int(quality),
        "trained": False,
        "source": f"initial:{text}(seed {_seed_for(text)})",
        "lambda": None,
    }
    return _finish(model, device, info)


def read_weights_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` weights file (on CPU); :class:`CheckpointError` if unreadable."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors' own error types for malformed files
        raise CheckpointError(f"{path} is not a valid safetensors file: {exc}") from None


def _load_safetensors(path: Path, device: str | torch.device, quality: int | None) -> nn.Module:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    meta = read_weights_metadata(path)
    state = read_weights_state(path)
    preset = meta.get("preset")
    if meta.get("config"):
        model = _build_from_config(meta["config"])
        if preset:
            model.preset = preset
    elif preset:
        model = initial_model(preset)
    else:
        raise CheckpointError(f"{path}: metadata has neither a config nor a preset name")
    _load_state_strict(model, state, str(path))
    fp = fingerprint_state(learned_state(model))
    if meta.get("fingerprint") and meta["fingerprint"] != fp:
        raise CheckpointError(f"{path}: weights do not match their recorded fingerprint (file corrupted?)")
    file_quality = meta.get("quality")
    if is_variable_rate(model):
        file_quality = quality = None  # one model for every quality: chosen per image when coding
    if quality is not None and file_quality is not None and int(file_quality) != int(quality):
        raise CheckpointError(f"{path} holds quality {file_quality}, not {quality}")
    info = {
        "preset": preset or "custom",
        "quality": file_quality if file_quality is not None else quality,
        "trained": bool(meta.get("trained", True)),
        "source": str(path),
        "lambda": meta.get("lambda"),
        "metric": meta.get("metric"),
        "fingerprint": fp,
        "training": meta.get("training"),
        "note": meta.get("note"),
    }
    return _finish(model, device, info)
