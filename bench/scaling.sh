#!/usr/bin/env bash
# Issue 15, targets 3 and 4: the same prune run at -n 1, -n 2 and -n 1 with 2 BLAS threads, wall seconds per phase
# from the run report, the speed-up over -n 1, and the checkpoint's sha256 (equal in all three: neither the rank
# count nor the thread count changes the result). Needs both cores free.
#
#   bench/scaling.sh [--methods "sparsegpt krp"] [--samples 32] [--sparsity 0.5]
set -euo pipefail
cd "$(dirname "$0")/.."
methods="sparsegpt krp"; samples=32; sparsity=0.5
while [ $# -gt 0 ]; do
  case "$1" in
    --methods) methods="$2"; shift 2 ;;
    --samples) samples="$2"; shift 2 ;;
    --sparsity) sparsity="$2"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
source scripts/openblas-env.sh
source bench/smollm2.sh
out="${PRUNE_DIST_BENCH:-$cache/bench}/scaling"
mkdir -p "$out"
printf '%-12s %-10s %8s %8s %11s %7s %9s  %s\n' method run wall_s forward statistics solve speed-up sha256
for method in $methods; do
  single=""
  for setting in "1 1" "2 1" "1 2"; do
    read -r ranks threads <<< "$setting"
    name="$method-n$ranks-t$threads"
    rm -rf "${out:?}/$name"
    OPENBLAS_NUM_THREADS="$threads" mpirun -n "$ranks" --bind-to none "$bin" prune --model "$model" --out "$out/$name" \
      --method "$method" --sparsity "$sparsity" --calib "$cache/calib.txt" --samples "$samples" --seqlen 512 --seed 0 \
      --threads "$threads" --log-level warning > "$out/$name.log" 2>&1
    wall=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["total_seconds"])' "$out/$name/prune-report.json")
    [ -n "$single" ] || single="$wall"
    python3 - "$out/$name/prune-report.json" "$method" "-n $ranks, $threads thr" "$single" \
      "$(sha256sum "$out/$name/model.safetensors" | cut -c1-16)" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); b = r["blocks"]
phase = lambda k: sum(x.get(k + "_seconds") or 0 for x in b)
print("%-12s %-10s %8.1f %8.1f %11.1f %7.1f %8.2f×  %s" % (sys.argv[2], sys.argv[3], r["total_seconds"], phase("forward"),
      phase("statistics"), phase("solve"), float(sys.argv[4]) / r["total_seconds"], sys.argv[5]))
PY
  done
done
