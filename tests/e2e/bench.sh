#!/usr/bin/env bash
# Cluster benchmark: release builds of the operator and node-agent on a throw-away kube-apiserver
# + etcd; prints create->Ready p50/p99, the scaling curve (bursts of MSB_BENCH_BURST Sandboxes to
# all Ready and deleted) and peak RSS, each against the node-agent API measured in the same run.
#
# Usage: tests/e2e/bench.sh      Env: MSB_BENCH_SAMPLES (30), MSB_BENCH_BURST (100,250,500,1000)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
export MSB_GUEST_AGENT="${MSB_GUEST_AGENT:-${CARGO_TARGET_DIR:-$ROOT/target}/x86_64-unknown-linux-gnu/release/microsandbox-guest}"
cargo build -q --release -p microsandbox-agent -p microsandbox-operator -p microsandbox-e2e
make -s guest >/dev/null
DIR="$(mktemp -d "${TMPDIR:-/tmp}/msb-bench.XXXXXX")"
trap 'tests/e2e/control-plane/stop.sh "$DIR" >/dev/null 2>&1 || true' EXIT
tests/e2e/control-plane/start.sh "$DIR" >/dev/null
# shellcheck disable=SC1091
. "$DIR/env"
kubectl apply -f crds/microsandbox.dev_crds.yaml >/dev/null
kubectl wait --for=condition=Established crd --all --timeout=60s >/dev/null
"${CARGO_TARGET_DIR:-target}/release/cluster-bench"
