"""The training loop behind ``hpcm train``: rate–distortion optimisation of any registered variant.

One process or many (``torchrun`` → DistributedDataParallel, see :mod:`hpcm.train.distributed`). The data
stream (:mod:`hpcm.train.data`), the learning rate (:meth:`TrainConfig.lr_at`) and the model's training
noise (the torch generator is re-seeded from ``(seed, step, rank)`` before every step) are all functions of
the step, so ``--resume`` continues bit-exactly. Only rank 0 writes files.
"""

from __future__ import annotations

import importlib
import json
import math
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from hpcm.errors import CheckpointError
from hpcm.models.io import is_derived_key
from hpcm.models.migrate import MigrationReport, freeze, freeze_except, migrate, param_groups, parse_lr_rules
from hpcm.models.protocol import model_config_dict, size_multiple
from hpcm.train import distributed as D
from hpcm.train.amp import cpu_bf16_is_emulated, prepare_bf16
from hpcm.train.checkpoint import (
    is_training_checkpoint,
    model_state,
    read_checkpoint,
    restore_optimizer,
    restore_rng,
    save_checkpoint,
)
from hpcm.train.config import ConfigError, TrainConfig, dumps_toml
from hpcm.train.data import (
    PatchDataset,
    StepBatchSampler,
    ValidationImages,
    check_images,
    find_images,
    mix_seed,
    pad_to_multiple,
)
from hpcm.train.ema import PREFIX as EMA_PREFIX
from hpcm.train.ema import WeightAverage
from hpcm.train.loss import RateDistortionLoss, bits_per_pixel, psnr_from_mse, rd_loss

LAST = "checkpoint_last.safetensors"
BEST = "checkpoint_best.safetensors"
METRICS_LOG = "metrics.jsonl"


@dataclass
class TrainResult:
    """Outcome of :func:`train`."""

    step: int
    interrupted: bool  # stopped before ``steps``: by a signal or by ``--time-limit`` (see ``stop_reason``)
    skipped_steps: int
    best_val_loss: float | None
    run_dir: Path
    last_train: dict[str, float] = field(default_factory=dict)
    last_val: dict[str, float] = field(default_factory=dict)
    stop_reason: str | None = None  # "signal", "time-limit", or None when ``steps`` was reached


# ----------------------------------------------------------------------------------------------- model


def build_model(name: str) -> nn.Module:
    """A registered preset (``hpcm.create_model``) or ``package.module:factory`` (called without args)."""
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"cannot import model factory {name!r}: {exc}") from None
        return factory()
    from hpcm.models.registry import create_model

    try:
        return create_model(name)
    except KeyError as exc:
        raise ConfigError(f"unknown model {name!r}: {exc}") from None


