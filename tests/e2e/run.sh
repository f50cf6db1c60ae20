#!/usr/bin/env bash
# Cluster e2e suite: builds the binaries, starts a throw-away etcd + kube-apiserver
# (control-plane/start.sh; built from Go modules and cached outside the tree), applies the CRDs
# and runs `cargo test -p microsandbox-e2e` against it. The operator and node-agents run as host
# processes started by the tests (no kubelet here). Needs the local registry and test images
# (scripts/test-registry.sh start, scripts/test-images.sh; `make setup` does both).
#
# Usage: tests/e2e/run.sh [cargo test args...]     e.g. tests/e2e/run.sh volume
# Env:   MSB_E2E_KEEP=1 keeps the control plane directory (logs) after the run.
# Tests run one at a time: one of them restarts the apiserver under everyone.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
export MSB_GUEST_AGENT="${MSB_GUEST_AGENT:-${CARGO_TARGET_DIR:-$ROOT/target}/x86_64-unknown-linux-gnu/release/microsandbox-guest}"

cargo build -q -p microsandbox-agent -p microsandbox-operator -p microsandbox-cli
make -s guest >/dev/null
# The Python and Node.js SDKs' cluster-mode tests run from here too (tests/python_sdk.rs).
bash sdk/python/scripts/dev-setup.sh
cargo build -q -p microsandbox-node
cp "${CARGO_TARGET_DIR:-$ROOT/target}/debug/libmicrosandbox_node.so" sdk/node/microsandbox.node

DIR="$(mktemp -d "${TMPDIR:-/tmp}/msb-e2e.XXXXXX")"
cleanup() {
  if [ "${MSB_E2E_KEEP:-0}" = 1 ]; then
    tests/e2e/control-plane/stop.sh --keep "$DIR" >/dev/null 2>&1 || true
    echo "[e2e] control plane state kept in $DIR" >&2
  else
    tests/e2e/control-plane/stop.sh "$DIR" >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT
tests/e2e/control-plane/start.sh "$DIR" >/dev/null
# shellcheck disable=SC1091
. "$DIR/env"
kubectl apply -f crds/microsandbox.dev_crds.yaml >/dev/null
kubectl wait --for=condition=Established crd --all --timeout=60s >/dev/null
cargo test -p microsandbox-e2e --tests -- --test-threads=1 "$@"
