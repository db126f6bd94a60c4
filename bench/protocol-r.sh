#!/usr/bin/env bash
# Protocol R (../shared/data/README.md) on SmolLM2-135M-Instruct: every method next to the reference tools'
# figures (../shared/reference.md), judged on several domains at once: perplexity (windows of 512, first
# 16 384 tokens) on the calibration domain (wiki/eval.txt) and on two texts far from it (ood/tempest.txt,
# ood/python.txt), and the 7-task zero-shot average (acc, first 300 documents of each task).
#
#   bench/protocol-r.sh [--methods "krp sparsegpt wanda magnitude"] [--patterns "0.5 2:4"] [--ranks "2 1"]
#                       [--allocations "uniform owl"] [--skip-dense] [--no-zeroshot] [--samples 128] [-- PRUNE-OPTIONS…]
#
# Each run is one `prune … --eval-text … --eval-tasks …` command: the figures are in its report. One table row
# per run; the JSON of every run stays in $PRUNE_DIST_BENCH (default ~/.cache/prune-dist/bench).
set -euo pipefail
cd "$(dirname "$0")/.."
methods="krp sparsegpt wanda magnitude"; patterns="0.5 2:4"; ranks="2 1"; allocations="uniform"; dense=1; zeroshot=1; samples=128
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --methods) methods="$2"; shift 2 ;;
    --patterns) patterns="$2"; shift 2 ;;
    --ranks) ranks="$2"; shift 2 ;;
    --allocations) allocations="$2"; shift 2 ;;
    --samples) samples="$2"; shift 2 ;;
    --skip-dense) dense=0; shift ;;
    --no-zeroshot) zeroshot=0; shift ;;
    --) shift; extra=("$@"); break ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OPENBLAS_NUM_THREADS=1

source bench/smollm2.sh
shared="${PRUNE_DIST_SHARED:-$PWD/../shared}"
out="${PRUNE_DIST_BENCH:-$cache/bench}"
mkdir -p "$out"
tasks=boolq,piqa,hellaswag,winogrande,arc_easy,arc_challenge,openbookqa
evaluation=(--eval-text "$cache/eval.txt" --eval-text "$shared/data/ood/tempest.txt" --eval-text "$shared/data/ood/python.txt"
            --eval-seqlen 512 --eval-max-windows 32)
[ "$zeroshot" = 0 ] || evaluation+=(--eval-tasks "$tasks" --eval-data "$shared/data/tasks" --eval-limit 300)

row() { printf '%-10s %-8s %-8s %-5s %8s %8s %8s %7s %8s %8s %13s\n' "$@"; }
# The row's figures from a run report (prune-report.json) or an evaluation JSON of the same keys.
figures() {
  python3 - "$1" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
e = r.get("evaluation", r)
def f(key, fmt="%.2f"):
    return fmt % e[key] if key in e else "-"
print(f("perplexity.eval"), f("perplexity.tempest"), f("perplexity.python"), f("zeroshot.average.acc", "%.4f"))
PY
}
row method pattern alloc ranks wiki tempest python zs_avg prune_s cpu_s peak_rss_GiB
if [ "$dense" = 1 ]; then
  # The dense model through the same evaluation: a magnitude run at sparsity 0 changes no weight.
  mpirun -n 2 --bind-to none "$bin" prune --model "$model" --out "$out/dense.tmp" --method magnitude --sparsity 0 \
    "${evaluation[@]}" --log-level warning > "$out/dense.log"
  cp "$out/dense.tmp/prune-report.json" "$out/dense.json"; rm -rf "${out:?}/dense.tmp"
  row dense - - - $(figures "$out/dense.json") - - -
fi
for method in $methods; do
  for pattern in $patterns; do
    case "$pattern" in *:*) flag=(--pattern "$pattern") ;; *) flag=(--sparsity "$pattern") ;; esac
    for allocation in $allocations; do
      case "$pattern" in *:*) [ "$allocation" = uniform ] || continue ;; esac
      for n in $ranks; do
        name="$method-${pattern/:/of}-$allocation-n$n"
        rm -rf "${out:?}/$name"
        mpirun -n "$n" --bind-to none "$bin" prune --model "$model" --out "$out/$name" --method "$method" "${flag[@]}" \
          --allocation "$allocation" --calib "$cache/calib.txt" --samples "$samples" --seqlen 512 --seed 0 \
          "${evaluation[@]}" "${extra[@]}" --log-level warning > "$out/$name.log"
        # Wall time, CPU time summed over ranks, and the largest rank's peak RSS (pruning and evaluation together).
        read -r seconds cpu rss < <(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
u = r["rank_usage"]
print("%.0f %.0f %.2f" % (r["total_seconds"], sum(x["cpu_seconds"] for x in u), max(x["peak_rss_bytes"] for x in u) / 2**30))' "$out/$name/prune-report.json")
        row "$method" "$pattern" "$allocation" "$n" $(figures "$out/$name/prune-report.json") "$seconds" "$cpu" "$rss"
      done
    done
  done
done
echo
echo "Reference (../shared/reference.md, one torch thread), wiki ppl@512: dense 12.61; magnitude 50% 379.16 (6 s);"
echo "Wanda 50% 28.84 (399 s); SparseGPT 50% 22.91 (554 s); magnitude 2:4 1060.87; Wanda 2:4 123.39 (374 s);"
echo "SparseGPT 2:4 44.68 (548 s). Out of domain (issue 13): reference SparseGPT 50% on held-out prose 75.0."
