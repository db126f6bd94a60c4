#!/usr/bin/env bash
# Robustness of a model under word-substitution attacks (issue 17): `eval attack` on SST-2 at one or more rank
# counts, TextAttack's summary per run, and a check that every rank count printed the same figures.
#
#   bench/attack.sh [--model DIR] [--attack pwws|textfooler] [--limit 200] [--ranks "1 2"] [--template review]
#                   [--shots 0] [--query-budget Q] [--max-perturb 0.25]
#
# Defaults: dense SmolLM2-135M-Instruct, PWWS, the first 200 examples, -n 1 and -n 2, the 0-shot "review" prompt
# (78.5 % clean accuracy on the first 200; eval zeroshot's harness prompt gives 56.5 %). The JSON summary and
# the JSONL log of each run stay in $PRUNE_DIST_BENCH/attack. CPU time grows with the queries: PWWS sends about
# one query per word plus one per WordNet synonym of every content word, twice.
# Then: the JSONL logs of every rank count compared byte for byte, and the first one audited by
# bench/audit-attack-log.py (every success a real flip; every substitution a WordNet synonym of the same part of
# speech and form, checked against the WordNet files by a separate reader). The script exits 1 if either fails.
set -euo pipefail
cd "$(dirname "$0")/.."
attack=pwws; limit=200; ranks="1 2"; template=review; shots=0; budget=""; perturb=0.25; model=""
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model="$2"; shift 2 ;;
    --attack) attack="$2"; shift 2 ;;
    --limit) limit="$2"; shift 2 ;;
    --ranks) ranks="$2"; shift 2 ;;
    --template) template="$2"; shift 2 ;;
    --shots) shots="$2"; shift 2 ;;
    --query-budget) budget="$2"; shift 2 ;;
    --max-perturb) perturb="$2"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OPENBLAS_NUM_THREADS=1

swift build -c release --product prune-dist >&2
bin="$PWD/.build/release/prune-dist"
cache="${PRUNE_DIST_CACHE:-$HOME/.cache/prune-dist}"
[ -n "$model" ] || model="$(scripts/fetch-assets.sh | tail -1)/SmolLM2-135M-Instruct"
shared="${PRUNE_DIST_SHARED:-$(cd .. && pwd)/shared}"
[ -d "$shared/data/tasks" ] || shared="$(cd ../.. && pwd)/shared"
out="${PRUNE_DIST_BENCH:-$cache/bench}/attack"
mkdir -p "$out"

extra=()
[ -n "$budget" ] && extra+=(--query-budget "$budget")
for n in $ranks; do
  name="$attack-$(basename "$model")-$template-k$shots-l$limit-n$n"
  mpirun -n "$n" "$bin" eval attack --model "$model" --data "$shared/data/tasks" --task sst2 --attack "$attack" \
    --template "$template" --shots "$shots" --limit "$limit" --max-perturb "$perturb" "${extra[@]}" \
    --log "$out/$name.jsonl" --json --log-level warning > "$out/$name.txt"
  cat "$out/$name.txt"
  tail -1 "$out/$name.txt" > "$out/$name.json"
done

python3 - "$out" "$attack" "$(basename "$model")" "$template" "$shots" "$limit" $ranks <<'PY'
import json, sys
out, attack, model, template, shots, limit, ranks = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6], sys.argv[7:]
keys = ["clean_accuracy", "accuracy_under_attack", "attack_success_rate", "average_perturbed_word_percent", "average_queries"]
rows = {}
print(f"\n{attack} on SST-2 ({limit} examples, {shots}-shot {template} prompt), {model}")
print("ranks  clean acc   Aua      Asr      perturbed %  queries  seconds")
for n in ranks:
    o = json.load(open(f"{out}/{attack}-{model}-{template}-k{shots}-l{limit}-n{n}.json"))
    rows[n] = [o[k] for k in keys]
    print(f"{n:>5}  {100*o['clean_accuracy']:8.2f}  {100*o['accuracy_under_attack']:7.2f}  {100*o['attack_success_rate']:7.2f}"
          f"  {o['average_perturbed_word_percent']:11.2f}  {o['average_queries']:7.2f}  {o['seconds']:7.1f}")
first = rows[ranks[0]]
print("figures identical for every rank count:", all(r == first for r in rows.values()))
PY

status=0
first_ranks=${ranks%% *}
first_log="$out/$attack-$(basename "$model")-$template-k$shots-l$limit-n$first_ranks.jsonl"
for n in $ranks; do
  log="$out/$attack-$(basename "$model")-$template-k$shots-l$limit-n$n.jsonl"
  if cmp -s "$first_log" "$log"; then echo "log of -n $n byte-identical to -n $first_ranks ($(wc -l < "$log") examples)"
  else echo "log of -n $n DIFFERS from -n $first_ranks"; status=1; fi
done
if [ "$attack" = pwws ]; then
  wordnet="${WORDNET_DICT:-/usr/share/wordnet}"
  python3 bench/audit-attack-log.py "$first_log" --wordnet "$wordnet" || status=1
fi
exit $status
