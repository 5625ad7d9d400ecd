#!/usr/bin/env bash
# GPU check for a lent GPU machine (H100/H200), sized to finish in ~5 minutes.
#
# Prepare the wheels here first (the device image has torch + accelerate only):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl kornia kornia_rs webdataset braceexpand torchmetrics lightning-utilities
#   .venv/bin/pip wheel --no-deps --no-build-isolation -w .whl deepspeed
# then run it with the device tool: command `bash benchmarks/gpu_check.sh`, carry [".whl"].
#
# It prints: (1) bench_train.py on cifar32 and auto256 (ADA on, bf16), eager and compiled;
# (2) one short run each of the default backend (DDP-style) and DeepSpeed ZeRO-2 + bf16 on the
# StyleGAN2 config through the real trainer, with s/kimg and peak memory from the tick lines.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu-check}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

echo "== 1. trainer step benchmark (bf16, ADA on) =="
timeout 150 python3 benchmarks/bench_train.py --configs cifar32,auto256 --steps 30 --warmup 8 --precision bf16 \
  2>&1 | tee "$OUT/bench_eager.txt" | grep -E '^\||^#'
timeout 150 python3 benchmarks/bench_train.py --configs cifar32 --steps 30 --warmup 15 --precision bf16 --compile \
  2>&1 | tee "$OUT/bench_compile.txt" | grep -E '^\||^#'

echo "== 2. short runs through the trainer: DDP-style vs DeepSpeed ZeRO-2 (bf16) =="
WORK=/tmp/gpu-work; rm -rf "$WORK"
python3 -m pipeline.cli prep --source digits --out "$WORK/digits32" --resolution 32 --no-progress >/dev/null
for backend in ddp deepspeed; do
  timeout 90 python3 -m pipeline.cli train --preset cifar --set work_dir=$WORK --set name=$backend \
    --set data.manifest=$WORK/digits32 --set model.conditional=false --set tracking.enabled=false \
    --set train.backend=$backend --set train.zero_stage=2 --set train.mixed_precision=bf16 \
    --set train.total_kimg=6 --set train.tick_kimg=1 --set train.checkpoint_ticks=0 --set train.snapshot_ticks=0 \
    --set eval.at_end=false 2>&1 | tee "$OUT/run_$backend.txt" | grep -E '^tick|^done|rror' | tail -n 4
done
echo "== done =="
