#!/usr/bin/env bash
# Python SDK exec overhead vs the Rust client, in the same run (sdk/python/bench/exec_bench.py).
# Needs what bench/run.sh needs: root, crun, the local registry with busybox (`make setup`).
#
#   bash sdk/python/bench/run.sh
#   MSB_BENCH_EXEC_ITERS=1000 MSB_STATE_DIR=/tmp/s bash sdk/python/bench/run.sh
#
# Builds the release agent + static guest (`make agent`), the SDK's dev venv and the Rust side
# (`cargo build --release -p microsandbox-bench --example exec_rtt`), then prints a markdown
# table (python/rust ratios; target: exec p50 <= 1.3x) and writes target/bench-python.json.
# Exit status 2 when the exec p50 ratio misses the target (MSB_BENCH_NO_FAIL=1 to ignore).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
cd "$REPO"

[[ $(id -u) -eq 0 ]] || { echo "bench: must run as root (crun, overlay mounts, cgroups)" >&2; exit 1; }
command -v crun >/dev/null || { echo "bench: crun not found; run scripts/setup.sh" >&2; exit 1; }

make agent
bash sdk/python/scripts/dev-setup.sh
cargo build --release -p microsandbox-bench --example exec_rtt

export MSB_AGENT_BIN=${MSB_AGENT_BIN:-$REPO/target/release/microsandbox-agent}
export MSB_GUEST_AGENT=${MSB_GUEST_AGENT:-$REPO/target/x86_64-unknown-linux-gnu/release/microsandbox-guest}
export MSB_BENCH_RUST_BIN=${MSB_BENCH_RUST_BIN:-$REPO/target/release/examples/exec_rtt}
export MSB_BENCH_JSON=${MSB_BENCH_JSON:-$REPO/target/bench-python.json}
exec sdk/python/.venv/bin/python sdk/python/bench/exec_bench.py
