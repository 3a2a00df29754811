#!/usr/bin/env bash
# A GPU training slot (issue 18 item 3) as one command: continue the variable-rate model from committed
# weights on the carried crops, in bf16, for a fixed wall time, and bring the result back.
#
#   bash scripts/gpu_train.sh OUT [MODEL_WEIGHTS|none] [SECONDS] [extra hpcm train flags ...]
#     OUT            where the results go ($OUT on the GPU machine): at most 8 files (the run tool's limit)
#     MODEL_WEIGHTS  --init-from (default src/hpcm/weights/hpcm-tiny-vr.safetensors; none: initial weights;
#                    widen:SOURCE: `hpcm widen SOURCE --model $MODEL` on the machine first, e.g.
#                    MODEL=hpcm-small-vr with widen:hpcm-tiny-vr: the wide model starts as the shipped one)
#     SECONDS        hpcm train --time-limit, setup included (default 360: the whole command stays under
#                    about 8 minutes on a GPU; install, export and the before/after report add 60-90 s)
#
# Needs .gpu/ from `bash scripts/gpu_wheels.sh && python scripts/gpu_train_prepare.py` (wheels, crops,
# held-out images), carried with carry=[".gpu"] (see docs/gpu.md). Settings (environment):
#   DEVICE=cuda      cpu for a dry run here (then AMP defaults to none)
#   AMP=bf16|none    default bf16 on cuda
#   MODEL=hpcm-tiny-vr   or package.module:factory, e.g. MODEL=width_probe:w96 (experiments/ is on the path)
#   BATCH=16 PATCH=256 LR=1e-4 LR_GROUP='quality_gains*=10' (empty: none) SEED=0 WORKERS=6
#   WARMUP=300   the optimizer starts fresh (its state does not come back), and Adam's first steps move
#                every weight by about the learning rate whatever its gradient: LR/10 for WARMUP/3 steps,
#                then 0.3 LR until WARMUP, then LR (--lr-milestones); 0: LR from the start
#   STEPS=10000000 (the time limit ends the run) VAL_EVERY=1000 SAVE_EVERY=1000 LOG_EVERY=25
#   MAX_VAL=     at most this many held-out images (validation and report; for dry runs)
#   CROPS=.gpu/train-crops HOLDOUT=.gpu/holdout RUN_DIR=/tmp/hpcm-gpu-train (removed first)
#   PYTHON=python3
# What comes back in OUT: <model>-gpu.safetensors + .json (hpcm export of checkpoint_last: steps, crops
# seen, train_seconds, machine, recipe), with --ema DECAY among the flags also <model>-gpu-ema.safetensors
# + .json (the weight average; both then in float16 storage; compare them with
# experiments/holdout_compare.py), metrics.jsonl, config.toml, train.log, holdout.json and summary.md
# (held-out bpp/PSNR/loss at every anchor, before and after). The Adam state (checkpoint_last, ~23 MB for
# tiny) is over the 16 MiB a returned file may have: a later slot starts again from the exported weights.
# When an exported file is over 15 MiB (hpcm-small-vr: 60 MB) or there are more than 8 files, everything
# but summary.md comes back as
# bundle.tar.part-00, -01, ... (15 MiB each); join them here with: cat bundle.tar.part-* | tar -x -C DIR
set -uo pipefail
T0=$(date +%s)
OUT=${1:?usage: gpu_train.sh OUT [MODEL_WEIGHTS|none] [SECONDS] [hpcm train flags ...]}
INIT=${2:-src/hpcm/weights/hpcm-tiny-vr.safetensors}
LIMIT=${3:-360}
shift $(($# < 3 ? $# : 3))
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
case "$DEVICE" in cuda*) AMP=${AMP:-bf16} ;; *) AMP=${AMP:-none} ;; esac
MODEL=${MODEL:-hpcm-tiny-vr}
BATCH=${BATCH:-16}
PATCH=${PATCH:-256}
LR=${LR:-1e-4}
LR_GROUP=${LR_GROUP-quality_gains*=10}
WARMUP=${WARMUP:-300}
SEED=${SEED:-0}
WORKERS=${WORKERS:-6}
STEPS=${STEPS:-10000000}
VAL_EVERY=${VAL_EVERY:-1000}
SAVE_EVERY=${SAVE_EVERY:-1000}
LOG_EVERY=${LOG_EVERY:-25}
MAX_VAL=${MAX_VAL:-}
CROPS=${CROPS:-.gpu/train-crops}
HOLDOUT=${HOLDOUT:-.gpu/holdout}
RUN=${RUN_DIR:-/tmp/hpcm-gpu-train}
LOG="$OUT/train.log"

# shellcheck source=scripts/gpu_env.sh
source scripts/gpu_env.sh
hpcm_gpu_env gpu_train >"$LOG" 2>&1  # in this shell (it exports PYTHONPATH), then shown
PREPARED=$("$PY" -c 'import json; print(json.load(open(".gpu/train-crops.json"))["commit"])' 2>/dev/null)
echo "gpu_train: crops prepared at commit $PREPARED" >>"$LOG"
# no .git travels to the GPU machine: the checkpoints then record the commit the crops were prepared at
[ -n "$PREPARED" ] && export HPCM_GIT_COMMIT="$PREPARED (the commit .gpu was prepared at)"
cat "$LOG"
export PYTHONPATH="$PYTHONPATH:$PWD/experiments"  # MODEL=width_probe:w96 and the like

