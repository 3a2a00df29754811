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
# the other 22 Kodak images for the cross-device check (issue 16), as lossless WebP (10.7 of 14.7 MiB)
"${PYTHON:-.venv/bin/python}" - "$KODAK" .gpu/data/kodak <<'PY'
import sys
from pathlib import Path

import numpy as np
from PIL import Image

src, dst = Path(sys.argv[1]), Path(sys.argv[2])
for p in sorted(src.glob("kodim*.png")):
    if (dst / p.name).exists() or (dst / (p.stem + ".webp")).exists():
        continue
    img = Image.open(p).convert("RGB")
    tmp = dst / (p.stem + ".tmp.webp")
    img.save(tmp, "WEBP", lossless=True, quality=100, method=4)
    assert np.array_equal(np.asarray(Image.open(tmp).convert("RGB")), np.asarray(img)), p
    tmp.replace(dst / (p.stem + ".webp"))
PY
# the official HPCM code, if fetched (docs/gpu.md): sources only, its prebuilt CPython 3.8 binaries left out
MIRROR=${HPCM_OFFICIAL_MIRROR:-/work/.mirror/lyq133+LIC-HPCM/repo}
if [ ! -d .gpu/official ] && [ -d "$MIRROR" ]; then
  mkdir -p .gpu/official
  git --git-dir="$MIRROR" archive HEAD src | tar -x -C .gpu/official
  find .gpu/official -name '*.so' -delete
  rm -rf .gpu/official/src/entropy_models/entropy_coders/unbounded_rans/build
  echo "official: $(git --git-dir="$MIRROR" rev-parse HEAD)" > .gpu/official/SOURCE
fi
{
  echo "prepared: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
  echo "branch: $(git rev-parse --abbrev-ref HEAD 2>/dev/null || echo unknown)"
  echo "dirty files: $(git status --porcelain 2>/dev/null | grep -cv '^??' || true)"
} > .gpu/source.txt
cat .gpu/source.txt
echo "gpu_prepare: .gpu holds $(du -sh .gpu | cut -f1); tracked + untracked files travel too:"
git ls-files -z --cached --others --exclude-standard | du -ch --files0-from=- 2>/dev/null | tail -1
