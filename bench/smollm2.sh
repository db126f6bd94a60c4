# Sourced by the bench scripts (from the package root): builds the release binary and sets `bin`, `cache` (the
# asset folder of scripts/fetch-assets.sh) and `model` (SmolLM2-135M-Instruct in bf16, converted once).
# PRUNE_DIST_BIN: use this binary instead (a long measurement keeps its binary while the tree is rebuilt).
if [ -n "${PRUNE_DIST_BIN:-}" ]; then
  bin="$PRUNE_DIST_BIN"
else
  swift build -c release --product prune-dist >&2
  bin="$PWD/.build/release/prune-dist"
fi
cache="$(scripts/fetch-assets.sh | tail -1)"
model="$cache/SmolLM2-135M-Instruct"
[ -f "$model/config.json" ] || "$bin" convert --gguf "$cache/SmolLM2-135M-Instruct.Q4_1.gguf" --out "$model" --dtype bf16 >&2
# mpirun as root in containers, more ranks than cores for -n 4 tests; the shared data folder next to the clone.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
shared="${PRUNE_DIST_SHARED:-$PWD/../shared}"
