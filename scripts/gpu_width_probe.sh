#!/usr/bin/env bash
# The width probe of issue 18 item 2 on a GPU slot: the candidates of experiments/width_probe.py trained
# from scratch as variable-rate models, side by side on the one GPU for the same wall time, then compared
# on the 16 held-out training images at every anchor quality (scripts/gpu_train_report.py). One command:
#
#   bash scripts/gpu_width_probe.sh OUT [SECONDS] [CANDIDATE ...]     # default 420 s; w96 w128 w160
#
# Each candidate is one scripts/gpu_train.sh run (MODEL=width_probe:<name>, weights none, bf16, batch 16,
# lr 1e-4 without warm-up) in its own folder under /tmp; what comes back is OUT/<name>-summary.md and
# OUT/<name>-holdout.json per candidate (a slot returns at most 8 files; w160's weights are 47 MB, over
# the 16 MiB a file may have, so no weights come back). Needs .gpu/ from gpu_wheels.sh + gpu_train_prepare.py.
#   run(command="bash scripts/gpu_width_probe.sh $OUT", carry=[".gpu/wheels", ".gpu/holdout",
#       ".gpu/train-crops", ".gpu/train-crops.json"], timeout_s=590)
# Dry run here: DEVICE=cpu BATCH=2 WORKERS=0 MAX_VAL=1 bash scripts/gpu_width_probe.sh /tmp/wp 30 w96
#
# Transform capacity of the default model (session 22): both arms start from the shipped hpcm-small-vr,
# the wider one through `hpcm widen` (the same function, new channels unused), with gpu_train.sh's warm-up:
#   run(command="INIT=widen:hpcm-small-vr LR=5e-5 WARMUP=300 bash scripts/gpu_width_probe.sh $OUT 420
#       small small_g384", carry=[...as above...], timeout_s=590)
# INIT (default none: initial weights) and WARMUP (default 0) go to every arm's gpu_train.sh.
set -uo pipefail
OUT=${1:?usage: gpu_width_probe.sh OUT [SECONDS] [CANDIDATE ...]}
LIMIT=${2:-420}
shift $(($# < 2 ? $# : 2))
CANDIDATES=("$@")
[ ${#CANDIDATES[@]} -eq 0 ] && CANDIDATES=(w96 w128 w160)
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.."
pids=()
for c in "${CANDIDATES[@]}"; do
  rm -rf "/tmp/probe-$c"
  MODEL="width_probe:$c" RUN_DIR="/tmp/probe-run-$c" WARMUP=${WARMUP:-0} WORKERS=${WORKERS:-4} \
    bash scripts/gpu_train.sh "/tmp/probe-$c" "${INIT:-none}" "$LIMIT" > "/tmp/probe-$c.console" 2>&1 &
  pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
for c in "${CANDIDATES[@]}"; do
  if ls "/tmp/probe-$c"/bundle.tar.part-* >/dev/null 2>&1; then  # large weights: gpu_train.sh bundled all
    cat "/tmp/probe-$c"/bundle.tar.part-* | tar -x -C "/tmp/probe-$c" holdout.json 2>/dev/null
  fi
  for f in summary.md holdout.json; do
    [ -f "/tmp/probe-$c/$f" ] && cp "/tmp/probe-$c/$f" "$OUT/$c-$f"
  done
  echo "== $c"; grep -E "steps|crops seen|images/s" "/tmp/probe-$c/summary.md" 2>/dev/null | head -5
  tail -n 3 "/tmp/probe-$c.console"
done
echo "gpu_width_probe: exit $rc; $OUT: $(ls "$OUT" | tr '\n' ' ')"
exit "$rc"
