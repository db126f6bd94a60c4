#!/usr/bin/env bash
# The project's test command (README): builds and runs every test, unit and end-to-end (mpirun).
set -euo pipefail
cd "$(dirname "$0")/.."
# mpirun as root and with more ranks than cores, as the end-to-end tests need.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
source scripts/openblas-env.sh
swift build --build-tests
swift test --skip-build
