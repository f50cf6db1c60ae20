#!/usr/bin/env bash
# Stop a control plane started by start.sh and delete its state directory.
#
# Usage: tests/e2e/control-plane/stop.sh [--keep] [DIR]
#   DIR     the directory start.sh printed (default: $MSB_K8S_DIR)
#   --keep  keep DIR (logs, certs, etcd data) after stopping
set -euo pipefail

KEEP=0
DIR=""
for arg in "$@"; do
  case "$arg" in
    --keep) KEEP=1 ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) DIR="$arg" ;;
  esac
done
DIR="${DIR:-${MSB_K8S_DIR:-}}"
[ -n "$DIR" ] || { echo "usage: $0 [--keep] DIR" >&2; exit 2; }
[ -d "$DIR" ] || { echo "[k8s-stop] $DIR does not exist; nothing to do" >&2; exit 0; }
# Refuse to delete something that start.sh did not create.
[ -f "$DIR/env" ] || [ -d "$DIR/certs" ] || { echo "[k8s-stop] $DIR does not look like a start.sh directory" >&2; exit 1; }

# Only signal a pid if it still runs the binary we started (pids get reused).
running() { # pidfile name
  local pid; pid="$(cat "$1" 2>/dev/null || true)"
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null || true)" = "$2" ] && echo "$pid"
}

stop_one() { # name
  local pf="$DIR/$1.pid" pid
  pid="$(running "$pf" "$1" || true)"
  if [ -n "$pid" ]; then
    echo "[k8s-stop] stopping $1 (pid $pid)" >&2
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "[k8s-stop] $1 did not exit; SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
  fi
  rm -f "$pf"
}

# apiserver first, so it does not spin on a vanished etcd.
stop_one kube-apiserver
stop_one etcd

if [ "$KEEP" = 1 ]; then
  echo "[k8s-stop] stopped; state kept in $DIR" >&2
else
  rm -rf "$DIR"
  echo "[k8s-stop] stopped; removed $DIR" >&2
fi
