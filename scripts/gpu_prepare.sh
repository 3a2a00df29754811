#!/usr/bin/env bash
# Prepare the folder .gpu/ (ignored by git) that a GPU run carries: wheels, two Kodak images, provenance.
#
#   bash scripts/gpu_prepare.sh [KODAK_DIR]     # default ../shared/data/kodak
# then, with the device tool:  run(command="bash scripts/gpu_check.sh $OUT", carry=[".gpu"], timeout_s=600)
# Optional: put a checkout of the official HPCM code at .gpu/official (never commit it) for the side-by-side
# timing of HPCM-Base (see docs/gpu.md).
set -euo pipefail
cd "$(dirname "$0")/.."
KODAK=${1:-../shared/data/kodak}
[ -d "$KODAK" ] || KODAK=/work/shared/data/kodak
bash scripts/gpu_wheels.sh
mkdir -p .gpu/data/kodak
for name in kodim23.png kodim01.png; do
  if [ -f "$KODAK/$name" ]; then
    cp -f "$KODAK/$name" .gpu/data/kodak/
  else
    echo "gpu_prepare: $KODAK/$name not found (the suite then uses a synthetic 768x512 image)" >&2
  fi
done
{
  echo "prepared: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
  echo "branch: $(git rev-parse --abbrev-ref HEAD 2>/dev/null || echo unknown)"
  echo "dirty files: $(git status --porcelain 2>/dev/null | grep -cv '^??' || true)"
} > .gpu/source.txt
cat .gpu/source.txt
echo "gpu_prepare: .gpu holds $(du -sh .gpu | cut -f1); tracked + untracked files travel too:"
git ls-files -z --cached --others --exclude-standard | du -ch --files0-from=- 2>/dev/null | tail -1
