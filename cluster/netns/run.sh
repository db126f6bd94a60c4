#!/bin/sh
# run.sh ID N ARGS…: mpirun -n N across the hosts of up.sh ID over TCP, started inside host 1 (the root
# namespace has no route to them), with the Open MPI settings a TCP cluster needs:
#   btl tcp,self + interface selection   only the simulated network, never loopback or shared memory
#   mpi_yield_when_idle 1                 busy-polling ranks would starve the veth receive path
#   oob_tcp_keepalive 5/2/3               a host cut off is noticed in ~10 s instead of hanging (default 300 s+)
# Extra mpirun options go in MPIRUN_EXTRA (e.g. "-x PRUNE_DIST_FAULT_RANK").
set -eu
ID=$1; N=$2; shift 2
here=$(cd "$(dirname "$0")" && pwd)
hostfile=$(mktemp /tmp/pd-hostfile.XXXXXX)
i=1; while [ "$i" -le "$N" ]; do echo "10.77.0.$i slots=1" >> "$hostfile"; i=$((i + 1)); done
export PD_NETNS_ID=$ID
status=0
ip netns exec "$ID-h1" mpirun --allow-run-as-root --hostfile "$hostfile" -n "$N" \
  --mca plm_rsh_agent "$here/nsrsh" \
  --mca btl tcp,self --mca btl_tcp_if_include 10.77.0.0/24 --mca oob_tcp_if_include 10.77.0.0/24 \
  --mca mpi_yield_when_idle 1 \
  --mca oob_tcp_keepalive_time 5 --mca oob_tcp_keepalive_intvl 2 --mca oob_tcp_keepalive_probes 3 \
  -x OPENBLAS_NUM_THREADS -x OPENBLAS_CORETYPE -x PATH ${MPIRUN_EXTRA:-} "$@" || status=$?
rm -f "$hostfile"
exit $status
