#!/usr/bin/env bash
# Issue 15, target 1: one whole prune run (protocol R: SmolLM2-135M, calib.txt, seed 0), one process, its CPU
# seconds per phase next to the reference tools' recorded times and this machine's GEMM-peak floor for the
# forward and the statistics (sgemm and ssyrk rates measured just before, in CPU time).
#
#   bench/speed.sh [--method sparsegpt|wanda|krp] [--sparsity 0.5 | --pattern 2:4] [--samples 128] [--seqlen 512] [--threads 1]
#                  [--true-sequential | --no-true-sequential]
#
# True-sequential (the default of KRP and unstructured SparseGPT; --true-sequential for Wanda) prunes phase by phase (q/k/v, o,
# gate/up, down), each phase's statistics taken with the earlier phases already pruned: one forward per block
# instead of the reference's two (dense block for the statistics, pruned block for the next block's inputs), which
# --no-true-sequential runs. KRP runs the dense model's stream beside the pruned one (a forward of each per block);
# its target is ≤ 0.5 × the reference SparseGPT.
#
# The reference tools are not installed on this machine, so their times are the recorded ones: issue 15 measured
# SparseGPT 50 % side by side with prune-dist (1058 user CPU s, torch 2.13, one thread); ../shared/reference.md
# has every method (±30 %, another run).
set -euo pipefail
cd "$(dirname "$0")/.."
method=sparsegpt; flag=(--sparsity 0.5); samples=128; seqlen=512; threads=1; sequential=()
while [ $# -gt 0 ]; do
  case "$1" in
    --method) method="$2"; shift 2 ;;
    --sparsity|--pattern) flag=("$1" "$2"); shift 2 ;;
    --samples) samples="$2"; shift 2 ;;
    --seqlen) seqlen="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --true-sequential|--no-true-sequential) sequential=("$1"); shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
export OPENBLAS_NUM_THREADS="$threads"
source scripts/openblas-env.sh
source bench/smollm2.sh
swift build -c release --product prune-dist-bench >&2
out="${PRUNE_DIST_BENCH:-$cache/bench}/speed-$method-${flag[1]/:/of}-$samples${sequential:+-${sequential#--}}"
rm -rf "$out"
rates="$(.build/release/prune-dist-bench forward --layers 1 --sequences 1 --repeats 3 --threads "$threads" | grep '^reference rates')"
"$bin" prune --model "$model" --out "$out" --method "$method" "${flag[@]}" --calib "$cache/calib.txt" \
  --samples "$samples" --seqlen "$seqlen" --seed 0 --threads "$threads" "${sequential[@]}" --log-level warning >&2
python3 - "$out/prune-report.json" "$model/config.json" "$rates" "$method" "${flag[1]}" "$samples" "$seqlen" <<'PY'
import json, re, sys
report, config, rates, method, pattern, samples, seqlen = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6]), int(sys.argv[7])
r = json.load(open(report)); c = json.load(open(config))
sgemm = float(re.search(r"sgemm 2048³ ([0-9.]+)", rates).group(1))
syrk = float(re.search(r"ssyrk 2048² × 2048 ([0-9.]+)", rates).group(1))
d, f, L = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
hd = c.get("head_dim") or d // c["num_attention_heads"]
q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
t = samples * seqlen
# Needed flops: linears and the causal half of attention; SparseGPT/Wanda run one forward to the MLP hidden state
# (statistics of the dense block) and one full forward of the pruned block per block, or, true-sequential, one
# forward that stops at each phase's inputs.
linears_to_hidden = 2 * t * (d * q + 2 * d * kv + q * d + 2 * d * f)
down = 2 * t * f * d
attention = 2 * 2 * samples * seqlen * (seqlen + 1) / 2 * q
sequential = r.get("true_sequential", False)
forward = L * (linears_to_hidden + down + attention) if sequential else L * (2 * linears_to_hidden + down + 2 * attention)
if method == "krp":
    forward *= 2  # the dense stream's full forward beside the pruned one
# KRP: the Hessians (syrks) and the cross terms (GEMMs, twice a syrk's flops; down_proj's against its d outputs,
# [d, f]), counted at the syrk rate.
hessians = L * t * (3 * d * d + f * f)
statistics = {"sparsegpt": hessians, "krp": hessians + L * t * 2 * (3 * d * d + d * f)}.get(method, 0)
b = r["blocks"]
cpu = lambda k: sum(x.get(k + "_cpu_seconds") or 0 for x in b)
total = sum(x["cpu_seconds"] for x in r["rank_usage"])
floor = forward / sgemm / 1e9 + statistics / syrk / 1e9
print(rates)
print(f"prune-dist {method} {pattern}{', true-sequential' if sequential else ''}, {samples} × {seqlen}: {total:.0f} CPU s (forward {cpu('forward'):.0f}, statistics {cpu('statistics'):.0f}, solve {cpu('solve'):.0f}); peak RSS {max(x['peak_rss_bytes'] for x in r['rank_usage']) / 2**30:.2f} GiB")
print(f"  forward at {forward / 1e9 / max(cpu('forward'), 1e-9) / sgemm:.0%} of the sgemm rate, statistics at {statistics / 1e9 / max(cpu('statistics'), 1e-9) / syrk:.0%} of the ssyrk rate; GEMM-peak floor of forward + statistics {floor:.0f} s")
reference = {("sparsegpt", "0.5"): (1058, "issue 15, side by side, user CPU s"), ("sparsegpt", "2:4"): (548, "reference.md"),
             ("wanda", "0.5"): (399, "reference.md"), ("wanda", "2:4"): (374, "reference.md"),
             ("krp", "0.5"): (1058, "the reference SparseGPT, issue 15, side by side")}.get((method, pattern))
if reference and samples == 128 and seqlen == 512:
    target = 0.5 if method == "krp" else 0.33
    print(f"  reference {reference[0]} s ({reference[1]}): prune-dist at {total / reference[0]:.2f}× (target ≤ {target}×)")
PY
