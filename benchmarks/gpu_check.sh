#!/usr/bin/env bash
# The GPU check in one command (on the GPU machine, from the repository root or anywhere):
#     bash benchmarks/gpu_check.sh            # tests, step time vs PyTorch, CIFAR-10 training
#     bash benchmarks/gpu_check.sh --dry-run  # the same stages, tiny, on the CPU
# Needs .gpu_data/cifar10-jpeg.tar.gz (git-ignored: copy ../shared/data/cifar10-jpeg.tar.gz
# there and carry .gpu_data to the GPU machine). Logs and summary.json go to $OUT when set.
# See benchmarks/gpu_check.py for what each stage does.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
    --format=csv,noheader || true
exec python benchmarks/gpu_check.py "$@"
