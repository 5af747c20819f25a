#!/usr/bin/env bash
# The GPU figures of the performance issue, in the order of its "What it must show".
# Each command writes its JSON (numbers, device, versions, command) and a log under
# benchmarks/results/; copy the tables into benchmarks/RESULTS.md. Nothing here is estimated.
set -euo pipefail
cd "$(dirname "$0")/.."
R=benchmarks/results
mkdir -p "$R"
# 1. ViViT-B/16x2, 32 frames, 224 px: every variant, eager and compiled, fp32 and bf16,
#    inference and training, batch 1 and 8, beside transformers' Vivit (every attention
#    implementation that runs), with MFU against the measured bf16 matmul rate.
python benchmarks/throughput.py --device cuda --backbones b --frames 32 --size 224 --batch 1,8 \
    --dtype bf16,fp32 --mode infer,train --compile off,on \
    --out "$R/throughput_cuda.json" 2>&1 | tee "$R/throughput_cuda.log"
# 2. Frame scaling 8-128 and the largest frame count at batch 1 and 8 (out-of-memory search).
python benchmarks/frame_scaling.py --device cuda --backbone b --size 224 --frames 8,16,32,64,128 \
    --dtype bf16 --mode infer,train --batch-ceilings 1,8 \
    --out "$R/frame_scaling_cuda.json" 2>&1 | tee "$R/frame_scaling_cuda.log"
# 3. The fused-kernel tests (they skip without CUDA).
python -m pytest tests/models/test_performance_options.py -q 2>&1 | tee "$R/kernel_tests_cuda.log"
