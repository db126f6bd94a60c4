#!/usr/bin/env bash
# The Debian packages prune-dist builds and runs with (wordnet-base: WordNet 3.0 for `eval attack --attack pwws`) (idempotent; needs root or sudo on a fresh machine),
# and the Python packages the interoperability test reads our files back with.
set -euo pipefail
have_lapacke() { [ -f /usr/include/lapacke.h ] || [ -f /usr/include/x86_64-linux-gnu/lapacke.h ]; }
if ! pkg-config --exists openblas ompi-c 2>/dev/null || ! command -v mpirun >/dev/null || ! have_lapacke || ! command -v ip >/dev/null \
   || [ ! -f /usr/share/wordnet/index.noun ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends \
    libopenblas-dev liblapacke-dev libopenmpi-dev openmpi-bin pkg-config iproute2 wordnet-base >/dev/null
fi
python3 -c 'import safetensors, numpy' 2>/dev/null || pip install -q safetensors numpy
