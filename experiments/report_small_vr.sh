#!/usr/bin/env bash
# Kodak report of an hpcm-small-vr evaluation (after `bash experiments/small_vr.sh finish` and the shipping
# choice on the held-out images): the BD-rate table against the anchors issue 18 names, the previous shipped
# weights and hpcm-tiny-vr, and the RD plot with the anchors.
#   bash experiments/report_small_vr.sh STEP PREVIOUS_KODAK.json [KODAK.json]
# writes docs/results/hpcm-small-vr-stepSTEP-{kodak.json,bdrate.txt} and docs/results/hpcm-small-vr-rd.png.
set -euo pipefail
cd "$(dirname "$0")/.."
STEP=${1:?usage: $0 STEP PREVIOUS_KODAK.json [KODAK.json]}
PREV=${2:?usage: $0 STEP PREVIOUS_KODAK.json [KODAK.json]}
KODAK=${3:-runs/small-vr-kodak.json}
ANCHORS=../shared/anchors
OUT=docs/results/hpcm-small-vr-step$STEP
HPCM=.venv/bin/hpcm
STEPS=$(.venv/bin/python -c "print(f'{$STEP:,}')")  # 8335 -> 8,335
[ "$KODAK" -ef "$OUT-kodak.json" ] || cp "$KODAK" "$OUT-kodak.json"
{
  for anchor in "$ANCHORS/kodak/jpeg.json" "$ANCHORS/kodak-measured/pillow-webp.json" \
                "$ANCHORS/kodak-measured/pillow-avif444.json" docs/results/hpcm-tiny-vr-kodak.json "$PREV"; do
    "$HPCM" bdrate "$anchor" "$OUT-kodak.json"
  done
  echo "hpcm-small-vr after $STEPS CPU steps; last row: against $PREV (the weights it replaced)"
} > "$OUT-bdrate.txt"
cat "$OUT-bdrate.txt"
"$HPCM" plot "$OUT-kodak.json" docs/results/hpcm-tiny-vr-kodak.json "$ANCHORS/kodak-measured/pillow-webp.json" \
  "$ANCHORS/kodak-measured/pillow-avif444.json" --select jpeg paper-mbt2018-mean \
  -t "hpcm-small-vr step $STEPS (CPU) vs anchors, Kodak" -o docs/results/hpcm-small-vr-rd.png
