#!/usr/bin/env bash
# One prepared GPU run (issue 19): install the carried wheels, then run benchmarks/gpu_suite.py, which writes
# OUTDIR/results.json, OUTDIR/summary.md, OUTDIR/suite.log and OUTDIR/pytest_cuda.log.
#
#   bash scripts/gpu_check.sh OUTDIR [gpu_suite.py options]      e.g.  bash scripts/gpu_check.sh "$OUT"
#   bash scripts/gpu_check.sh /tmp/x --device cpu --quick         (the CPU dry run, under a minute)
#
# Run from anywhere; the repository is this script's parent folder. Carried wheels are looked up in
# $HPCM_GPU_WHEELS (default .gpu/wheels, made by scripts/gpu_prepare.sh). Each wheel is installed on its own, so a
# missing one costs only the suite sections that need it (they are skipped with the reason). The whole run
# is kept under $HPCM_GPU_BUDGET seconds (default 450) by the suite, and killed at that + 40 s regardless.
set -uo pipefail
OUTDIR=${1:?usage: gpu_check.sh OUTDIR [gpu_suite.py options]}
shift
cd "$(dirname "$0")/.."
mkdir -p "$OUTDIR"
PY=${PYTHON:-python3}
BUDGET=${HPCM_GPU_BUDGET:-450}
WHEELS=${HPCM_GPU_WHEELS:-.gpu/wheels}
SITE=${HPCM_GPU_SITE:-/tmp/hpcm-gpu-site}
export PYTHONUNBUFFERED=1

echo "gpu_check: python $("$PY" -c 'import sys; print(sys.version.split()[0], sys.executable)')"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
if [ -d "$WHEELS" ] && ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  mkdir -p "$SITE"
  for pkg in constriction pytorch-msssim bjontegaard; do
    if "$PY" -c "import importlib.metadata as m, sys; m.version(sys.argv[1])" "$pkg" 2>/dev/null; then
      echo "gpu_check: $pkg already installed"
    elif "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" --find-links "$WHEELS" "$pkg" 2>&1 | tail -2; then
      echo "gpu_check: installed $pkg from $WHEELS"
    fi
  done
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
else
  echo "gpu_check: no wheels in $WHEELS; using what is installed"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
timeout -k 10 $((BUDGET + 40)) "$PY" benchmarks/gpu_suite.py --out "$OUTDIR" --budget "$BUDGET" "$@"
rc=$?
[ $rc -eq 124 ] && echo "gpu_check: the suite overran its budget and was killed; partial results are in $OUTDIR"
echo "gpu_check: exit $rc; $(ls "$OUTDIR" | tr '\n' ' ')"
exit $rc
