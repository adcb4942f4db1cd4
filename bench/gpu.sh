#!/usr/bin/env bash
# Issue 17's GPU benchmark run, prepared to fit 10 minutes on one GPU, in one call:
#
#     bash bench/gpu.sh [OUT_DIR]          # on a machine with robustlab installed and a CUDA GPU
#     DEVICE=cpu BATCH=16 bash bench/gpu.sh  # the same commands on the CPU, as a dry run
#
# Prints the GPU, then bench/attacks.py with robustlab's ResNet-18 on random 3x32x32 images at batch $BATCH
# (default 512; PGD-10, CW, bf16-autocast and torch.compile rows, quick sizes for the MNIST rows) and
# bench/defenses.py --quick on trainer=gpu. Each log also goes to OUT_DIR (default bench-gpu/).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-bench-gpu}"
device="${DEVICE:-cuda}"
mkdir -p "$out"
export WANDB_MODE=offline PYTHONUNBUFFERED=1
if [ "$device" = cuda ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
    trainer=gpu
else
    trainer=cpu
fi
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$out/gpu.txt"
timeout 360 python bench/attacks.py --device "$device" --model resnet18 --batch "${BATCH:-512}" --quick --compile \
    2>&1 | tee "$out/attacks.txt"
timeout 200 python bench/defenses.py --quick --trainer "$trainer" 2>&1 | tee "$out/defenses.txt"
