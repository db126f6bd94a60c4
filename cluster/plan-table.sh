#!/usr/bin/env bash
# Regenerates the plan table in cluster/README.md from `prune-dist plan --json` (figures are never typed by hand).
# Usage: cluster/plan-table.sh [path/to/prune-dist]   (default: .build/debug/prune-dist, then release)
# The time column assumes 1000 GFLOP/s Float32 per rank (--gemm-gflops 1000, Double at half), so the table does not
# depend on the machine that regenerates it; `plan` without --gemm-gflops measures the machine it runs on.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-}"
if [[ -z "$bin" ]]; then
  for candidate in .build/debug/prune-dist .build/release/prune-dist; do [[ -x "$candidate" ]] && bin="$candidate" && break; done
fi
[[ -x "$bin" ]] || { echo "plan-table.sh: build prune-dist first (swift build)" >&2; exit 1; }

rows=(
  # config              method     samples seqlen ranks mem
  "llama-2-70b.json     krp        128     2048   2     64G"
  "llama-2-70b.json     krp        128     2048   4     64G"
  "llama-2-70b.json     krp        128     2048   8     64G"
  "llama-2-70b.json     sparsegpt  128     2048   8     64G"
  "llama-2-70b.json     wanda      128     2048   8     64G"
  "llama-2-70b.json     krp        128     2048   16    64G"
  "llama-3.1-405b.json  krp        128     2048   8     64G"
  "llama-3.1-405b.json  krp        128     2048   32    256G"
)
table="$(mktemp)"
trap 'rm -f "$table"' EXIT
{
  echo "| model | method | calibration | ranks × memory | largest rank needs | fits | smallest ranks that fit | largest term | sent by the busiest rank, whole run | disk (output + journal) | time at 1 TFLOP/s per rank |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
  for row in "${rows[@]}"; do
    read -r config method samples seqlen ranks mem <<<"$row"
    # plan exits 1 when a rank does not fit; the JSON line is printed either way.
    json="$("$bin" plan --config "cluster/$config" --method "$method" --samples "$samples" --seqlen "$seqlen" --ranks "$ranks" \
            --mem-per-rank "$mem" --gemm-gflops 1000 --json 2>/dev/null | tail -n 1)" || true
    python3 - "$config" "$method" "$samples" "$seqlen" "$ranks" "$mem" "$json" <<'PY'
import json, sys
config, method, samples, seqlen, ranks, mem, text = sys.argv[1:]
plan = json.loads(text)
def size(b):
    units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
    v, u = float(b), 0
    while v >= 1024 and u < len(units) - 1:
        v /= 1024; u += 1
    return f"{v:.3g} {units[u]}"
def duration(s):
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.0f} min" if s < 5400 else f"{s / 3600:.1f} h"
need = max(r["needed_bytes"] for r in plan["per_rank"])
smallest = plan["smallest_fitting_ranks"]
print(f"| {config.removesuffix('.json')} | {method} | {samples} × {seqlen} | {ranks} × {mem} | {size(need)} | {'yes' if plan['fits'] else 'no'} "
      f"| {smallest if smallest is not None else 'none'} | {plan['dominant_term']} ({size(plan['dominant_term_bytes'])}) "
      f"| {size(max(plan['sent_bytes_per_rank_run']))} | {size(plan['disk_bytes'])} | {duration(plan['estimated_seconds'])} |")
PY
  done
} >"$table"
python3 - cluster/README.md "$table" <<'PY'
import sys
readme, table = sys.argv[1], open(sys.argv[2]).read()
text = open(readme).read()
begin, end = "<!-- plan-table:begin (cluster/plan-table.sh) -->", "<!-- plan-table:end -->"
if begin not in text or end not in text:
    sys.exit(f"{readme}: markers {begin} … {end} not found")
head, rest = text.split(begin, 1)
_, tail = rest.split(end, 1)
open(readme, "w").write(head + begin + "\n" + table + end + tail)
PY
echo "cluster/README.md: plan table regenerated with $bin"
