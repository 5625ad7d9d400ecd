#!/usr/bin/env bash
# GPU check for one lent H100/H200, about 5 minutes: training speed next to NVlabs' figures, plus
# the numerics that only a GPU can show (host syncs in augment/ADA, bf16 precision policy).
#
# The device image has torch 2.11 + accelerate (and numpy, pillow, pyyaml, fsspec, safetensors,
# torchmetrics, scikit-learn, tqdm) but not kornia, kornia_rs, webdataset, braceexpand, mlflow or
# deepspeed. The trainer imports neither mlflow nor deepspeed unless asked (tracking and the
# deepspeed backend stay off here). Prepare the wheels once, here, in the repository root (7 MB):
#   echo /.whl/ >> "$(git rev-parse --git-path info/exclude)"
#   .venv/bin/pip wheel --no-deps -w .whl kornia==0.9.0 webdataset==1.0.2 braceexpand==0.1.7
#   .venv/bin/python -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux2014_x86_64 -d .whl kornia_rs==0.2.0
# then run it with the device tool: command `bash benchmarks/gpu_check.sh`, carry [".whl"],
# timeout_s 560. Full logs land in $OUT (they come back with the reply); the table is printed last.
#
# Dry run on a CPU machine (checks the script itself, tiny configs, no GPU numbers):
#   GPU_CHECK_DRY=1 OUT=/tmp/gpu-check bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-check}
DRY=${GPU_CHECK_DRY:-0}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
RESULTS="$OUT/steps.tsv"
: >"$RESULTS"
export PYTHONUNBUFFERED=1

if [ -d .whl ] && [ "$DRY" != 1 ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || { echo "FATAL: installing .whl failed"; exit 2; }
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi

# step NAME TIMEOUT_S COMMAND...: run with a time limit, log to $OUT/NAME.log, record the status;
# a failing step never stops the later ones.
step() {
  local name=$1 limit=$2
  shift 2
  echo "== $name (limit ${limit}s) =="
  local start=$SECONDS rc=0
  timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1 || rc=$?
  local status=ok
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then status="timeout"; elif [ "$rc" != 0 ]; then status="exit $rc"; fi
  printf '%s\t%s\t%ss\n' "$name" "$status" "$((SECONDS - start))" >>"$RESULTS"
  grep -E '^\||^# ' "$OUT/$name.log" || tail -n 5 "$OUT/$name.log"
}

"$PY" - <<'EOF' | tee "$OUT/env.txt"
import torch, kornia, webdataset, accelerate
print("torch", torch.__version__, "cuda", torch.version.cuda, "kornia", kornia.__version__,
      "accelerate", accelerate.__version__)
print("device", torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")
EOF
if [ "$DRY" != 1 ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv | tee -a "$OUT/env.txt"
fi

if [ "$DRY" = 1 ]; then
  # the script's flow only: eager at a quarter tick (bench_train.py itself covers compiled on CPU)
  CONFIGS_A=cpu16; CONFIGS_B=cpu16; MODES=eager; PREC=no; RUN_LIMIT=900; STEP_LIMIT=1000
  EXTRA="--tick-scale 0.25 --threads 1"
else
  CONFIGS_A=cifar32; CONFIGS_B=auto256; MODES=eager,compiled; PREC=bf16; RUN_LIMIT=170
  STEP_LIMIT=240; EXTRA=""  # worst case ~20 + 120 + 2 x 240 s
fi
WORK=/tmp/gpu-check-work  # runs stay outside $OUT: only 8 files come back from it
rm -rf "$WORK"

# 1. Numerics on the device (seconds): no host sync in augment + ADA update (CUDA's sync debug
#    mode raises on any), R1 through ADA, whether this torch has grid_sample's own double backward.
step numerics 120 "$PY" - <<'EOF'
import os

import torch
from training.augment import AdaController, AugmentConfig, augment
from training.losses import r1_penalty
from training.networks import ModelConfig, build_networks, set_precision

dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
res = 16 if os.environ.get("GPU_CHECK_DRY") == "1" else 64  # a dry run on a CPU: small
ada = AdaController(target=0.6, ada_kimg=1.0, p=0.3, device=dev)
cfg = AugmentConfig(mode="ada", pipeline="bgccutout")
images = (torch.rand(16, 3, res, res, device=dev) * 2 - 1).requires_grad_(True)
augment(images, cfg, ada.p).sum().backward()  # warm-up: cached filter taps are copied once
if dev.type == "cuda":
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
out = augment(images, cfg, ada.p)
ada.accumulate(out.mean(dim=[1, 2, 3])[:, None])
ada.update(ada.pending())
out.square().sum().backward()
if dev.type == "cuda":
    torch.cuda.set_sync_debug_mode("default")
print("# host syncs in augment + ADA update: none (sync debug mode 'error' passed)")
model = ModelConfig(map_depth=2, channel_base=4096, channel_max=128, num_fp16_res=4)
d = build_networks(model, res, 3, 0)[1].to(dev)
reals = (torch.rand(8, 3, res, res, device=dev) * 2 - 1).requires_grad_(True)
for precision in ("no", "bf16"):
    set_precision(d, precision)
    logits = d(augment(reals, cfg, torch.full([], 0.6, device=dev)), None)
    (r1_penalty(logits, reals) * 5).backward()
    print(f"# R1 through ADA, D {precision}: logits {logits.dtype}, grad finite",
          all(torch.isfinite(p.grad).all().item() for p in d.parameters() if p.grad is not None))
x = torch.randn(1, 1, 5, 5, device=dev, requires_grad=True)
w = torch.randn(1, 1, 5, 5, device=dev, requires_grad=True)
grid = torch.rand(1, 5, 5, 2, device=dev) * 2 - 1
try:
    y = torch.nn.functional.grid_sample(x, grid, align_corners=False)
    (gx,) = torch.autograd.grad((y * w).square().sum(), x, create_graph=True)
    gx.square().sum().backward()
    print(f"# torch {torch.__version__}: native grid_sample double backward: yes")
except RuntimeError as exc:
    print(f"# torch {torch.__version__}: native grid_sample double backward: no ({exc})")
EOF

# 2. Training speed through the real trainer (`ganforge train`), eager vs compiled, ADA on.
step speed_small "$STEP_LIMIT" "$PY" benchmarks/bench_train.py --configs "$CONFIGS_A" \
  --modes "$MODES" --precision "$PREC" --ticks 3 --skip 1 --timeout "$RUN_LIMIT" \
  --work "$WORK" $EXTRA
if [ "$DRY" != 1 ]; then
  step speed_256 "$STEP_LIMIT" "$PY" benchmarks/bench_train.py --configs "$CONFIGS_B" \
    --modes "$MODES" --precision "$PREC" --ticks 3 --skip 1 --timeout "$RUN_LIMIT" \
    --work "$WORK"
fi

echo
echo "== summary =="
printf 'step\tstatus\ttime\n'
cat "$RESULTS"
echo
echo "| config | mode | precision | batch | s/kimg (median) | min-max | timed ticks | first tick | wall s | NVlabs H100 (CUDA ops) | goal |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
grep -h -E '^\| (cpu|cifar|auto)' "$OUT"/speed_*.log || echo "| (no speed rows: see $OUT/speed_*.log) |"
grep -h -E '^# ' "$OUT/numerics.log" || true
