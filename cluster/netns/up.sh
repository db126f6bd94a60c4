#!/bin/sh
# up.sh ID N: N simulated hosts on this machine. Namespace ID-sw holds a bridge; each host ID-hI has its own
# network stack with 10.77.0.I/24 on a veth wired to the bridge. Nothing is added to the root namespace, so no
# traffic leaves the namespaces made here. Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN). Undo with down.sh ID.
set -eu
ID=$1; N=${2:-3}
ip netns add "$ID-sw"
ip -n "$ID-sw" link add br0 type bridge
ip -n "$ID-sw" link set br0 up
ip -n "$ID-sw" link set lo up
i=1
while [ "$i" -le "$N" ]; do
  ns="$ID-h$i"
  ip netns add "$ns"
  # Interface names are at most 15 characters: short names inside the namespaces, renamed after the move.
  ip link add "${ID}v$i" type veth peer name "${ID}s$i"
  ip link set "${ID}v$i" netns "$ns"
  ip link set "${ID}s$i" netns "$ID-sw"
  ip -n "$ns" link set "${ID}v$i" name eth0
  ip -n "$ID-sw" link set "${ID}s$i" name "port$i"
  ip -n "$ID-sw" link set "port$i" master br0 up
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add "10.77.0.$i/24" dev eth0
  ip -n "$ns" link set eth0 up
  i=$((i + 1))
done
