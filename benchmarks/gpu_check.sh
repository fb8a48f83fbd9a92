#!/usr/bin/env bash
# The GPU check in one command (on the GPU machine, from the repository root or anywhere):
#     bash benchmarks/gpu_check.sh --require-gpu   # tests, step time vs PyTorch, CIFAR-10 training
#     bash benchmarks/gpu_check.sh --dry-run       # the same stages, tiny, on the CPU
# Installs nothing. Runs $PYTHON (default python3). Needs .gpu_data/cifar10-jpeg.tar.gz
# (git-ignored: copy ../shared/data/cifar10-jpeg.tar.gz there and carry .gpu_data to the GPU
# machine). CuPy's compiled kernels are cached in .gpu_data/cupy-cache (carried there and
# copied back to $OUT, so a second run skips compiling). Logs, summary.json (rewritten after
# every stage) and the trained checkpoint go to $OUT when set. See benchmarks/gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
export CUPY_CACHE_DIR="${CUPY_CACHE_DIR:-$PWD/.gpu_data/cupy-cache}"
mkdir -p "$CUPY_CACHE_DIR"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
    --format=csv,noheader || true
exec "$PYTHON" benchmarks/gpu_check.py "$@"
