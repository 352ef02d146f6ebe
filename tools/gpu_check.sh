#!/usr/bin/env bash
# On a machine with at least two GPUs: the GPU rows of the performance suite (mixed_float16 with
# loss scaling, XLA, which `--precision auto` and `--jit auto` pick on a GPU) and the
# multi-device correctness checks, whose replicas are then GPUs instead of logical CPUs.
# Usage: bash tools/gpu_check.sh [OUT_DIR]   (after the README's setup command)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/gpu-check}
gpus=$(.venv/bin/python -c "import tensorflow as tf; print(len(tf.config.list_physical_devices('GPU')))" 2>/dev/null)
if [ "$gpus" -lt 1 ]; then
  echo "tools/gpu_check.sh: no GPU visible to TensorFlow; nothing to check here" >&2
  exit 1
fi
.venv/bin/ssl3d info
# The suite measures float32 against mixed_float16 on a GPU; end-to-end rows use XLA (jit auto).
.venv/bin/ssl3d benchmark speed --out "$out/speed"
if [ "$gpus" -ge 2 ]; then
  # MirroredStrategy takes every visible GPU: show it exactly two, as the tests expect.
  CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0,1} .venv/bin/python -m pytest -q -p no:warnings \
    tests/training/test_strategy.py tests/ops/test_replicas.py tests/training/test_precision.py
else
  echo "one GPU: multi-GPU correctness checks skipped (they need two)" >&2
  .venv/bin/python -m pytest -q -p no:warnings tests/training/test_precision.py
fi
echo "GPU check done: $out/speed/speed.md"