def load_source_state(path: str | Path) -> dict[str, torch.Tensor]:
    """Weights to start from: a training checkpoint, a ``.safetensors`` weights file, or a torch checkpoint
    (``.pth``/``.pth.tar``/``.pt``, ``weights_only=True``; its ``state_dict``/``model`` entry if present)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"--init-from: {path} does not exist")
    if is_training_checkpoint(path):
        return model_state(read_checkpoint(path)[0])
    from hpcm.models.io import read_torch_state, read_weights_state

    if path.suffix == ".safetensors":
        return read_weights_state(path)

    obj = read_torch_state(path)
    if not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} holds no state dict of tensors")
    return obj


def enable_grad_checkpointing(model: nn.Module) -> list[str]:
    """Set ``use_checkpoint = True`` on every submodule that has that attribute; returns their names."""
    names = []
    for name, m in model.named_modules():
        if isinstance(getattr(m, "use_checkpoint", None), bool):
            m.use_checkpoint = True
            names.append(name)
    return names


# ------------------------------------------------------------------------------------------ evaluation


@torch.no_grad()
def evaluate(
    model: nn.Module,
    images: ValidationImages,
    criterion: RateDistortionLoss,
    *,
    device: torch.device,
    amp: bool = False,
    quality: float | None = None,
    info: D.DistInfo | None = None,
) -> dict[str, float]:
    """Mean loss, bpp (y, z), MSE, 8-bit PSNR (and MS-SSIM) over full images padded to ``size_multiple``.

    bpp is the likelihood estimate of the padded latents divided by the *unpadded* pixel count.
    ``quality``: for variable-rate models (λ then comes from the model's anchors). ``info`` (distributed
    runs): ``images`` is this rank's shard and the means are over every rank's images.
    """
    from pytorch_msssim import ms_ssim

    from hpcm.eval.metrics import psnr, to_uint8

    multiple = size_multiple(model)
    lmbda = criterion.lmbda
    kwargs = {}
    if quality is not None:
        kwargs["quality"] = quality
        lmbda = float(model.quality_gains.lmbda(torch.tensor([float(quality)])))
    was_training = model.training
    model.eval()
    totals: dict[str, float] = {}
    try:
        for _, x in images:
            x = x.to(device)
            h, w = x.shape[-2:]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                out = model(pad_to_multiple(x, multiple), training=False, **kwargs)
            x_hat = out["x_hat"].float()[..., :h, :w].clamp(0, 1)
            terms = {k: float(v) for k, v in bits_per_pixel(out["likelihoods"], h * w).items()}
            terms["bpp"] = sum(terms.values())
            terms["mse"] = float(torch.mean((x_hat - x) ** 2))
            terms["psnr"] = psnr(to_uint8(x), to_uint8(x_hat))
            if criterion.metric == "ms-ssim":
                terms["ms_ssim"] = float(ms_ssim(x_hat, x, data_range=1.0)) if min(h, w) > 160 else math.nan
                terms["loss"] = rd_loss(lmbda, terms["bpp"], terms["ms_ssim"], criterion.metric)
            else:
                terms["loss"] = rd_loss(lmbda, terms["bpp"], terms["mse"])
            for k, v in terms.items():
                totals[k] = totals.get(k, 0.0) + v
    finally:
        model.train(was_training)
    count = len(images)
    if info is not None and info.enabled:
        totals, count = _sum_over_ranks(totals, count)
    n = max(1, count)
    return {k: v / n for k, v in totals.items()} | {"images": count}


def _sum_over_ranks(totals: dict[str, float], count: int) -> tuple[dict[str, float], int]:
    """Per-key sums and image counts of every rank (a rank with no images contributes nothing)."""
    import torch.distributed as dist

    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, (totals, count))
    out: dict[str, float] = {}
    for part, _ in gathered:
        for k, v in part.items():
            out[k] = out.get(k, 0.0) + v
    return out, sum(c for _, c in gathered)


# ------------------------------------------------------------------------------------------- utilities


def git_commit() -> str | None:
    """Commit of the hpcm source tree, if it is a git checkout; else ``$HPCM_GIT_COMMIT`` (a copy without
    ``.git``, such as a lent GPU machine's, where ``scripts/gpu_train.sh`` sets it)."""
    import os

    fallback = os.environ.get("HPCM_GIT_COMMIT") or None
    try:
        res = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return fallback
    return (res.stdout.strip() or fallback) if res.returncode == 0 else fallback


class StopFlag:
    """Set by SIGINT / SIGTERM (main thread only); a second SIGINT aborts at once."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


class MetricsLog:
    """Append-only JSONL log (rank 0); on resume, entries after the resumed step are dropped."""

    def __init__(self, path: Path, enabled: bool, resume_step: int | None) -> None:
        self.path = path
        self.enabled = enabled
        if enabled and resume_step is not None and path.exists():
            kept = [ln for ln in path.read_text().splitlines() if ln.strip() and _step_of(ln) <= resume_step]
            path.write_text("".join(ln + "\n" for ln in kept))

    def write(self, entry: dict[str, Any]) -> None:
        if self.enabled:
            with self.path.open("a") as fh:
                fh.write(json.dumps(entry, sort_keys=True) + "\n")


def _step_of(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (json.JSONDecodeError, TypeError, ValueError):
        return 0


def _tensorboard(run_dir: Path, enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        print("hpcm train: --tensorboard ignored (tensorboard is not installed)", file=sys.stderr)
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


_now = time.monotonic  # the clock of --time-limit (tests replace it)


def _worker_init(_: int) -> None:
    """A data worker uses one thread and ignores SIGINT / SIGTERM: a stop signal sent to the whole process
    group (Ctrl-C, ``torchrun``, a batch scheduler) then reaches the training process, which finishes its
    step and saves, instead of killing the workers under it. Workers still end with the loader, or through
    their parent watchdog if the training process dies."""
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


# ---------------------------------------------------------------------------------------------- train


def progress_line(step: int, steps: int, metrics: dict[str, float], steps_per_s: float) -> str:
    """One log line for runs without a progress bar: step, rate, loss, bpp, PSNR and ETA."""
    eta = (steps - step) / steps_per_s if steps_per_s > 0 else math.nan
    eta_text = ("—" if not math.isfinite(eta)
                else f"{int(eta // 3600)}:{int(eta % 3600 // 60):02d}:{int(eta % 60):02d}")
    return (f"hpcm train: step {step}/{steps}, {metrics.get('images_per_s', math.nan):.1f} img/s, "
            f"loss {metrics.get('loss', math.nan):.4g}, bpp {metrics.get('bpp', math.nan):.4f}, "
            f"PSNR {metrics.get('psnr', math.nan):.2f} dB, ETA {eta_text}")


def train(
    cfg: TrainConfig,
    *,
    model: nn.Module | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Run (or resume) training as configured. ``model`` overrides ``cfg.model`` (its name is still
    recorded); ``on_step(step, metrics)`` is called after every optimizer step (tests, notebooks)."""
    cfg.validate()
    info = D.setup(cfg.device)
    try:
        return Trainer(cfg, info, model, on_step).run()
    finally:
        D.teardown(info)


class Trainer:
    """One run of :func:`train`, in pieces that can be read and called alone.

    :meth:`setup` runs the pieces in their fixed order (the order matters for bit-exact resume: every one
    that draws random numbers or restores the RNG must run where it always has):

    1. :meth:`build_model` — seed, build, check the patch size, choose λ / the quality and the loss;
    2. :meth:`load_weights` — ``--resume`` (weights, counters; the optimizer state waits for step 4) or
       ``--init-from``;
    3. :meth:`prepare_model` — gradient checkpointing, freezing, bf16 likelihoods, device, train mode;
    4. :meth:`build_optimizer` — Adam over the parameter groups, the resumed optimizer and RNG state, DDP;
       :meth:`start_average` — the ``--ema`` weight average (resumed, or from the current weights);
    5. :meth:`setup_data` — training stream (a function of the step) and validation images;
    6. :meth:`start_logs` — checkpoint metadata, ``config.toml``, metrics log, TensorBoard.

    Then :meth:`run` loops :meth:`train_step` (one optimizer step; the learning rate and the noise seed
    are functions of the step), :meth:`log_train`, :meth:`validate` and :meth:`save`. The checkpoint
    format is :mod:`hpcm.train.checkpoint`'s.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        info: D.DistInfo,
        model: nn.Module | None = None,
        on_step: Callable[[int, dict[str, float]], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.info = info
        self.device = info.device
        self.model = model
        self.on_step = on_step
        self.run_dir = Path(cfg.out)
        self.last_path = self.run_dir / LAST
        # counters (a resumed run starts from the checkpoint's)
        self.step = 0
        self.skipped = 0
        self.best_val: float | None = None
        self.prior_seconds = 0.0  # training wall time of earlier stretches of this run (provenance)
        self.run_t0 = time.perf_counter()
        self.invocation_t0 = _now()  # --time-limit counts from here: setup is part of this invocation
        self.migration: MigrationReport | None = None
        self._resumed: tuple[dict[str, torch.Tensor], dict] | None = None
        self._resumed_ema: tuple[dict[str, torch.Tensor], dict[str, Any] | None] | None = None
        self.ema: WeightAverage | None = None
        self.use_amp = cfg.amp == "bf16"
        self.tb: Any = None

    # ---- setup -------------------------------------------------------------------------------------------

    def setup(self) -> Trainer:
        """Every piece of the run before the first step, in order (see the class docstring)."""
        self.check_run_dir()
        self.build_model()
        self.load_weights()
        self.prepare_model()
        self.build_optimizer()
        self.start_average()
        self.setup_data()
        self.start_logs()
        return self

    def check_run_dir(self) -> None:
        """Create the run folder; ``--resume`` needs its last checkpoint, a fresh run an unused folder."""
        if self.info.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.cfg.resume and not self.last_path.exists():
            raise CheckpointError(f"--resume: no {LAST} in {self.run_dir}")
        if not self.cfg.resume and self.last_path.exists():
            raise ConfigError(f"{self.run_dir} already holds a run ({LAST}); use --resume or another --out")

    def build_model(self) -> None:
        """Seed torch, build the model (unless given), check the patch size, choose λ and the loss."""
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        if self.model is None:
            self.model = build_model(cfg.model)
        multiple = size_multiple(self.model)
        if cfg.patch_size % multiple:
            raise ConfigError(f"--patch-size {cfg.patch_size} is not a multiple of the model's {multiple}")
        gains = getattr(self.model, "quality_gains", None)
        if gains is not None and cfg.quality is not None:
            lo, hi = gains.quality_range
            if not lo <= cfg.quality <= hi:
                raise ConfigError(f"--quality must be {lo:g}..{hi:g} for {cfg.model}, got {cfg.quality}")
        lmbda = cfg.resolved_lmbda if gains is None else None
        if gains is None and lmbda is None:
            raise ConfigError(f"give --quality or --lmbda ({cfg.model} is not a variable-rate model)")
        if gains is not None and cfg.lmbda is not None:
            raise ConfigError(
                f"{cfg.model} is variable-rate: give --quality to train one quality, or neither"
            )
        self.gains = gains
        self.fixed_quality = float(cfg.quality) if gains is not None and cfg.quality is not None else None
        self.lmbda = None if gains is not None else lmbda  # variable rate: per crop, from the model's anchors
        self.criterion = RateDistortionLoss(self.lmbda, cfg.metric)

    def load_weights(self) -> None:
        """Weights to start from: ``--resume`` (the run's last checkpoint) > ``--init-from`` > fresh."""
        cfg, model = self.cfg, self.model
        if cfg.resume:
            tensors, meta, optim_json = read_checkpoint(self.last_path)
            _check_resumable(cfg, meta, self.info.world_size)
            if not cfg.init_from:  # keep the run's origin in its provenance across resumes
                cfg.init_from = meta.get("train_config", {}).get("init_from")
            rep = migrate(model_state(tensors), model)
            if any(not is_derived_key(k) for k in rep.initialised):
                raise CheckpointError(f"{self.last_path} does not fit model {cfg.model!r}:\n{rep}")
            self.step, self.skipped = int(meta["step"]), int(meta["skipped_steps"])
            self.best_val = meta["best_val_loss"]
            self.prior_seconds = float(meta.get("train_seconds") or 0.0)
            self._resumed = (tensors, optim_json)
            averages = {k: v for k, v in tensors.items() if k.startswith(EMA_PREFIX)}
            self._resumed_ema = (averages, meta.get("ema"))
        elif cfg.init_from:
            self.migration = migrate(load_source_state(cfg.init_from), model)
            if self.info.is_main:
                text = str(self.migration)
                print(self.migration.summary() if len(text) > 4000 else text, file=sys.stderr)
            if not self.migration.copied:
                raise CheckpointError(f"--init-from {cfg.init_from}: no tensor matches model {cfg.model!r}")

    def prepare_model(self) -> None:
        """Gradient checkpointing, frozen parameters, float32 likelihoods under bf16; device, train mode."""
        cfg, model = self.cfg, self.model
        checkpointed = enable_grad_checkpointing(model) if cfg.grad_checkpoint else []
        if cfg.grad_checkpoint and not checkpointed and self.info.is_main:
            print("hpcm train: --grad-checkpoint: no module of this model has use_checkpoint",
                  file=sys.stderr)
        if cfg.train_only:
            freeze_except(model, cfg.train_only)
        if cfg.freeze:
            freeze(model, cfg.freeze)
        if self.use_amp:
            prepare_bf16(model)  # networks in bf16 autocast; rate terms and image convs in float32
            if self.device.type == "cpu" and self.info.is_main and cpu_bf16_is_emulated():
                print("hpcm train: warning: this CPU has no native bf16 (AVX512-BF16/AMX); --amp bf16 is "
                      "emulated and far slower than float32 here (measured x0.09 on an AVX2 EPYC)",
                      file=sys.stderr)
        model.to(self.device).train()
        if cfg.channels_last:  # parameters keep their identity (optimizer and DDP built after this)
            model.to(memory_format=torch.channels_last)

    def build_optimizer(self) -> None:
        """Adam over the parameter groups (``--lr-groups``), the resumed optimizer and RNG state, and the
        DDP wrapper when distributed. The learning rate itself is set per step (:meth:`set_lr`)."""
        cfg, model = self.cfg, self.model
        groups = param_groups(model, cfg.lr, parse_lr_rules(cfg.lr_groups))
        if not groups:
            raise ConfigError("every parameter is frozen: nothing to train")
        for g in groups:
            g.pop("param_names")  # keep the optimizer state format independent of the torch version
        self.optimizer = torch.optim.Adam(groups, lr=cfg.lr)
        if self._resumed is not None:
            restore_optimizer(self.optimizer, *self._resumed)
            restore_rng(self._resumed[0])
            self._resumed = None
        self.trainable = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.net: nn.Module = model
        if self.info.enabled:
            self.net = DistributedDataParallel(
                model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=cfg.ddp_find_unused,
            )

    def start_average(self) -> None:
        """``--ema DECAY``: the weight average, restored from the resumed checkpoint when it has one, else
        started at the current weights (a run may take up ``--ema`` when resumed)."""
        resumed, self._resumed_ema = self._resumed_ema, None
        if self.cfg.ema is None:
            return
        self.ema = WeightAverage(self.model, self.cfg.ema)
        if resumed and resumed[0]:
            try:
                self.ema.load(resumed[0], int((resumed[1] or {}).get("updates", 0)))
            except KeyError as exc:
                raise CheckpointError(f"{self.last_path}: {exc.args[0]}") from None
        elif self.cfg.resume and self.info.is_main:
            print(f"hpcm train: --ema {self.cfg.ema:g}: the checkpoint has no weight average; it starts at "
                  f"step {self.step}", file=sys.stderr)

    def setup_data(self) -> None:
        """Training crops (a function of the step, from the current step on) and the validation images
        (``--val``, else the ``--val-holdout`` images; rank 0 only)."""
        cfg, info = self.cfg, self.info
        paths = find_images(cfg.data)
        check_images(paths)
        paths, held_out = split_holdout(paths, cfg.val_holdout)
        self.num_train_images = len(paths)
        dataset = PatchDataset(
            paths, cfg.patch_size, downscale_prob=cfg.downscale_prob, downscale_min=cfg.downscale_min
        )
        sampler = StepBatchSampler(
            len(paths),
            cfg.batch_size,
            seed=cfg.seed,
            num_steps=cfg.steps,
            start_step=self.step,
            rank=info.rank,
            world_size=info.world_size,
        )
        self.loader = DataLoader(
            dataset,
            batch_sampler=sampler,
            num_workers=cfg.num_workers,
            pin_memory=self.device.type == "cuda",
            worker_init_fn=_worker_init if cfg.num_workers else None,
        )
        self.val_images: ValidationImages | None = None  # this rank's share of the validation images
        if cfg.val or held_out:
            self.val_images = ValidationImages(cfg.val or held_out, cfg.max_val_images).shard(
                info.rank, info.world_size)

    def start_logs(self) -> None:
        """The metadata every checkpoint carries, ``config.toml`` (and ``init_migration.json``), the metrics
        log (cut back to the resumed step) and TensorBoard; starts the wall-time clock."""
        cfg, info, gains = self.cfg, self.info, self.gains
        self.meta_base = {
            "preset": cfg.model,
            "model_config": model_config_dict(self.model),
            "lmbda": self.lmbda,
            "quality": cfg.quality,
            "rate_lambdas": list(gains.log_lambdas.exp().tolist()) if gains is not None else None,
            "metric": cfg.metric,
            "data": [str(Path(d).resolve()) for d in cfg.data],
            "num_train_images": self.num_train_images,
            "world_size": info.world_size,
            "git_commit": git_commit(),
            "torch": torch.__version__,
            "machine": machine_summary(self.device, info.world_size),
            "train_config": cfg.to_dict(),
        }
        if info.is_main:
            (self.run_dir / "config.toml").write_text(dumps_toml(cfg.to_dict()))
            if self.migration is not None:
                (self.run_dir / "init_migration.json").write_text(
                    json.dumps(self.migration.to_dict(), indent=1) + "\n"
                )
        self.log = MetricsLog(self.run_dir / METRICS_LOG, info.is_main, self.step if cfg.resume else None)
        self.tb = _tensorboard(self.run_dir, cfg.tensorboard and info.is_main)
        self.run_t0 = time.perf_counter()

    # ---- one step ----------------------------------------------------------------------------------------

    def set_lr(self, step: int) -> float:
        """Learning rate of ``step`` (``TrainConfig.lr_at``) on every group, times its ``lr_factor``."""
        lr = self.cfg.lr_at(step)
        for g in self.optimizer.param_groups:
            g["lr"] = lr * g["lr_factor"]
        return lr

    def train_step(self, batch: torch.Tensor) -> dict[str, float]:
        """One optimizer step on ``batch`` (B, 3, P, P) at ``self.step``; returns the loss terms.

        The noise seed is a function of (seed, step, rank), so a resumed run draws the same numbers. A step
        whose gradient norm is not finite is skipped (counted in ``self.skipped``). Advances ``self.step``.
        """
        cfg, gains, device = self.cfg, self.gains, self.device
        self.lr = self.set_lr(self.step)
        torch.manual_seed(mix_seed(cfg.seed, 0x7EA1, self.step, self.info.rank))
        x = batch.to(device, non_blocking=True)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if gains is None:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.use_amp):
                out = self.net(x, training=True)
            terms = self.criterion(out, x)
        else:  # variable rate: every crop draws its quality (seeded above, so resume is exact)
            lo, hi = gains.quality_range
            q = torch.full((x.shape[0],), self.fixed_quality) if self.fixed_quality is not None else (
                lo + (hi - lo) * torch.rand(x.shape[0]))
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.use_amp):
                out = self.net(x, training=True, quality=q.to(device))
            terms = self.criterion(out, x, lmbda=gains.lmbda(q))
        self.optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        norm = torch.nn.utils.clip_grad_norm_(self.trainable, cfg.clip_max_norm)
        if torch.isfinite(norm):
            self.optimizer.step()
            if self.ema is not None:
                self.ema.update(self.model)
        else:
            self.skipped += 1
            self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return {k: float(v.detach()) for k, v in terms.items()}

    # ---- validation, checkpoints, logs -------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Write a training checkpoint of the current step (rank 0 only)."""
        if self.info.is_main:
            meta = self.meta_base | {"step": self.step, "skipped_steps": self.skipped,
                                     "best_val_loss": self.best_val,
                                     "train_seconds": self.prior_seconds + time.perf_counter() - self.run_t0}
            extra = None
            if self.ema is not None:
                meta["ema"] = self.ema.meta() | {"since_step": self.step - self.ema.updates}
                extra = self.ema.state_tensors()
            save_checkpoint(path, self.model, self.optimizer, meta, extra)

    def validate(self) -> dict[str, float]:
        """Validation metrics of the current step (logged; a new best is saved as ``checkpoint_best``).
        With ``--ema`` the weight average is validated too (logged as split ``val_ema``; the best checkpoint
        is still chosen by the trained weights)."""
        res: dict[str, float] = {}
        if self.val_images is not None:  # every rank validates its share; all get the same means
            res = _validate_all(self.model, self.val_images, self.criterion, self.device, self.use_amp,
                                self.fixed_quality, self.info)
            self.log.write({"split": "val", "step": self.step, **res})
            if self.ema is not None:
                with self.ema.applied_to(self.model):
                    res_ema = _validate_all(self.model, self.val_images, self.criterion, self.device,
                                            self.use_amp, self.fixed_quality, self.info)
                self.log.write({"split": "val_ema", "step": self.step, **res_ema})
                if self.info.is_main:
                    print(f"hpcm train: step {self.step} validation loss {res['loss']:.4f}, weight average "
                          f"{res_ema['loss']:.4f}", file=sys.stderr, flush=True)
            if self.tb is not None:
                for k, v in res.items():
                    self.tb.add_scalar(f"val/{k}", v, self.step)
            if self.best_val is None or res["loss"] < self.best_val:
                self.best_val = res["loss"]
                self.save(self.run_dir / BEST)
        D.barrier(self.info)
        return res

    def log_train(
        self, window: dict[str, float], window_steps: int, seconds: float, bar: Any
    ) -> dict[str, float]:
        """Mean training terms over the last ``window_steps`` steps (all ranks), with the learning rate,
        images/s and skipped steps: written to the metrics log, TensorBoard and the progress bar (or one
        line on stderr when there is no bar)."""
        cfg, info = self.cfg, self.info
        metrics = _reduce_window(window, window_steps, info, self.device)
        metrics |= {
            "lr": self.lr,
            "images_per_s": cfg.batch_size * info.world_size * max(window_steps, 1) / max(seconds, 1e-9),
            "skipped_steps": self.skipped,
        }
        self.log.write({"split": "train", "step": self.step, **metrics})
        if self.tb is not None:
            for k, v in metrics.items():
                self.tb.add_scalar(f"train/{k}", v, self.step)
        bar.set_postfix(
            loss=f"{metrics.get('loss', math.nan):.4g}",
            bpp=f"{metrics.get('bpp', math.nan):.4f}",
            psnr=f"{metrics.get('psnr', math.nan):.2f}",
            img_s=f"{metrics['images_per_s']:.1f}",
        )
        if bar.disable and info.is_main:  # no progress bar (e.g. stdout/stderr not a terminal)
            print(progress_line(self.step, cfg.steps, metrics, max(window_steps, 1) / max(seconds, 1e-9)),
                  file=sys.stderr, flush=True)
        return metrics

    # ---- the loop ----------------------------------------------------------------------------------------

    def time_is_up(self) -> bool:
        """Whether this invocation has run ``--time-limit`` seconds of wall time (never without a limit)."""
        limit = self.cfg.time_limit
        return limit is not None and _now() - self.invocation_t0 >= limit

    def run(self) -> TrainResult:
        """:meth:`setup`, then steps until ``cfg.steps``, a stop signal or ``--time-limit``; saves and
        returns the outcome. A stop (signal or time limit) saves ``checkpoint_last`` and skips the final
        validation; ``--resume`` continues from there exactly."""
        from tqdm import tqdm

        self.setup()
        cfg, info = self.cfg, self.info
        bar = tqdm(
            total=cfg.steps,
            initial=self.step,
            disable=not (cfg.progress and info.is_main and sys.stderr.isatty()),
            dynamic_ncols=True,
            desc="train",
        )
        window: dict[str, float] = {}
        window_steps, window_t0 = 0, time.perf_counter()
        last_train: dict[str, float] = {}
        last_val: dict[str, float] = {}
        interrupted = False
        stop_reason: str | None = None
        stop_tensor = torch.zeros(2, device=self.device)  # (signal, time limit), summed over the ranks

        with StopFlag() as stop:
            it = iter(self.loader)
            while self.step < cfg.steps:
                try:
                    batch = next(it)
                except RuntimeError:
                    if stop.signal is not None:  # a data worker was interrupted by the same signal
                        interrupted, stop_reason = True, "signal"
                        break
                    raise
                values = self.train_step(batch)
                step = self.step
                if all(math.isfinite(v) for v in values.values()):
                    for k, v in values.items():
                        window[k] = window.get(k, 0.0) + v
                    window_steps += 1
                bar.update(1)
                if self.on_step is not None:
                    self.on_step(step, values)

                if step % cfg.log_every == 0 or step == cfg.steps:
                    last_train = self.log_train(window, window_steps, time.perf_counter() - window_t0, bar)
                    window, window_steps, window_t0 = {}, 0, time.perf_counter()
                if step % cfg.val_every == 0 and step < cfg.steps:
                    last_val = self.validate()
                if step % cfg.save_every == 0 and step < cfg.steps:
                    self.save(self.last_path)
                stop_tensor[0] = 1.0 if stop.signal is not None else 0.0
                stop_tensor[1] = 1.0 if self.time_is_up() and self.step < cfg.steps else 0.0
                by_signal, by_time = (float(v) > 0 for v in D.all_reduce_sum(stop_tensor, info).tolist())
                if by_signal or by_time:  # every rank stops at the same step
                    interrupted, stop_reason = True, "signal" if by_signal else "time-limit"
                    break
        bar.close()
        if not interrupted:
            last_val = self.validate() if (cfg.val or cfg.val_holdout) else {}
        self.save(self.last_path)
        if self.tb is not None:
            self.tb.close()
        if interrupted and info.is_main:
            why = f"--time-limit {cfg.time_limit:g} s reached" if stop_reason == "time-limit" else "stopped"
            print(f"hpcm train: {why} at step {self.step}; saved {self.last_path} (use --resume)",
                  file=sys.stderr)
        return TrainResult(self.step, interrupted, self.skipped, self.best_val, self.run_dir, last_train,
                           last_val, stop_reason)


