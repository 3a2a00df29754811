#!/usr/bin/env bash
# The phase study's training arms on this 2-core CPU (issue 20 item 1/3), resumable across sessions:
#
#   bash experiments/phase_cpu.sh speed            # CPU seconds per step of every arm (raw speed.json)
#   bash experiments/phase_cpu.sh run              # train (2 runs side by side, 1 thread each), export, Kodak, report
#   bash experiments/phase_cpu.sh report           # only regenerate docs/results/phase_study.md (same STEPS/SCHEDULE)
#   STEPS=1000 SCHEDULE=500 bash experiments/phase_cpu.sh run   # extend every run to 1000 steps (--resume)
#        keeping session 10's milestones (50, 150, 400): 1e-5 from step 400 on, so the convergence window
#        (the last 20 % of steps) runs at one learning rate
#
# Same arms, seeds and schedule shape as scripts/gpu_phase.sh (one variable-rate model per arm, warm start from
# the shipped hpcm-tiny-vr, fresh Adam with a warm-up to 1e-4, 1e-5 over the last 20 %), at batch 8 and on the
# full training folder with the 16 held-out images of every CPU run (never Kodak). The milestones are 10 / 30 /
# 80 % of SCHEDULE (default STEPS); the report records the settings of the last call.
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${STEPS:-500}
SCHEDULE=${SCHEDULE:-$STEPS}
MILESTONES=("$((SCHEDULE / 10)):3e-5" "$((SCHEDULE * 3 / 10)):1e-4" "$((SCHEDULE * 8 / 10)):1e-5")
COMMON=(--variants hpcm-tiny hpcm-phase1-tiny hpcm-phase2-tiny hpcm-phase3-tiny hpcm-phase4-tiny
        hpcm-multiref-phase2-tiny --seeds 1 2 --variable-rate --qualities 1 2 3 4 5 6 7 8
        --steps "$STEPS" --batch-size "${BATCH:-8}" --patch-size 256 --lr 1e-5 --lr-milestones "${MILESTONES[@]}"
        --downscale-prob 0.5 --val-holdout 16 --val-every "$((STEPS / 5))"
        --init-from src/hpcm/weights/hpcm-tiny-vr.safetensors --jobs "${JOBS:-2}" --threads 1 --num-workers 1
        --device cpu --out "${OUT:-runs/phase_cpu}" --report docs/results/phase_study.md)
case "${1:-}" in
  speed) OMP_NUM_THREADS=1 .venv/bin/python experiments/phase_study.py "${COMMON[@]}" --measure-speed "${SPEED_STEPS:-3}" \
           --speed-note "${NOTE:-}" ;;
  run) OMP_NUM_THREADS=1 .venv/bin/python experiments/phase_study.py "${COMMON[@]}" --resume ;;
  report) .venv/bin/python experiments/phase_study.py "${COMMON[@]}" --report-only ;;
  *) echo "usage: $0 speed|run|report" >&2; exit 2 ;;
esac
