# Sourced by the test and bench scripts (from the package root): one OpenBLAS thread per process unless
# OPENBLAS_NUM_THREADS says otherwise, and the Haswell kernels where OpenBLAS misdetects an AVX2/FMA virtual CPU
# as Prescott (3x slower; the binary corrects itself, test and bench processes need this).
export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}"
if [ -z "${OPENBLAS_CORETYPE:-}" ] && grep -q -w avx2 /proc/cpuinfo && grep -q -w fma /proc/cpuinfo; then
  export OPENBLAS_CORETYPE=Haswell
fi