def _validate_all(
    model: nn.Module,
    images: ValidationImages,
    criterion: RateDistortionLoss,
    device: torch.device,
    amp: bool,
    fixed_quality: float | None,
    info: D.DistInfo | None = None,
) -> dict[str, float]:
    """Validation metrics; a variable-rate model is measured at every anchor quality (``q<k>/...`` keys)
    and its ``loss``/``bpp``/``psnr`` are the means over the anchors."""
    gains = getattr(model, "quality_gains", None)
    if gains is None:
        return evaluate(model, images, criterion, device=device, amp=amp, info=info)
    qualities = [fixed_quality] if fixed_quality is not None else list(range(1, gains.num_anchors + 1))
    per_q = [evaluate(model, images, criterion, device=device, amp=amp, quality=q, info=info)
             for q in qualities]
    res: dict[str, float] = {"images": per_q[0]["images"]}
    for q, r in zip(qualities, per_q, strict=True):
        res |= {f"q{q:g}/{k}": v for k, v in r.items() if k != "images"}
    for key in ("loss", "bpp", "psnr", "mse"):
        res[key] = sum(r[key] for r in per_q) / len(per_q)
    return res


def machine_summary(device: torch.device, world_size: int) -> str:
    """One line naming where a run trains (CPU model and cores, or the GPU), for provenance."""
    import os
    import platform

    if device.type == "cuda":
        what = torch.cuda.get_device_name(device)
    else:
        what = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as fh:
                what = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), what)
        except OSError:
            pass
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        what += f", {cores} cores"
    return f"{what} x {world_size} process(es), torch threads {torch.get_num_threads()}"


