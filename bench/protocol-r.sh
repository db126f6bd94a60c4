#!/usr/bin/env bash
# Protocol R (../shared/data/README.md) on SmolLM2-135M-Instruct: every method at 50 % and 2:4, single process
# and under mpirun, next to the reference tools' figures (../shared/reference.md).
#
#   bench/protocol-r.sh [--methods "krp sparsegpt wanda magnitude"] [--patterns "0.5 2:4"] [--ranks "2 1"] [--skip-dense]
#
# Prints one table row per run; the JSON of every run stays in $PRUNE_DIST_BENCH (default ~/.cache/prune-dist/bench).
set -euo pipefail
cd "$(dirname "$0")/.."
methods="krp sparsegpt wanda magnitude"; patterns="0.5 2:4"; ranks="2 1"; dense=1
while [ $# -gt 0 ]; do
  case "$1" in
    --methods) methods="$2"; shift 2 ;;
    --patterns) patterns="$2"; shift 2 ;;
    --ranks) ranks="$2"; shift 2 ;;
    --skip-dense) dense=0; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OPENBLAS_NUM_THREADS=1

swift build -c release --product prune-dist >&2
bin="$PWD/.build/release/prune-dist"
cache="$(scripts/fetch-assets.sh | tail -1)"
model="$cache/SmolLM2-135M-Instruct"
[ -f "$model/config.json" ] || "$bin" convert --gguf "$cache/SmolLM2-135M-Instruct.Q4_1.gguf" --out "$model" --dtype bf16 >&2
out="${PRUNE_DIST_BENCH:-$cache/bench}"
mkdir -p "$out"

# Perplexity of a model under protocol R: the first 16 384 tokens of eval.txt, windows of 512 and 2048.
perplexity() { # model seqlen windows
  "$bin" eval perplexity --model "$1" --text "$cache/eval.txt" --seqlen "$2" --max-windows "$3" --json --log-level warning | tail -1 \
    | python3 -c 'import json,sys; print("%.2f" % json.load(sys.stdin)["perplexity"])'
}

row() { printf '%-10s %-8s %-5s %9s %9s %8s %8s %13s\n' "$@"; }
row method pattern ranks ppl@512 ppl@2048 prune_s cpu_s peak_rss_GiB
[ "$dense" = 0 ] || row dense - - "$(perplexity "$model" 512 32)" "$(perplexity "$model" 2048 8)" - - -
for method in $methods; do
  for pattern in $patterns; do
    case "$pattern" in *:*) flag=(--pattern "$pattern") ;; *) flag=(--sparsity "$pattern") ;; esac
    for n in $ranks; do
      name="$method-${pattern/:/of}-n$n"
      rm -rf "${out:?}/$name"
      mpirun -n "$n" --bind-to none "$bin" prune --model "$model" --out "$out/$name" --method "$method" "${flag[@]}" \
        --calib "$cache/calib.txt" --samples 128 --seqlen 512 --seed 0 --log-level warning > "$out/$name.log"
      # Wall time, CPU time summed over ranks, and the largest rank's peak RSS.
      read -r seconds cpu rss < <(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
u = r["rank_usage"]
print("%.0f %.0f %.2f" % (r["total_seconds"], sum(x["cpu_seconds"] for x in u), max(x["peak_rss_bytes"] for x in u) / 2**30))' "$out/$name/prune-report.json")
      row "$method" "$pattern" "$n" "$(perplexity "$out/$name" 512 32)" "$(perplexity "$out/$name" 2048 8)" "$seconds" "$cpu" "$rss"
    done
  done
done
echo
echo "Reference (../shared/reference.md, one torch thread): dense 12.61 / 11.43; magnitude 50% 379.16 / 505.79 (6 s);"
echo "Wanda 50% 28.84 / 26.93 (399 s); SparseGPT 50% 22.91 / 21.65 (554 s); magnitude 2:4 1060.87 / 1638.10;"
echo "Wanda 2:4 123.39 / 136.38 (374 s); SparseGPT 2:4 44.68 / 43.29 (548 s)."
