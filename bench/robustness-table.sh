#!/usr/bin/env bash
# The seed paper's table (issue 17, item 5): a model and its pruned versions attacked on SST-2, one row per
# model × attack: clean accuracy, accuracy under attack (Aua), attack success rate (Asr), perturbed words, queries.
#
#   bench/robustness-table.sh [--model DIR] [--calib FILE] [--samples 128] [--methods "magnitude wanda sparsegpt krp"]
#                             [--patterns "0.3 0.5 0.7 2:4"] [--attacks "pwws textfooler"] [--limit 60] [--ranks 2]
#                             [--template review] [--shots 0]
#
# The KRP paper attacks a classifier fine-tuned on the task; the way to make one here is issue 18's
# (bench/README.md, "Adversarial robustness"): LoRA fine-tunes of the dense model on SST-2 text, averaged (`prune-dist average`), then
# pruned with calibration text of the task (--calib). Every pruned model and every attack log stays in
# $PRUNE_DIST_BENCH/robustness/<parent>-<model name>; rows already measured are read back, not run again.
set -euo pipefail
cd "$(dirname "$0")/.."
victim=""; calib=""; samples=128; methods="magnitude wanda sparsegpt krp"; patterns="0.3 0.5 0.7 2:4"
attacks="pwws textfooler"; limit=60; ranks=2; template=review; shots=0
while [ $# -gt 0 ]; do
  case "$1" in
    --model) victim="$2"; shift 2 ;;
    --calib) calib="$2"; shift 2 ;;
    --samples) samples="$2"; shift 2 ;;
    --methods) methods="$2"; shift 2 ;;
    --patterns) patterns="$2"; shift 2 ;;
    --attacks) attacks="$2"; shift 2 ;;
    --limit) limit="$2"; shift 2 ;;
    --ranks) ranks="$2"; shift 2 ;;
    --template) template="$2"; shift 2 ;;
    --shots) shots="$2"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
export OPENBLAS_NUM_THREADS=1
source bench/smollm2.sh
# smollm2.sh sets `model` to the bundled SmolLM2; --model replaces it as the attacked dense model.
[ -z "$victim" ] || model="$victim"
[ -n "$calib" ] || calib="$cache/calib.txt"
# Named by the model folder and its parent: two soups are both called "soup".
out="${PRUNE_DIST_BENCH:-$cache/bench}/robustness/$(basename "$(dirname "$model")")-$(basename "$model")"
mkdir -p "$out"

# attack NAME DIR: the summary JSON of one attack on one model (kept, so a row is measured once).
attack() {
  local name="$1" dir="$2" a="$3"
  local json="$out/$name-$a-l$limit-k$shots.json"
  if [ ! -s "$json" ]; then
    mpirun -n "$ranks" --bind-to none "$bin" eval attack --model "$dir" --data "$shared/data/tasks" --task sst2 \
      --attack "$a" --template "$template" --shots "$shots" --limit "$limit" \
      --log "$out/$name-$a-l$limit-k$shots.jsonl" --json --log-level warning | tail -1 > "$json.tmp"
    mv "$json.tmp" "$json"
  fi
  python3 - "$json" "$name" "$a" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print("%-22s %-10s %9.2f %8.2f %8.2f %12.2f %9.1f" % (sys.argv[2], sys.argv[3], 100 * r["clean_accuracy"], 100 * r["accuracy_under_attack"],
      100 * r["attack_success_rate"], r["average_perturbed_word_percent"], r["average_queries"]))
PY
}
printf '%-22s %-10s %9s %8s %8s %12s %9s\n' model attack clean_% aua_% asr_% perturbed_% queries
for a in $attacks; do attack dense "$model" "$a"; done
for method in $methods; do
  for pattern in $patterns; do
    case "$pattern" in *:*) flag=(--pattern "$pattern") ;; *) flag=(--sparsity "$pattern") ;; esac
    name="$method-${pattern/:/of}"
    if [ ! -f "$out/$name/model.safetensors" ]; then
      rm -rf "${out:?}/$name"
      mpirun -n "$ranks" --bind-to none "$bin" prune --model "$model" --out "$out/$name" --method "$method" "${flag[@]}" \
        --calib "$calib" --samples "$samples" --seqlen 512 --seed 0 --dtype bf16 --log-level warning > "$out/$name.log"
    fi
    for a in $attacks; do attack "$name" "$out/$name" "$a"; done
  done
done
