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
BUDGET=${HPCM_GPU_BUDGET:-450}
# shellcheck source=scripts/gpu_env.sh
source scripts/gpu_env.sh
hpcm_gpu_env gpu_check
# the official HPCM code, when carried (docs/gpu.md): build its rANS extension for this machine's Python
OFF=${HPCM_OFFICIAL_DIR:-.gpu/official}/src/entropy_models
if [ -d "$OFF" ] && ! ls "$OFF"/_CXX*.so >/dev/null 2>&1; then
  (cd "$OFF/entropy_coders/unbounded_rans" && timeout 120 "$PY" setup.py build_ext --inplace >/tmp/official-build.log 2>&1 \
    && cp ./*.so ../../) && echo "gpu_check: official rANS extension built" \
    || echo "gpu_check: official rANS extension not built: $(tail -3 /tmp/official-build.log)"
fi
timeout -k 10 $((BUDGET + 40)) "$PY" benchmarks/gpu_suite.py --out "$OUTDIR" --budget "$BUDGET" "$@"
rc=$?
[ $rc -eq 124 ] && echo "gpu_check: the suite overran its budget and was killed; partial results are in $OUTDIR"
echo "gpu_check: exit $rc; $(ls "$OUTDIR" | tr '\n' ' ')"
exit $rc
