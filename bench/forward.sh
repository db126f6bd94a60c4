#!/usr/bin/env bash
# Forward-pass throughput of a SmolLM2-sized random model vs this machine's sgemm rate (one BLAS thread).
set -euo pipefail
cd "$(dirname "$0")/.."
export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}"
if [ -z "${OPENBLAS_CORETYPE:-}" ] && grep -q -w avx2 /proc/cpuinfo && grep -q -w fma /proc/cpuinfo; then
  export OPENBLAS_CORETYPE=Haswell
fi
swift build -c release --product prune-dist-bench >&2
.build/release/prune-dist-bench forward "$@"
