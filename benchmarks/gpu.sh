#!/usr/bin/env bash
# GPU against CPU (under 8 minutes): one warm solve and sweeps of 256, 4 096 and 65 536 instances; writes
# benchmarks/GPU.md. Needs jax with CUDA (pip install -U "jax[cuda12]") on the machine with the GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m benchmarks.gpu --budget 360 "$@"
