#!/usr/bin/env bash
# Train, export, evaluate and install the bundled hpcm-tiny models (qualities 1..5; q1 since session 4).
# Usage: bash experiments/bundled_models.sh train   # starts/resumes the runs (1 thread each) in runs/
#        bash experiments/bundled_models.sh stop    # SIGTERM: each run saves checkpoint_last and exits
#        bash experiments/bundled_models.sh finish  # export last checkpoints, evaluate on Kodak, then `report`
#        bash experiments/bundled_models.sh report  # BD-rates (PSNR, MS-SSIM) and RD plot from the eval JSON
#        bash experiments/bundled_models.sh install "NOTE"  # copy the exports into src/hpcm/weights (+ SHA256SUMS)
# Environment:
#   LR=3e-5        resume with another learning rate (the final decay).
#   QUALITIES="4"  act on some levels only (default: 1 2 3 4 5).
#   NPROC=2        train each run with torchrun over NPROC processes (DDP on CPU, gloo; --batch-size stays
#                  per process, so the step holds NPROC x 8 crops). Session 3 trained the q4 run this way.
#   INIT_FROM=PATH start runs that have no checkpoint yet from PATH (%q is replaced by the quality), e.g.
#                  INIT_FROM=src/hpcm/weights/hpcm-tiny-q%q.safetensors (the shipped weights; Adam state is
#                  not shipped) or INIT_FROM=runs/tiny-q4/checkpoint_last.safetensors (fine-tune every level
#                  from one base run, as session 3 did). INIT_FROM=1 means the shipped weights.
set -euo pipefail
cd "$(dirname "$0")/.."
HPCM=.venv/bin/hpcm
KODAK=../shared/data/kodak
QUALITIES=${QUALITIES:-"1 2 3 4 5"}
LR=${LR:-3e-4}
case "${1:-}" in
  train)
    mkdir -p runs
    for q in $QUALITIES; do
      resume=(); [ -f "runs/tiny-q$q/checkpoint_last.safetensors" ] && resume=(--resume)
      init=()
      if [ -n "${INIT_FROM:-}" ] && [ ${#resume[@]} -eq 0 ]; then
        src=$INIT_FROM; [ "$src" = 1 ] && src=src/hpcm/weights/hpcm-tiny-q%q.safetensors
        init=(--init-from "${src//%q/$q}")
      fi
      launch=("$HPCM")
      [ "${NPROC:-1}" -gt 1 ] && launch=(.venv/bin/torchrun --standalone --nproc_per_node="$NPROC" -m hpcm)
      OMP_NUM_THREADS=1 nohup "${launch[@]}" train --model hpcm-tiny --data ../shared/data/train --val "$KODAK" \
        --max-val-images 4 --out "runs/tiny-q$q" --steps 100000 --batch-size 8 --patch-size 128 --quality "$q" \
        --lr "$LR" --downscale-prob 0.5 --val-every 400 --save-every 200 --log-every 20 --num-workers 1 --seed 0 \
        --no-progress "${resume[@]}" "${init[@]}" > "runs/tiny-q$q.log" 2>&1 &
    done ;;
  stop)
    # SIGTERM to each training process (with NPROC>1: each torchrun rank; not the data-loader workers, which
    # are children of a training process): each saves checkpoint_last and exits
    for q in $QUALITIES; do
      pids=$(pgrep -f -- "--out runs/tiny-q$q " || true)
      for p in $pids; do
        parent=$(ps -o ppid= -p "$p" | tr -d ' ')
        if ps -o args= -p "$p" | grep -q torchrun; then continue; fi
        if grep -qw -- "$parent" <<<"$pids" && ! ps -o args= -p "$parent" | grep -q torchrun; then continue; fi
        kill -TERM "$p"
      done
    done ;;
  finish)
    mkdir -p docs/results
    specs=()
    for q in $QUALITIES; do
      "$HPCM" export "runs/tiny-q$q/checkpoint_last.safetensors" -o "runs/tiny-q$q.safetensors" --force
      specs+=("runs/tiny-q$q.safetensors")
    done
    "$HPCM" eval "${specs[@]}" "$KODAK" --name hpcm-tiny -o docs/results/hpcm-tiny-kodak.json
    bash "$0" report ;;
  report)
    {
      "$HPCM" bdrate ../shared/anchors/kodak/jpeg.json docs/results/hpcm-tiny-kodak.json \
        ../shared/anchors/kodak/webp.json ../shared/anchors/kodak-measured/pillow-webp.json \
        ../shared/anchors/kodak-measured/pillow-avif444.json
      echo "# the same without the lowest level (BD-rate depends on the overlapping range; see docs/results)"
      "$HPCM" bdrate ../shared/anchors/kodak/jpeg.json docs/results/hpcm-tiny-kodak.json -q 2,3,4,5
      "$HPCM" bdrate ../shared/anchors/kodak-measured/pillow-webp.json docs/results/hpcm-tiny-kodak.json -q 2,3,4,5
      echo
      "$HPCM" bdrate ../shared/anchors/kodak/webp.json docs/results/hpcm-tiny-kodak.json
      echo
      "$HPCM" bdrate ../shared/anchors/kodak-measured/pillow-webp.json docs/results/hpcm-tiny-kodak.json
      echo
      "$HPCM" bdrate -m ms-ssim ../shared/anchors/kodak/jpeg.json docs/results/hpcm-tiny-kodak.json \
        ../shared/anchors/kodak-measured/pillow-webp.json
      echo
      "$HPCM" bdrate -m ms-ssim ../shared/anchors/kodak-measured/pillow-webp.json docs/results/hpcm-tiny-kodak.json
    } | tee docs/results/hpcm-tiny-bdrate.txt
    "$HPCM" plot docs/results/hpcm-tiny-kodak.json ../shared/anchors/kodak-measured/pillow-webp.json \
      ../shared/anchors/kodak-measured/pillow-avif444.json --select jpeg webp bpg_444_x265_ycbcr vtm \
      'compressai-bmshj2018*' 'compressai-mbt2018-mean*' -m both -o docs/results/hpcm-tiny-rd.png ;;
  install)
    [ -n "${2:-}" ] || { echo "usage: $0 install NOTE" >&2; exit 2; }
    files=(); for q in $QUALITIES; do files+=("runs/tiny-q$q.safetensors"); done
    .venv/bin/python experiments/install_weights.py "${files[@]}" --note "$2" ;;
  *) echo "usage: $0 train|stop|finish|report|install NOTE" >&2; exit 2 ;;
esac
