#!/usr/bin/env bash
# Helm-path benchmark, side by side in one run:
#   1. host-process agents (tests/e2e/bench.sh: create -> Ready p50/p99 against the operator
#      and node-agent running as host processes on a bare apiserver), small burst;
#   2. the chart's pods on the one-node cluster (tests/e2e/helm/run.sh with 20 sandboxes):
#      helm install -> first Sandbox Ready, Sandbox apply -> Ready p50/p99 with the agent as a
#      pod, and the longest window in which a running sandbox could not exec during
#      `helm upgrade` of the DaemonSet.
# Usage: tests/e2e/helm/bench.sh     (as root)   Env: MSB_HELM_SANDBOXES (20)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
cd "$ROOT"
echo "== host-process agents (tests/e2e/bench.sh, 20 samples, burst 20)"
MSB_BENCH_SAMPLES=20 MSB_BENCH_BURST=20 tests/e2e/bench.sh
echo
echo "== the chart's pods on a one-node cluster (tests/e2e/helm/run.sh, ${MSB_HELM_SANDBOXES:-20} sandboxes)"
MSB_HELM_SANDBOXES=${MSB_HELM_SANDBOXES:-20} tests/e2e/helm/run.sh
