#!/bin/sh
# down.sh ID: stops every process left in the namespaces of up.sh ID and removes them.
ID=$1
for ns in $(ip netns list | awk '{print $1}' | grep "^$ID-"); do
  for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
  ip netns del "$ns" 2>/dev/null
done
exit 0
