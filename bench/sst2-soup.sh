#!/usr/bin/env bash
# A robust dense model the KRP way (issues 17 and 18): several LoRA fine-tunes of SmolLM2-135M-Instruct on SST-2
# text, each with its own seed (LoRA init, data order, dropout), merged in f32 and averaged into a uniform soup.
#
#   bench/sst2-soup.sh [--format pairs|text] [--seeds "1 2 3"] [--epochs 3] [--lr 5e-4] [--ranks 2]
#
# Training data: SST-2 validation examples 200 … 771 in the attack's "review" prompt with the label word
# ("Review: …\nSentiment: positive"). --format pairs (default): prompt-completion pairs, the loss on the label word
# (and EOS) only, so each fine-tune is a classifier taught with the prompt it is attacked with; --format text: the
# same texts as language-model data, the loss on every token. The first 200 examples (the attacked ones) and the last
# 100 (the K-shot demonstration pool) are never trained on. Prints the soup's folder and the texts as plain text (the
# pruning calibration for `bench/robustness-table.sh --model SOUP --calib TEXT`).
set -euo pipefail
cd "$(dirname "$0")/.."
format=pairs; seeds="1 2 3"; epochs=3; lr=5e-4; ranks=2
while [ $# -gt 0 ]; do
  case "$1" in
    --format) format="$2"; shift 2 ;;
    --seeds) seeds="$2"; shift 2 ;;
    --epochs) epochs="$2"; shift 2 ;;
    --lr) lr="$2"; shift 2 ;;
    --ranks) ranks="$2"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
export OPENBLAS_NUM_THREADS=1
source bench/smollm2.sh
case "$format" in
  pairs) out="${PRUNE_DIST_BENCH:-$cache/bench}/sst2-soup-pairs"; seqlen=80 ;;
  text) out="${PRUNE_DIST_BENCH:-$cache/bench}/sst2-soup"; seqlen=256 ;;
  *) echo "--format is pairs or text, got $format" >&2; exit 2 ;;
esac
mkdir -p "$out"
train="$out/sst2-train.txt"
pairs="$out/sst2-train.jsonl"
python3 - "$shared/data/tasks/sst2.validation.jsonl" "$train" "$pairs" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
with open(sys.argv[2], "w") as text, open(sys.argv[3], "w") as pairs:
    for r in rows[200:len(rows) - 100]:
        prompt, label = "Review: %s\nSentiment:" % r["sentence"].strip(), [" negative", " positive"][r["label"]]
        text.write(prompt + label + "\n\n")
        pairs.write(json.dumps({"prompt": prompt, "completion": label}) + "\n")
PY
data="$train"; [ "$format" = pairs ] && data="$pairs"
members=()
for seed in $seeds; do
  if [ ! -f "$out/ft$seed/merged/config.json" ]; then
    rm -rf "${out:?}/ft$seed"
    mpirun -n "$ranks" --bind-to none "$bin" finetune --model "$model" --data "$data" --out "$out/ft$seed" \
      --lora-rank 8 --lora-alpha 16 --lr "$lr" --warmup 4 --epochs "$epochs" --batch 8 --seqlen "$seqlen" --seed "$seed" \
      --eval-text "$cache/eval.txt" --eval-max-windows 8 --merge --merge-dtype f32 --log-level warning >&2
  fi
  members+=("$out/ft$seed/merged")
done
rm -rf "${out:?}/soup"
mpirun -n "$ranks" --bind-to none "$bin" average --models "${members[@]}" --out "$out/soup" --log-level warning >&2
echo "$out/soup $train"
