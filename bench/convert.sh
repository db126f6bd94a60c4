#!/usr/bin/env bash
# Issue 15, target 5: dequantisation per block type (GB/s of Float32 output per core, random blocks) and a whole
# `convert` of a ~680 M-parameter Q4_K_M-style GGUF (random blocks, SmolLM2's metadata and tokenizer) at 1 and 2
# threads, with wall, user and system seconds and the output bytes per wall second.
# Usage: bench/convert.sh [--keep]   (the 440 MB GGUF and the 1.4 GB output go to a temporary folder)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/openblas-env.sh
swift build -c release --product prune-dist-bench >&2
swift build -c release --product prune-dist >&2
source="${PRUNE_DIST_SHARED:-../shared}/models/SmolLM2-135M-Instruct.Q4_1.gguf"
work="$(mktemp -d)"
[ "${1:-}" = "--keep" ] || trap 'rm -rf "$work"' EXIT
.build/release/prune-dist-bench dequantize
.build/release/prune-dist-bench make-gguf "$source" "$work/large.gguf" --layers 24 --hidden 1536 --ffn 4096 --heads 12 --kv-heads 4
for threads in 1 2; do
  /usr/bin/time -f "%e %U %S %M" -o "$work/time" .build/release/prune-dist convert --gguf "$work/large.gguf" --out "$work/out-$threads" \
    --threads "$threads" --log-level error > /dev/null
  read -r wall user sys rss < "$work/time"
  bytes=$(du -sb "$work/out-$threads" | cut -f1)
  printf 'convert --threads %d: %6.2f s wall, %5.2f s user, %5.2f s system, peak RSS %4d MB, %.2f GB/s of bf16 output\n' \
    "$threads" "$wall" "$user" "$sys" $((rss / 1024)) "$(echo "$bytes / $wall / 1000000000" | bc -l)"
done
cmp -s "$work/out-1/model.safetensors" "$work/out-2/model.safetensors" && echo "same bytes at 1 and 2 threads" || echo "DIFFERENT bytes at 1 and 2 threads"
