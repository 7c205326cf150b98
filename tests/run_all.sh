#!/usr/bin/env bash
# Every test of keras-infobal, as CI runs them (.ci/run is the install, then this script):
#   bash tests/run_all.sh            # about 25 minutes on 2 cores
# 1. the whole suite on TensorFlow, one process per core;
# 2. the slow tests (minutes each: the device check's CPU mode, long training checks);
# 3. the backend subset with oneDNN capped at AVX2 (the kernels of an AVX2-only CPU);
# 4-5. the backend subset on JAX and on PyTorch;
# 6. the declared dependency floors in a fresh environment (.ci/floors).
# What each part covers: docs/testing.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=3
part() {  # runs one part and says how long it took (CI keeps the whole under 30 minutes)
  local start=$SECONDS
  "$@"
  echo "run_all: $((SECONDS - start)) s for: $*"
}
part python -m pytest -q -n auto
part python -m pytest -q -n auto -m slow
part env ONEDNN_MAX_CPU_ISA=AVX2 python -m pytest -q -n auto -m backend
part env KERAS_BACKEND=jax python -m pytest -q -n auto -m backend
part env KERAS_BACKEND=torch python -m pytest -q -m backend
part bash .ci/floors
