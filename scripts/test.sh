#!/usr/bin/env bash
# The project's test command (README): builds and runs every test, unit and end-to-end (mpirun).
set -euo pipefail
cd "$(dirname "$0")/.."
# mpirun as root and with more ranks than cores, as the end-to-end tests need.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}"
# OpenBLAS misdetects some virtual CPUs as Prescott (3x slower); the binary corrects itself, the test process needs this.
if [ -z "${OPENBLAS_CORETYPE:-}" ] && grep -q -w avx2 /proc/cpuinfo && grep -q -w fma /proc/cpuinfo; then
  export OPENBLAS_CORETYPE=Haswell
fi
swift build --build-tests
swift test --skip-build
