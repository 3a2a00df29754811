"""``hpcm train`` (rate–distortion training; resumable; one process or torchrun DDP), ``hpcm export`` and
``hpcm widen``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from hpcm.errors import CheckpointError


def register(subparsers: Any) -> None:
    """Add the ``train``, ``export`` and ``widen`` sub-commands."""
    p = subparsers.add_parser(
        "train",
        help="train a model variant (rate-distortion loss); resumable; torchrun for several GPUs",
        description=(
            "Train any registered variant with L = lambda*255^2*MSE + bpp (or lambda*(1-MS-SSIM) + bpp). "
            "Flags override --config FILE.toml, which overrides the defaults. RUN_DIR receives "
            "config.toml, metrics.jsonl, checkpoint_last.safetensors and checkpoint_best.safetensors. "
            "Several processes: torchrun --nproc_per_node=K -m hpcm train ..."
        ),
    )
    # every default is None so that only flags given on the command line override the TOML file
    a = p.add_argument
    a("--config", metavar="FILE.toml", help="settings file ([train] table; keys = flag names with _)")
    a("--model", help="preset name (see `hpcm models`) or package.module:factory")
    a("--data", nargs="+", metavar="DIR", help="training image folders (recursive; JPEG/PNG)")
    a("--val", metavar="DIR", help="validation folder (full images, padded to the model's size multiple)")
    a("--out", metavar="RUN_DIR", help="run folder for checkpoints, metrics log and resolved config")
    a("--steps", type=int, help="total optimizer steps (default 1000)")
    a("--time-limit", type=float, metavar="SECONDS",
      help="stop once this invocation has run SECONDS of wall time (setup included): checkpoint_last is "
      "saved as on SIGTERM, without the final validation; --resume continues it")
    a("--batch-size", type=int, help="images per step and process (default 8)")
    a("--patch-size", type=int, help="square training crops, a multiple of the model's size multiple (256)")
    q = p.add_mutually_exclusive_group()
    q.add_argument("--quality", type=int,
                   help="1..6: HPCM's lambda table for --metric (variable-rate models: train this quality "
                   "only; give neither --quality nor --lmbda to train every quality)")
    q.add_argument("--lmbda", type=float, help="explicit rate-distortion lambda")
    a("--metric", choices=["mse", "ms-ssim"], help="distortion term (default mse)")
    a("--lr", type=float, help="base learning rate (default 1e-4)")
    a("--lr-milestones", nargs="+", metavar="STEP[:LR]",
      help="from STEP on multiply the lr by --lr-gamma, or set it to LR")
    a("--lr-gamma", type=float, help="factor at each plain milestone (default 0.1)")
    a("--lr-group", dest="lr_groups", action="append", metavar="PATTERN=FACTOR",
      help="lr factor for parameters matching PATTERN (fnmatch on names/module prefixes, or re:REGEX); "
      "first matching rule wins; repeatable")
    a("--freeze", action="append", metavar="PATTERN", help="freeze matching parameters; repeatable")
    a("--train-only", action="append", metavar="PATTERN", help="freeze everything else; repeatable")
    a("--clip-max-norm", type=float, help="gradient clipping norm (default 1.0)")
    a("--ema", type=float, metavar="DECAY",
      help="also keep an exponential moving average of the weights (e.g. 0.999: a horizon of about 1,000 "
      "steps), saved in the checkpoints and validated beside the weights; `hpcm export --ema` exports it. "
      "May be added when resuming (it then starts at the resumed weights)")
    a("--val-every", type=int, help="validate every N steps (default 1000)")
    a("--save-every", type=int, help="write checkpoint_last every N steps (default 1000)")
    a("--log-every", type=int, help="metrics log interval in steps (default 10); without a progress bar "
      "(not a terminal, or --no-progress) also a line on stderr: rate, loss, bpp, PSNR, ETA")
    a("--max-val-images", type=int, help="use at most N validation images")
    a("--val-holdout", type=int, metavar="N",
      help="hold N training images out of training and validate on them (instead of --val)")
    a("--num-workers", type=int, help="data loader processes per rank (default 2)")
    a("--seed", type=int, help="seed of the data order, crops and training noise (default 0)")
    a("--downscale-prob", type=float,
      help="probability of down-scaling an image before cropping (JPEG sources; default 0)")
    a("--downscale-min", type=float, help="smallest down-scale factor (default 0.5)")
    a("--init-from", metavar="CKPT",
      help="start from a checkpoint/weights of another variant (tensors matching by name and shape)")
    a("--resume", action="store_true", default=None, help="continue RUN_DIR/checkpoint_last exactly")
    a("--device", help="auto (default), cpu, cuda, cuda:K")
    a("--amp", choices=["bf16"], help="bf16 autocast of the networks (GPU, or a CPU with AVX512-BF16/AMX); "
      "likelihoods and the image-side convolutions stay float32")
    a("--channels-last", action="store_true", default=None,
      help="channels-last (NHWC) memory format for the model and batches (faster convolutions on CPU)")
    a("--grad-checkpoint", action="store_true", default=None,
      help="set use_checkpoint=True on every module that has it (RWKV blocks)")
    a("--tensorboard", action="store_true", default=None, help="log to RUN_DIR/tensorboard (if installed)")
    a("--ddp-find-unused", action="store_true", default=None,
      help="DDP find_unused_parameters (variants with parameters unused in forward)")
    a("--no-progress", dest="progress", action="store_false", default=None, help="no progress bar")
    p.set_defaults(func=run_train)

    e = subparsers.add_parser(
        "export",
        help="write inference weights (+ JSON metadata) from a training checkpoint",
        description="Export a training checkpoint to MODEL.safetensors + MODEL.json for "
        "`hpcm compress --checkpoint`.",
    )
    e.add_argument("checkpoint", metavar="CKPT", help="checkpoint_last/best.safetensors of a run")
    e.add_argument("-o", "--output", required=True, metavar="MODEL.safetensors")
    e.add_argument("--force", action="store_true", help="overwrite an existing output")
    e.add_argument("--ema", action="store_true",
                   help="export the checkpoint's weight average (a run trained with --ema) instead of its "
                   "weights")
    e.add_argument("--half", action="store_true",
                   help="store the weights as float16 (half the size; loaded back as float32; the recorded "
                   "fingerprint is the loaded model's)")
    e.set_defaults(func=run_export)

    w = subparsers.add_parser(
        "widen",
        help="start a wider preset from trained weights, computing exactly the same function",
        description="Write weights of the wider --model (larger M and/or transform channels, otherwise the "
        "same architecture) that reproduce SOURCE's reconstructions and rates exactly; the new channels "
        "start unused and training (hpcm train --init-from OUT) teaches them. See hpcm.models.widen.",
    )
    w.add_argument("source", metavar="SOURCE", help="a preset with bundled weights or a .safetensors file")
    w.add_argument("--model", required=True,
                   help="the wider preset (see `hpcm models`) or package.module:factory")
    w.add_argument("-o", "--output", required=True, metavar="MODEL.safetensors")
    w.add_argument("--seed", type=int, default=0, help="seed of the new channels' initial weights")
    w.add_argument("--force", action="store_true", help="overwrite an existing output")
    w.set_defaults(func=run_widen)


def config_from_args(args: argparse.Namespace) -> Any:
    """Defaults < ``--config`` TOML < flags given on the command line."""
    from hpcm.train.config import TrainConfig, load_toml

    cfg = TrainConfig()
    if args.config:
        cfg = TrainConfig.from_dict(load_toml(args.config))
    names = set(TrainConfig.__dataclass_fields__)
    given = {k: v for k, v in vars(args).items() if k in names and v is not None}
    if given.get("quality") is not None:
        cfg.lmbda = None
    if given.get("lmbda") is not None:
        cfg.quality = None
    cfg.update(given)
    return cfg


def run_train(args: argparse.Namespace) -> int:
    from hpcm.train.trainer import train

    cfg = config_from_args(args)
    result = train(cfg)
    if result.step and result.last_val:
        v = result.last_val
        when = f"step {result.step}" if not result.interrupted else f"stopped at step {result.step}, last"
        print(
            f"{when}: val loss {v['loss']:.4f}, bpp {v['bpp']:.4f}, PSNR {v['psnr']:.2f} dB "
            f"({v['images']} images); skipped steps {result.skipped_steps}",
            file=sys.stderr,
        )
    return 0


def _weights_output(path: str, force: bool) -> Path:
    """The ``-o`` of export/widen: a .safetensors path that may be written (``force`` to overwrite)."""
    from hpcm.codec.atomic import check_output_path

    out = Path(path)
    if out.suffix != ".safetensors":
        raise CheckpointError(f"output must end in .safetensors, got {out.name}")
    check_output_path(out, overwrite=force)
    return out


def run_export(args: argparse.Namespace) -> int:
    from hpcm.models.io import is_derived_key, save_weights
    from hpcm.models.migrate import migrate
    from hpcm.train.checkpoint import model_state, read_checkpoint
    from hpcm.train.ema import averaged_model_state, has_average
    from hpcm.train.trainer import build_model

    out = _weights_output(args.output, args.force)
    _refuse_torch_checkpoint(args.checkpoint)
    tensors, meta, _ = read_checkpoint(args.checkpoint)
    if args.ema and not has_average(tensors):
        raise CheckpointError(f"{args.checkpoint} holds no weight average (train with --ema)")
    model = _model_from_meta(meta, build_model)
    try:
        state = averaged_model_state(tensors) if args.ema else model_state(tensors)
    except KeyError as exc:
        raise CheckpointError(f"{args.checkpoint}: {exc.args[0]}") from None
    report = migrate(state, model)
    missing = [k for k in report.initialised if not is_derived_key(k)]
    if missing:
        raise CheckpointError(f"{args.checkpoint} does not fit its recorded model:\n{report}")
    model.preset = meta.get("preset")
    metadata = {
        "preset": meta.get("preset"),
        "quality": meta.get("quality"),
        "lambda": meta.get("lmbda"),
        "metric": meta.get("metric"),
        "trained": True,
        "training": {
            "step": meta.get("step"),
            "crops_seen": _crops_seen(meta),
            "train_seconds": meta.get("train_seconds"),
            "machine": meta.get("machine"),
            "rate_lambdas": meta.get("rate_lambdas"),
            "data": meta.get("data"),
            "num_train_images": meta.get("num_train_images"),
            "git_commit": meta.get("git_commit"),
            "torch": meta.get("torch"),
            "world_size": meta.get("world_size"),
            "best_val_loss": meta.get("best_val_loss"),
            "recipe": _recipe(meta.get("train_config") or {}),
            # the run folder and file, not this machine's absolute path (the weights travel)
            "checkpoint": "/".join(Path(args.checkpoint).resolve().parts[-2:]),
            # the exported weights: the trained ones, or their moving average (decay, updates, since_step)
            "weights": {"ema": meta.get("ema")} if args.ema else "trained",
        },
    }
    save_weights(model, out, metadata, overwrite=True, half=args.half)
    print(f"wrote {out} and {out.with_suffix('.json')}", file=sys.stderr)
    return 0


def run_widen(args: argparse.Namespace) -> int:
    from hpcm.models.io import load_model, save_weights, weights_fingerprint
    from hpcm.models.protocol import model_preset, weights_info
    from hpcm.models.registry import get_config
    from hpcm.models.widen import widen

    out = _weights_output(args.output, args.force)
    narrow = load_model(args.source)
    try:
        if ":" in args.model:  # package.module:factory, as `hpcm train --model` takes it
            from hpcm.train.trainer import build_model

            config = build_model(args.model).config
        else:
            config = get_config(args.model)
        wide = widen(narrow, config, seed=args.seed)
    except (KeyError, ValueError) as exc:
        reason = exc.args[0] if exc.args else exc
        raise CheckpointError(f"cannot widen {args.source} to {args.model}: {reason}") from None
    wide.preset = args.model
    source_info = weights_info(narrow)
    metadata = {
        "preset": args.model,
        "widened_from": {
            "source": str(args.source),
            "preset": model_preset(narrow),
            "fingerprint": weights_fingerprint(narrow),
            "training": source_info.get("training"),
            "seed": args.seed,
        },
    }
    save_weights(wide, out, metadata, overwrite=True)
    print(f"wrote {out} ({args.model}, same function as {args.source})", file=sys.stderr)
    return 0


def _crops_seen(meta: dict[str, Any]) -> int | None:
    """Training crops the run has seen (steps × batch size × processes)."""
    cfg = meta.get("train_config") or {}
    try:
        return int(meta["step"]) * int(cfg["batch_size"]) * int(meta.get("world_size") or 1)
    except (KeyError, TypeError, ValueError):
        return None


def _refuse_torch_checkpoint(path: str) -> None:
    """``hpcm export`` reads run checkpoints (.safetensors); name a torch pickle/zip file as such."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
    except OSError:
        return  # read_checkpoint reports missing / unreadable files
    if head[8:9] == b"{":  # safetensors: an 8-byte header length, then the JSON header (its first byte may be
        return  # 0x80 or spell "PK", so the torch signatures below are only tried on other files)
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80" or path.endswith((".pth.tar", ".pth", ".pt")):
        raise CheckpointError(
            f"{path} is a PyTorch checkpoint (.pth.tar), not a run checkpoint of hpcm train (.safetensors); "
            "official weights need no export: use them with --checkpoint (compress, eval)"
        )


RECIPE_KEYS = ("batch_size", "patch_size", "lr", "lr_milestones", "lr_gamma", "clip_max_norm", "seed",
               "downscale_prob", "downscale_min", "amp", "init_from", "freeze", "train_only", "lr_groups",
               "ema")


def _recipe(train_config: dict) -> dict:
    """The settings of the run's (last) training configuration that shape the weights."""
    return {k: train_config[k] for k in RECIPE_KEYS if k in train_config}


def _model_from_meta(meta: dict, build_model: Any) -> Any:
    if meta.get("model_config"):
        from hpcm.models.config import HPCMConfig
        from hpcm.models.hpcm import HPCM

        try:
            return HPCM(HPCMConfig.from_dict(meta["model_config"]))
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"invalid model config in checkpoint: {exc}") from None
    return build_model(meta["preset"])
