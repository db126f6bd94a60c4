# Sourced by the test and bench scripts (from the package root): one OpenBLAS thread per process unless
# OPENBLAS_NUM_THREADS says otherwise, and OpenBLAS's kernels chosen from the CPU's flags as the binary chooses
# them (Sources/Coordinator/Support/OpenBLASKernel.swift: the AVX-512 kernels on Intel, Haswell's on other AVX2/FMA
# CPUs), since OpenBLAS misdetects some virtual CPUs; test and bench processes do not re-execute themselves.
# PRUNE_DIST_CPUINFO: read the flags from this file instead of /proc/cpuinfo (the tests that compare both choices).
# Its own names start with _openblas_ so that it leaves the sourcing script's variables alone.
export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}"
if [ -z "${OPENBLAS_CORETYPE:-}" ]; then
  _openblas_cpuinfo="${PRUNE_DIST_CPUINFO:-/proc/cpuinfo}"
  _openblas_flags=" $(grep -m1 '^flags' "$_openblas_cpuinfo" 2>/dev/null | cut -d: -f2- || true) "
  _openblas_has() { local wanted; for wanted in "$@"; do [[ "$_openblas_flags" == *" $wanted "* ]] || return 1; done; }
  if grep -m1 '^vendor_id' "$_openblas_cpuinfo" 2>/dev/null | grep -q -w GenuineIntel \
     && _openblas_has avx512f avx512cd avx512bw avx512dq avx512vl; then
    if _openblas_has avx512_bf16; then export OPENBLAS_CORETYPE=Cooperlake; else export OPENBLAS_CORETYPE=SkylakeX; fi
  elif _openblas_has avx2 fma; then
    export OPENBLAS_CORETYPE=Haswell
  fi
  unset -f _openblas_has; unset _openblas_cpuinfo _openblas_flags
fi
