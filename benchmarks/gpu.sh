#!/usr/bin/env bash
# GPU against CPU (under 8 minutes): one warm solve and sweeps of 256, 4 096 and 65 536 instances; writes
# benchmarks/GPU.md. Needs jax with CUDA on the machine with the GPU (pip install -U "jax[cuda12]"; the lent
# machines' image has it, for `python3`), and linnet's other dependencies; linnet itself runs from this checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$(command -v python3 || command -v python)}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c "import jax; print('jax', jax.__version__, jax.devices())"
"$PY" -m benchmarks.gpu --budget 360 "$@"
