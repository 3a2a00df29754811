#!/usr/bin/env bash
# Download the wheels a bare GPU machine lacks into .gpu/wheels/ (ignored by git; carried to the machine).
#
# The GPU image has torch, triton, numpy, scipy, pillow, safetensors, numba, matplotlib, tqdm and pytest,
# but not constriction, pytorch-msssim or bjontegaard. Its Python version is only known once a command runs
# there (3.12 when last seen), so constriction (a compiled wheel) is fetched for every CPython in
# $GPU_PYTHONS; `pip install --find-links` on the machine then picks the one that fits. The versions are
# those installed in this venv (the coder's bit stream must not change between machines).
#
#   bash scripts/gpu_wheels.sh            # -> .gpu/wheels/*.whl, prints the total size
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=/work/main/.venv/bin/python
[ -x "$PY" ] || PY=python3
DEST=.gpu/wheels
GPU_PYTHONS=${GPU_PYTHONS:-"3.10 3.11 3.12 3.13"}
mkdir -p "$DEST"

version() {  # installed version of a distribution in this venv, or empty
  "$PY" -c "import importlib.metadata as m, sys
try: print(m.version(sys.argv[1]))
except m.PackageNotFoundError: pass" "$1"
}

fails=0
for pkg in constriction pytorch-msssim bjontegaard; do
  ver=$(version "$pkg")
  spec=$pkg${ver:+==$ver}
  for pyv in $GPU_PYTHONS; do
    if ! "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$pyv" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$DEST" "$spec" 2>/dev/null; then
      echo "gpu_wheels: no wheel of $spec for CPython $pyv (the suite skips what needs it there)" >&2
      fails=$((fails + 1))
    fi
  done
done
ls -1 "$DEST"
size=$(du -sk "$DEST" | cut -f1)
echo "gpu_wheels: $(ls -1 "$DEST" | wc -l) wheels, ${size} KiB in $DEST ($fails missing combinations)"
if [ "$size" -gt 16384 ]; then
  echo "gpu_wheels: WARNING: over 16 MiB; the whole carried tree must stay under 64 MiB" >&2
fi
exit 0