def split_holdout(paths: list[Path], count: int) -> tuple[list[Path], list[Path]]:
    """(training paths, ``count`` held-out paths): evenly spaced over the sorted list, so every source
    folder contributes; a pure function of the list (the same images on every machine and resume)."""
    if count <= 0:
        return paths, []
    if count >= len(paths):
        raise ConfigError(f"--val-holdout {count} leaves no training images (found {len(paths)})")
    picked = {round((i + 0.5) * len(paths) / count) for i in range(count)}
    picked = {min(i, len(paths) - 1) for i in picked}
    kept = [p for i, p in enumerate(paths) if i not in picked]
    return kept, [p for i, p in enumerate(paths) if i in picked]


def _reduce_window(
    window: dict[str, float], steps: int, info: D.DistInfo, device: torch.device
) -> dict[str, float]:
    keys = sorted(window)
    t = torch.tensor([window[k] for k in keys] + [float(steps)], dtype=torch.float64, device=device)
    D.all_reduce_sum(t, info)
    n = float(t[-1])
    if n == 0:
        return {}
    out = {k: float(v) / n for k, v in zip(keys, t[:-1].tolist())}
    if "mse" in out:
        out["psnr"] = psnr_from_mse(out["mse"])
    return out


def _check_resumable(cfg: TrainConfig, meta: dict[str, Any], world_size: int = 1) -> None:
    """A run resumes with its model, metric, patch size, seed and global batch (per-process batch × processes:
    the sample stream is a function of the global batch, so 1 × 8 may continue as 2 × 4; bit-exact only with
    the same process count)."""
    saved = meta.get("train_config", {})
    for key in ("model", "metric", "patch_size", "seed"):
        if saved.get(key) != getattr(cfg, key):
            raise CheckpointError(
                f"--resume: {key} differs from the checkpoint ({saved.get(key)!r} vs {getattr(cfg, key)!r})"
            )
    saved_world = int(meta.get("world_size") or 1)
    saved_batch = saved.get("batch_size")
    if saved_batch is None or saved_batch * saved_world != cfg.batch_size * world_size:
        raise CheckpointError(
            f"--resume: the global batch differs from the checkpoint ({saved_world} process(es) x "
            f"{saved_batch!r} vs {world_size} x {cfg.batch_size})"
        )
    saved_lmbda = meta.get("lmbda")
    if saved_lmbda is None and meta.get("rate_lambdas"):
        return  # variable-rate run: λ comes from the model's anchors
    if cfg.resolved_lmbda is None or not math.isclose(float(saved_lmbda or math.nan), cfg.resolved_lmbda):
        raise CheckpointError(f"--resume: lambda differs from the checkpoint ({meta.get('lmbda')})")
