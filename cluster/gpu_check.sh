#!/usr/bin/env bash
# The CUDA paths (teacher services on a GPU, two 0.5-GPU teachers on one GPU, AMP bf16 and
# fp16 training steps, one distillation step), for a machine with an NVIDIA GPU:
#   bash cluster/gpu_check.sh
# They are skipped, and reported as such, by the normal test run on machines without one.
set -euo pipefail
cd "$(dirname "$0")/.."
uv run --locked python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'torch sees no CUDA device')"
# --tier all: the unit tier's GPU tests and the CI tier's (on the shared Ray)
exec uv run --locked pytest --tier all -m gpu -v tests/test_gpu.py tests/e2e/test_training.py
