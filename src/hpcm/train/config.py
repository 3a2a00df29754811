"""``TrainConfig``: every setting of a training run, from defaults, a TOML file and command-line flags.

Precedence: dataclass defaults < ``--config FILE.toml`` < flags given on the command line. The resolved
configuration is written to ``RUN_DIR/config.toml`` (loadable again with ``--config``).
Keys in TOML use the flag names with ``_`` instead of ``-`` (``batch_size``, ``lr_milestones`` …).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hpcm._fields import unknown_fields
from hpcm.errors import HPCMError
from hpcm.train.loss import METRICS, MIN_MS_SSIM_SIDE, lambda_for


class ConfigError(HPCMError):
    """The training configuration is invalid or cannot be read."""


@dataclass
class TrainConfig:
    """Settings of one training run (see ``docs/training.md``)."""

    model: str = ""
    data: list[str] = field(default_factory=list)
    val: str | None = None
    out: str = ""
    steps: int = 1000
    time_limit: float | None = None  # seconds of wall time for this invocation; then stop as on SIGTERM
    batch_size: int = 8
    patch_size: int = 256
    quality: int | None = None
    lmbda: float | None = None
    metric: str = "mse"
    lr: float = 1e-4
    # "STEP" (multiply the lr by lr_gamma from STEP on) or "STEP:LR" (absolute lr from STEP on)
    lr_milestones: list[str] = field(default_factory=list)
    lr_gamma: float = 0.1
    lr_groups: list[str] = field(default_factory=list)  # PATTERN=FACTOR, first match wins
    freeze: list[str] = field(default_factory=list)
    train_only: list[str] = field(default_factory=list)  # freeze everything not matching these
    clip_max_norm: float = 1.0
    ema: float | None = None  # decay of an exponential moving average of the weights (hpcm.train.ema)
    val_every: int = 1000
    save_every: int = 1000
    log_every: int = 10
    max_val_images: int | None = None
    val_holdout: int = 0  # hold this many training images out of training and validate on them
    num_workers: int = 2
    seed: int = 0
    downscale_prob: float = 0.0
    downscale_min: float = 0.5
    init_from: str | None = None
    resume: bool = False
    device: str = "auto"
    amp: str | None = None  # None or "bf16"
    grad_checkpoint: bool = False
    channels_last: bool = False  # NHWC activations and kernels (CPU oneDNN: 1.14x the bf16 step of small-vr)
    tensorboard: bool = False
    ddp_find_unused: bool = False
    progress: bool = True

    @property
    def resolved_lmbda(self) -> float | None:
        """λ from ``lmbda`` or from the quality table of ``metric``; None for variable-rate training
        (neither given: every crop draws its own quality, λ comes from the model's anchors)."""
        if self.lmbda is not None:
            return float(self.lmbda)
        if self.quality is None:
            return None
        try:
            return lambda_for(self.quality, self.metric)
        except ValueError as exc:
            raise ConfigError(f"--quality: {exc} (a fixed-rate model uses HPCM's λ table)") from None

    def validate(self) -> None:
        """Raise :class:`ConfigError` on missing or inconsistent settings."""
        if not self.model:
            raise ConfigError("--model is required")
        if not self.data:
            raise ConfigError("--data is required (one or more image folders)")
        if not self.out:
            raise ConfigError("--out is required (the run folder)")
        if self.metric not in METRICS:
            raise ConfigError(f"--metric must be one of {METRICS}, got {self.metric!r}")
        if self.quality is not None and self.lmbda is not None:
            raise ConfigError("give one of --quality and --lmbda, not both (neither: variable-rate model)")
        if self.quality is not None and not self.quality >= 1:  # the upper end is the model's (trainer)
            raise ConfigError(f"--quality must be at least 1, got {self.quality}")
        if self.lmbda is not None and not (self.lmbda > 0 and math.isfinite(self.lmbda)):
            raise ConfigError(f"--lmbda must be positive, got {self.lmbda}")
        for name in ("steps", "batch_size", "patch_size", "val_every", "save_every", "log_every"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive")
        if self.time_limit is not None and not (self.time_limit > 0 and math.isfinite(self.time_limit)):
            raise ConfigError(f"--time-limit must be a positive number of seconds, got {self.time_limit}")
        if self.num_workers < 0:
            raise ConfigError("--num-workers must be >= 0")
        if self.val_holdout < 0:
            raise ConfigError("--val-holdout must be >= 0")
        if self.val_holdout and self.val:
            raise ConfigError("give one of --val and --val-holdout")
        if self.metric == "ms-ssim" and self.patch_size < MIN_MS_SSIM_SIDE:
            raise ConfigError(f"MS-SSIM training needs --patch-size >= {MIN_MS_SSIM_SIDE}")
        if self.amp not in (None, "bf16"):
            raise ConfigError(f"--amp must be bf16 (or absent), got {self.amp!r}")
        if self.ema is not None and not 0.0 < self.ema < 1.0:
            raise ConfigError(f"--ema must be a decay between 0 and 1 (e.g. 0.999), got {self.ema}")
        if not self.lr > 0 or self.clip_max_norm <= 0:
            raise ConfigError("--lr and --clip-max-norm must be positive")
        self.milestones()  # parse check
        from hpcm.models.migrate import parse_lr_rules

        try:
            parse_lr_rules(self.lr_groups)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    def milestones(self) -> list[tuple[int, float | None]]:
        """Sorted ``(step, absolute_lr or None)`` pairs parsed from ``lr_milestones``."""
        out = []
        for m in self.lr_milestones:
            text = str(m)
            step_s, sep, lr_s = text.partition(":")
            try:
                out.append((int(step_s), float(lr_s) if sep else None))
            except ValueError:
                raise ConfigError(f"lr milestone {text!r} is not STEP or STEP:LR") from None
        return sorted(out, key=lambda t: t[0])

    def lr_at(self, step: int) -> float:
        """Base learning rate for the update made at ``step`` (0-based); a pure function of the step."""
        lr = self.lr
        for at, value in self.milestones():
            if step >= at:
                lr = value if value is not None else lr * self.lr_gamma
        return lr

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON/TOML friendly)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a dict; unknown keys raise :class:`ConfigError`."""
        unknown = unknown_fields(cls, data)
        if unknown:
            raise ConfigError(f"unknown training settings: {unknown}")
        cfg = cls()
        cfg.update(data)
        return cfg

    def update(self, data: dict[str, Any]) -> None:
        """Overwrite the given settings (``None`` values are ignored)."""
        for k, v in data.items():
            if v is None:
                continue
            if k in ("data", "lr_milestones", "lr_groups", "freeze", "train_only"):
                v = [v] if isinstance(v, str | int) else list(v)
                v = [str(x) for x in v]
            setattr(self, k, v)


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML config (a ``[train]`` table or top-level keys); needs Python >= 3.11 (``tomllib``)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        raise ConfigError("TOML config files need Python >= 3.11 (tomllib)") from None
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML in {path}: {exc}") from None
    return data.get("train", data)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def dumps_toml(data: dict[str, Any], table: str = "train") -> str:
    """Flat dict → TOML text under ``[table]``; ``None`` values are written as comments."""
    lines = [f"[{table}]"]
    for k, v in data.items():
        lines.append(f"# {k} = (unset)" if v is None else f"{k} = {_toml_value(v)}")
    return "\n".join(lines) + "\n"
