#!/usr/bin/env bash
# Restart only the kube-apiserver of a control plane started by start.sh (etcd keeps its data)
# and wait until it is ready again. Used by the e2e test "apiserver restarted -> operator recovers".
#
# Usage: tests/e2e/control-plane/restart-apiserver.sh [DIR]   (default: $MSB_K8S_DIR)
set -euo pipefail
DIR="${1:-${MSB_K8S_DIR:-}}"
[ -x "$DIR/kube-apiserver.sh" ] || { echo "usage: $0 DIR (a start.sh directory)" >&2; exit 2; }
pid="$(cat "$DIR/kube-apiserver.pid" 2>/dev/null || true)"
if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null || true)" = kube-apiserver ]; then
  kill "$pid"
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
fi
setsid "$DIR/kube-apiserver.sh" </dev/null >>"$DIR/kube-apiserver.log" 2>&1 &
echo $! > "$DIR/kube-apiserver.pid"
# shellcheck disable=SC1091
. "$DIR/env"
for _ in $(seq 1 300); do
  kubectl get --raw /readyz >/dev/null 2>&1 && { echo "[k8s-restart] apiserver ready" >&2; exit 0; }
  sleep 0.2
done
echo "[k8s-restart] apiserver not ready after 60 s; see $DIR/kube-apiserver.log" >&2
exit 1
