#!/usr/bin/env bash
# Zero-shot accuracy of SmolLM2-135M-Instruct (dense, or --model DIR) next to lm-evaluation-harness 0.4.13's
# figures on the same files (../shared/reference.md, "Zero-shot"): first 300 documents of each task by default.
#
#   bench/zeroshot.sh [--model DIR] [--tasks "boolq piqa …"] [--limit 300] [--ranks 1]
#
# Prints one row per task: our acc / acc_norm, the harness's, the difference in points, and whether it is
# within 0.5 points (the acceptance bar). The JSON of each task stays in $PRUNE_DIST_BENCH/zeroshot.
set -euo pipefail
cd "$(dirname "$0")/.."
tasks="boolq piqa hellaswag winogrande arc_easy arc_challenge openbookqa"; limit=300; ranks=1; model=""
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model="$2"; shift 2 ;;
    --tasks) tasks="$2"; shift 2 ;;
    --limit) limit="$2"; shift 2 ;;
    --ranks) ranks="$2"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OPENBLAS_NUM_THREADS=1

swift build -c release --product prune-dist >&2
bin="$PWD/.build/release/prune-dist"
cache="$(scripts/fetch-assets.sh | tail -1)"
model="${model:-$cache/SmolLM2-135M-Instruct}"
shared="${PRUNE_DIST_SHARED:-$(cd .. && pwd)/shared}"
[ -d "$shared/data/tasks" ] || shared="$(cd ../.. && pwd)/shared"
out="${PRUNE_DIST_BENCH:-$cache/bench}/zeroshot"
mkdir -p "$out"

for task in $tasks; do
  mpirun -n "$ranks" "$bin" eval zeroshot --model "$model" --data "$shared/data/tasks" --tasks "$task" --limit "$limit" \
    --json --log-level warning | tail -1 > "$out/$task.json"
done

python3 - "$out" "$limit" $tasks <<'PY'
import json, sys
out, limit, tasks = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
# lm-evaluation-harness 0.4.13 on the dense model (../shared/reference.md): first 300 documents, and full sets.
first300 = {"boolq": (0.3867, None), "piqa": (0.6500, 0.6633), "hellaswag": (0.3767, 0.4533), "winogrande": (0.4833, None),
            "arc_easy": (0.5067, 0.4500), "arc_challenge": (0.2167, 0.2733), "openbookqa": (0.2000, 0.3367)}
reference = first300 if limit == 300 else {}
print("%-14s %5s %8s %8s   %8s %8s   %7s %s" % ("task", "docs", "acc", "norm", "ref acc", "ref norm", "Δ pts", "within 0.5"))
for task in tasks:
    r = json.load(open(f"{out}/{task}.json"))["tasks"][task]
    acc, norm = r["acc"], r.get("acc_norm")
    ref = reference.get(task)
    if ref is None:
        print("%-14s %5d %8.4f %8s" % (task, r["documents"], acc, "–" if norm is None else "%.4f" % norm)); continue
    deltas = [abs(acc - ref[0]) * 100] + ([abs(norm - ref[1]) * 100] if ref[1] is not None else [])
    print("%-14s %5d %8.4f %8s   %8.4f %8s   %7.2f %s" % (task, r["documents"], acc, "–" if norm is None else "%.4f" % norm,
          ref[0], "–" if ref[1] is None else "%.4f" % ref[1], max(deltas), "yes" if max(deltas) <= 0.5 + 1e-9 else "NO"))
PY
