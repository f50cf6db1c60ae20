#!/usr/bin/env bash
# Stop the one-node cluster of start.sh DIR and remove what it left on the host: every pod's
# containers and network namespace, kubelet's mounts, the pod bridge, kube-proxy's and our
# nftables tables, the node address, the closed uplink namespace; then the control plane.
# Idempotent.
#
# Usage: tests/e2e/node/stop.sh [--keep] DIR     --keep: keep DIR (logs) afterwards
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
KEEP=0
DIR=
for arg in "$@"; do
  case $arg in
    --keep) KEEP=1 ;;
    *) DIR=$arg ;;
  esac
done
[[ -n $DIR ]] || { echo "usage: stop.sh [--keep] DIR" >&2; exit 2; }
[[ -d $DIR ]] || exit 0
DIR=$(cd "$DIR" && pwd)
RUNDIR=/run/msb-e2e-node
log() { printf '[node-stop] %s\n' "$*" >&2; }

stop_pid() { # NAME
  local pf=$DIR/$1.pid pid
  [[ -f $pf ]] || return 0
  pid=$(cat "$pf")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pf"
}

# kubelet first (nothing restarts pods), then every container containerd runs for it.
for c in kubelet kube-proxy kube-scheduler kube-controller-manager; do stop_pid "$c"; done
BIN=$(cat "$DIR/bin-dir" 2>/dev/null || true)
CTR=("$BIN/ctr" --address "$RUNDIR/containerd.sock" -n k8s.io)
if [[ -n $BIN && -x $BIN/ctr && -S $RUNDIR/containerd.sock ]]; then
  for t in $("${CTR[@]}" tasks ls -q 2>/dev/null); do
    "${CTR[@]}" tasks kill -s SIGKILL "$t" >/dev/null 2>&1 || true
  done
  for _ in $(seq 1 50); do
    [[ -z $("${CTR[@]}" tasks ls -q 2>/dev/null | head -n 1) ]] && break
    for t in $("${CTR[@]}" tasks ls -q 2>/dev/null); do "${CTR[@]}" tasks delete -f "$t" >/dev/null 2>&1 || true; done
    sleep 0.2
  done
  for c in $("${CTR[@]}" containers ls -q 2>/dev/null); do
    "${CTR[@]}" containers delete "$c" >/dev/null 2>&1 || true
  done
fi
stop_pid containerd
# What containerd could not stop (it was gone, or a task hung): its shims and every process in
# the pods' cgroups, all below our own cgroup root (start.sh's kubelet cgroupRoot); then that
# tree, deepest first. Pod network namespaces live below containerd's state dir (unmounted below).
pkill -KILL -f "containerd-shim-runc-v2 .*-address $RUNDIR/containerd.sock" 2>/dev/null || true
for root in /sys/fs/cgroup/*/msb-e2e; do
  [[ -d $root ]] || continue
  find "$root" -name cgroup.procs -exec cat {} + 2>/dev/null | while read -r pid; do
    kill -KILL "$pid" 2>/dev/null || true
  done
done
sleep 0.2
for root in /sys/fs/cgroup/*/msb-e2e; do
  if [[ -d $root ]]; then find "$root" -depth -type d -exec rmdir {} + 2>/dev/null || true; fi
done
ip link del msb-cni0 2>/dev/null || true
# Mounts below DIR and containerd's state (pod volumes, rootfs, shm), deepest first.
for root in "$DIR" "$RUNDIR"; do
  awk -v w="$root/" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done
done
nft delete table inet msb_e2e_node 2>/dev/null || true
nft delete table ip kube-proxy 2>/dev/null || true
nft delete table ip6 kube-proxy 2>/dev/null || true
if [[ -f $DIR/node-address ]]; then
  ip addr del "$(cat "$DIR/node-address")/32" dev lo 2>/dev/null || true
fi
ip netns del msb-e2e-uplink 2>/dev/null || true

if [[ -f $DIR/cp/env ]]; then
  if [[ $KEEP == 1 ]]; then
    "$HERE/../control-plane/stop.sh" --keep "$DIR/cp" >/dev/null 2>&1 || true
  else
    "$HERE/../control-plane/stop.sh" "$DIR/cp" >/dev/null 2>&1 || true
  fi
fi
rm -rf --one-file-system "$RUNDIR"
if [[ $KEEP == 1 ]]; then
  log "stopped; logs kept in $DIR"
else
  rm -rf --one-file-system "$DIR"
  log "stopped and removed $DIR"
fi