if ! ls "$CROPS"/*.jpg >/dev/null 2>&1; then
  echo "gpu_train: no crops in $CROPS: run python scripts/gpu_train_prepare.py first (and carry .gpu)" | tee -a "$LOG"
  exit 2
fi
[ -d "$HOLDOUT" ] || { echo "gpu_train: no held-out images in $HOLDOUT" | tee -a "$LOG"; exit 2; }
rm -rf "$RUN"
if [[ "$INIT" == widen:* ]]; then
  WIDE="$RUN-init.safetensors"
  rm -f "$WIDE" "${WIDE%.safetensors}.json"
  "$PY" -m hpcm widen "${INIT#widen:}" --model "$MODEL" -o "$WIDE" 2>&1 | tee -a "$LOG"
  INIT=$WIDE
fi
if [ "$INIT" != none ] && [ ! -f "$INIT" ]; then
  echo "gpu_train: $INIT does not exist (give a weights file, or none)" | tee -a "$LOG"
  exit 2
fi
EXTRA=()  # crop sets earlier calls left on a warm machine (gpu_train_prepare.py --part K)
for d in .gpu/crops-part*; do [ -d "$d" ] && EXTRA+=("$d"); done
echo "gpu_train: crop folders: $CROPS ${EXTRA[*]} ($(find "$CROPS" "${EXTRA[@]}" -name '*.jpg' | wc -l) crops)" | tee -a "$LOG"
args=(--model "$MODEL" --data "$CROPS" "${EXTRA[@]}" --val "$HOLDOUT" --out "$RUN" --steps "$STEPS" --batch-size "$BATCH"
      --patch-size "$PATCH" --time-limit "$LIMIT" --val-every "$VAL_EVERY" --save-every "$SAVE_EVERY"
      --log-every "$LOG_EVERY" --num-workers "$WORKERS" --seed "$SEED" --downscale-prob 0
      --device "$DEVICE" --no-progress)
if [ "$WARMUP" -gt 0 ]; then
  args+=(--lr "$("$PY" -c "print(f'{$LR / 10:g}')")" --lr-milestones "$((WARMUP / 3)):$("$PY" -c "print(f'{$LR * 0.3:g}')")"
         "$WARMUP:$LR")
else
  args+=(--lr "$LR")
fi
[ -n "$LR_GROUP" ] && args+=(--lr-group "$LR_GROUP")
[ "$AMP" = bf16 ] && args+=(--amp bf16)
[ "$INIT" != none ] && args+=(--init-from "$INIT")
[ -n "$MAX_VAL" ] && args+=(--max-val-images "$MAX_VAL")
echo "gpu_train: hpcm train ${args[*]} $*" | tee -a "$LOG"
# hpcm train stops itself at the time limit; timeout (SIGTERM: it saves and stops too) is the safety net
timeout -k 20 $((${LIMIT%.*} + 90)) "$PY" -m hpcm train "${args[@]}" "$@" 2>&1 | tee -a "$LOG"
rc=${PIPESTATUS[0]}
echo "gpu_train: hpcm train exit $rc after $(($(date +%s) - T0)) s" | tee -a "$LOG"

NAME=$(printf '%s' "$MODEL" | tr ':/' '--')-gpu
if [ -f "$RUN/checkpoint_last.safetensors" ]; then
  HALF=()
  if grep -q '"ema"' "$RUN/checkpoint_last.json" 2>/dev/null; then  # trained with --ema: the average too
    # both in float16 storage (as shipped weights are): two float32 hpcm-small-vr files (120 MB) would be
    # over the 64 MiB that may come back
    HALF=(--half)
    "$PY" -m hpcm export "$RUN/checkpoint_last.safetensors" -o "$OUT/$NAME-ema.safetensors" --force --half --ema \
      2>&1 | tee -a "$LOG"
  fi
  "$PY" -m hpcm export "$RUN/checkpoint_last.safetensors" -o "$OUT/$NAME.safetensors" --force "${HALF[@]}" 2>&1 |
    tee -a "$LOG"
  cp -f "$RUN/metrics.jsonl" "$RUN/config.toml" "$OUT/" 2>/dev/null
  report=(--run "$RUN" --weights "$OUT/$NAME.safetensors" --init "$INIT" --holdout "$HOLDOUT"
          --device "$DEVICE" --out "$OUT" --started "$T0")
  [ -n "$MAX_VAL" ] && report+=(--max-images "$MAX_VAL")
  timeout -k 10 150 "$PY" scripts/gpu_train_report.py "${report[@]}" 2>&1 | tee -a "$LOG"
else
  echo "gpu_train: no checkpoint was written" | tee -a "$LOG"
  [ "$rc" -eq 0 ] && rc=1
fi
# a returned file may have 16 MiB at most, and at most 8 files come back
if [ -n "$(find "$OUT" -maxdepth 1 -type f -size +15M)" ] || [ "$(ls "$OUT" | wc -l)" -gt 8 ]; then
  echo "gpu_train: files over 15 MiB or more than 8: all but summary.md go into bundle.tar.part-*" | tee -a "$LOG"
  (cd "$OUT" && files=$(ls | grep -v -e '^summary.md$' -e '^bundle.tar') &&
     tar -cf - $files | split -b 15M -d - bundle.tar.part- && rm -f $files)
fi
echo "gpu_train: done in $(($(date +%s) - T0)) s; $OUT: $(ls "$OUT" | tr '\n' ' ')" | tee -a "$LOG"
exit "$rc"
