#!/usr/bin/env bash
# Issue 15, target 6: a run that is all solve. A random-weight model of a 0.5 B-parameter shape (24 blocks, hidden
# 896, FFN 4864, 14/2 heads, BF16 N(0, 1/inputs) linears, SmolLM2's vocabulary and tokenizer; `prune-dist-bench
# make-gguf --gaussian`, then `convert`), pruned with SparseGPT 50 % on 8 × 256 calibration tokens: true-sequential
# (the default: down_proj is a phase alone, so at -n 2 both ranks solve it, each a band of its rows) at -n 1 and -n 2,
# and in the reference's order at -n 2. Wall seconds per phase from the run report and seconds per block; the issue
# recorded 439 s (18 s per block) at -n 2.
# Needs both cores free.
#
#   bench/wide.sh [--keep]   (the model goes to a temporary folder)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/openblas-env.sh
source bench/smollm2.sh
swift build -c release --product prune-dist-bench >&2
work="$(mktemp -d)"
[ "${1:-}" = "--keep" ] || trap 'rm -rf "$work"' EXIT
.build/release/prune-dist-bench make-gguf "$shared/models/SmolLM2-135M-Instruct.Q4_1.gguf" "$work/wide.gguf" \
  --layers 24 --hidden 896 --ffn 4864 --heads 14 --kv-heads 2 --gaussian >&2
"$bin" convert --gguf "$work/wide.gguf" --out "$work/model" --dtype bf16 --log-level error > /dev/null
printf '%-22s %8s %8s %11s %7s %10s  %s\n' run wall_s forward statistics solve s/block sha256
for setting in "1 --true-sequential" "2 --true-sequential" "2 --no-true-sequential"; do
  read -r ranks order <<< "$setting"
  name="n$ranks$order"
  mpirun -n "$ranks" --bind-to none "$bin" prune --model "$work/model" --out "$work/$name" --method sparsegpt --sparsity 0.5 \
    --calib "$cache/calib.txt" --samples 8 --seqlen 256 --seed 0 "$order" --log-level warning > "$work/$name.log" 2>&1
  python3 - "$work/$name/prune-report.json" "-n $ranks $order" "$(sha256sum "$work/$name/model.safetensors" | cut -c1-16)" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); b = r["blocks"]
phase = lambda k: sum(x.get(k + "_seconds") or 0 for x in b)
print("%-22s %8.1f %8.1f %11.1f %7.1f %10.2f  %s" % (sys.argv[2], r["total_seconds"], phase("forward"), phase("statistics"),
      phase("solve"), r["total_seconds"] / len(b), sys.argv[3]))
PY
done
