#!/usr/bin/env bash
# Quickstart main job: set up, then compress and decompress one Kodak image.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/hpcm demo "${1:-../shared/data/kodak/kodim23.png}"
