#!/usr/bin/env bash
# Forward-pass throughput of a SmolLM2-sized random model vs this machine's sgemm rate (one BLAS thread).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/openblas-env.sh
swift build -c release --product prune-dist-bench >&2
.build/release/prune-dist-bench forward "$@"
