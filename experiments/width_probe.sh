#!/usr/bin/env bash
# Width probe (issue 18 item 2): candidates of experiments/width_probe.py trained from scratch side by side,
# one thread each, for the same wall time, at one high quality (--quality 7: λ 0.0932 of the variable-rate anchors), validated
# on the 16 held-out training images every VAL_EVERY steps (runs/probe-<name>/metrics.jsonl).
#   bash experiments/width_probe.sh start [NAMES...]   # default: w96 w128 w160
#   bash experiments/width_probe.sh stop               # SIGTERM: each run saves its checkpoint and stops
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  start)
    shift
    for name in "${@:-w96 w128 w160}"; do
      for n in $name; do
        PYTHONPATH=experiments OMP_NUM_THREADS=1 nohup .venv/bin/hpcm train --model "width_probe:$n" \
          --data ../shared/data/train --out "runs/probe-$n" --steps 100000 --batch-size 8 --patch-size 256 \
          --quality 7 --val-holdout 16 --val-every "${VAL_EVERY:-250}" --save-every 50 --log-every 25 \
          --num-workers 1 --lr 1e-4 --downscale-prob 0.5 --seed 0 --no-progress > "runs/probe-$n.log" 2>&1 &
      done
    done ;;
  stop)  # only the main processes: a data-loader worker killed first would crash the run before it saves
    for pid in $(pgrep -f "hpcm train --model width_probe:"); do
      parent=$(ps -o ppid= -p "$pid" | tr -d ' ')
      tr "\0" " " < "/proc/$parent/cmdline" 2>/dev/null | grep -q "hpcm train" || kill -TERM "$pid"
    done ;;
  *) echo "usage: $0 start [NAMES...] | stop" >&2; exit 2 ;;
esac
