# Sourced by scripts/gpu_check.sh and scripts/gpu_train.sh (not run on its own): the start of every command
# on a bare GPU machine. Prints the Python version and the GPU, installs each carried wheel on its own into
# $SITE (a missing one costs only what needs it) and puts it and src/ on PYTHONPATH.
#
#   PY      the interpreter (default: $PYTHON, else python3)
#   WHEELS  the carried wheels (default: $HPCM_GPU_WHEELS, else .gpu/wheels, made by scripts/gpu_wheels.sh)
#   SITE    where they are installed (default: $HPCM_GPU_SITE, else /tmp/hpcm-gpu-site)
# Call from the repository root.
PY=${PY:-${PYTHON:-python3}}
WHEELS=${WHEELS:-${HPCM_GPU_WHEELS:-.gpu/wheels}}
SITE=${SITE:-${HPCM_GPU_SITE:-/tmp/hpcm-gpu-site}}
export PYTHONUNBUFFERED=1

hpcm_gpu_env() {
  local tag=${1:-gpu}
  echo "$tag: python $("$PY" -c 'import sys; print(sys.version.split()[0], sys.executable)')"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  if [ -d "$WHEELS" ] && ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    mkdir -p "$SITE"
    for pkg in constriction pytorch-msssim bjontegaard; do
      if "$PY" -c "import importlib.metadata as m, sys; m.version(sys.argv[1])" "$pkg" 2>/dev/null; then
        echo "$tag: $pkg already installed"
      elif "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
          --target "$SITE" --find-links "$WHEELS" "$pkg" 2>&1 | tail -2; then
        echo "$tag: installed $pkg from $WHEELS"
      fi
    done
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  else
    echo "$tag: no wheels in $WHEELS; using what is installed"
  fi
  export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
}
