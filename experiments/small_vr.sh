#!/usr/bin/env bash
# The hpcm-small-vr training run (issue 18 item 2): hpcm-tiny-vr widened to M=192, g 64/128/192 without
# changing its function (hpcm.models.widen), then trained on 256² crops at every quality.
#   bash experiments/small_vr.sh widen            # runs/small-vr-init.safetensors from the shipped hpcm-tiny-vr
#   bash experiments/small_vr.sh fresh  [LR]      # new run from runs/small-vr-init.safetensors (or INIT=...);
#        INIT=runs/hpcm-small-vr-step1359.safetensors continues session 9's run (fresh Adam; restore it with
#        git show cd9d764:experiments/weights/hpcm-small-vr-step1359.safetensors > runs/hpcm-small-vr-step1359.safetensors)
#        INIT=src/hpcm/weights/hpcm-small-vr.safetensors LR_MILESTONES=100:5e-5 ... fresh 1e-5 restarts from the
#        shipped weights (session 14: the run state was not carried over) with a 100-step warm-up of fresh Adam
#   bash experiments/small_vr.sh resume [LR]      # continue runs/small-vr (TIME_LIMIT=SECONDS to stop by itself)
#   RUN=runs/small-vr-decay bash experiments/small_vr.sh resume 5e-6   # a low-lr fork of a copy of the run
#   bash experiments/small_vr.sh finish           # export (float16), held-out comparison against the shipped
#                                                 # hpcm-small-vr (BASELINE=...), Kodak eval; with a weight
#                                                 # average in the checkpoint also runs/small-vr-ema.* (held-out)
# Shipping the winner: bash experiments/report_small_vr.sh STEP PREVIOUS_KODAK.json, then
#   .venv/bin/python experiments/install_weights.py WINNER --before STEPS CROPS --note "..."  (STEPS, CROPS: what
#   the run's starting weights had had: model step = run step + the
#   steps the starting (--init) weights had had, per their sidecar JSON; 8 crops a step)
# EMA=0.995 (the default from session 15; EMA= turns it off): the run keeps an exponential moving average of
# the weights (hpcm train --ema), validated beside them; it replaces the low-lr stretch before shipping when
# it wins on the held-out images.
# Training runs under bf16 autocast (AMP=bf16, the default from step 2,716 where the CPU has native bf16; AMP=
# trains in float32): on the 2-core AVX512-BF16 machine 3.2 vs 1.5 crops/s at batch 8 × 256²
# (benchmarks/train_speed.py --cpu-bf16). Session 14 ran on an AVX2-only EPYC (no native bf16): float32 0.99,
# emulated bf16 0.09 crops/s (one process, 2 threads); 2 processes x 1 thread in float32: 1.12 crops/s.
# --channels-last from step ~3,000 (NHWC=0 turns it off): 1.14x the bf16 step on this CPU.
# From step 3,401: PROCS=2 processes (torchrun, gloo) x 1 thread x batch 4 = the same global batch of 8 and the
# same crops: 3.8 crops/s against 3.4 for one process with 2 threads (PROCS=1 THREADS=2 for the latter).
# Stopping a PROCS=2 run: kill -TERM <torchrun pid> (or Ctrl-C). Since session 13 the data workers ignore the
# signal, so the ranks finish their step and save (tests/test_train_ddp.py); before that the workers died first
# and the run fell back to its last --save-every checkpoint.
# Shipping (session 13): a copy of the run at step 8,082 continued 253 steps at lr 5e-6 (RUN=runs/small-vr-decay,
# TIME_LIMIT=570) and beat its starting point by -2.73 % BD-rate on the held-out images, so that fork shipped;
# the main run keeps lr 5e-5 and continues from 8,082.
# lr: 1e-4 was tried against 5e-5 from step 3,218 on the same crops (180 steps each, session 12): the training
# loss of 1e-4 was higher at every one of the 19 logged steps (mean +0.044), so 5e-5 stays.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-runs/small-vr}
INIT=${INIT:-runs/small-vr-init.safetensors}
LR=${2:-5e-5}
# bf16 only where the CPU has it natively (AVX512-BF16/AMX); emulated bf16 ran at x0.09 of float32 (session 14)
AMP=${AMP-$(.venv/bin/python -c 'from hpcm.train.amp import cpu_bf16_is_emulated as e; print("" if e() else "bf16")')}
PROCS=${PROCS:-2}
EMA=${EMA-0.995}
COMMON=(--model hpcm-small-vr --data ../shared/data/train --out "$RUN" --steps 400000
        --batch-size "$(( ${BATCH:-8} / PROCS ))"
        --patch-size 256 --val-holdout 16 --val-every 500 --save-every 50 --log-every 10 --num-workers 1
        --lr "$LR" --lr-group 'quality_gains*=10' --downscale-prob 0.5 --seed 0 --no-progress
        ${AMP:+--amp "$AMP"} $([ "${NHWC:-1}" = 1 ] && echo --channels-last) ${EMA:+--ema "$EMA"}
        ${TIME_LIMIT:+--time-limit "$TIME_LIMIT"} ${LR_MILESTONES:+--lr-milestones $LR_MILESTONES})
case "${1:-}" in
  widen) .venv/bin/hpcm widen hpcm-tiny-vr --model hpcm-small-vr -o "$INIT" ;;
  fresh|resume)
    [ "$1" = fresh ] && START=(--init-from "$INIT") || START=(--resume)
    if [ "$PROCS" -gt 1 ]; then
      OMP_NUM_THREADS=${THREADS:-1} .venv/bin/torchrun --standalone --nproc_per_node "$PROCS" -m hpcm train \
        "${COMMON[@]}" "${START[@]}"
    else
      OMP_NUM_THREADS=${THREADS:-2} .venv/bin/hpcm train "${COMMON[@]}" "${START[@]}"
    fi ;;
  finish)  # float16 storage, as shipped; the shipping rule: beat the shipped weights on the held-out images
    .venv/bin/hpcm export "$RUN/checkpoint_last.safetensors" -o "$RUN.safetensors" --force --half
    .venv/bin/python experiments/holdout_compare.py "$RUN.safetensors" --baseline "${BASELINE:-hpcm-small-vr}" \
      -o "$RUN-holdout.json"
    if .venv/bin/hpcm export "$RUN/checkpoint_last.safetensors" -o "$RUN-ema.safetensors" --force --half --ema
    then
      .venv/bin/python experiments/holdout_compare.py "$RUN-ema.safetensors" \
        --baseline "${BASELINE:-hpcm-small-vr}" --baseline-json "$RUN-holdout.json" -o "$RUN-ema-holdout.json"
    fi
    .venv/bin/hpcm eval "$RUN.safetensors" ../shared/data/kodak -q 1 2 3 4 5 6 7 8 -o "$RUN-kodak.json" --quiet ;;
  finish-ema)  # Kodak eval of the weight average (after it won on the held-out images)
    .venv/bin/hpcm eval "$RUN-ema.safetensors" ../shared/data/kodak -q 1 2 3 4 5 6 7 8 -o "$RUN-kodak.json" \
      --quiet ;;
  *) echo "usage: $0 widen|fresh|resume|finish|finish-ema [LR]" >&2; exit 2 ;;
esac
