#!/usr/bin/env bash
# Builds the release agent + static guest agent (`make agent`) and runs the benchmarks.
# Needs root, crun and the local test registry with the busybox image (`make setup`).
#
#   bash bench/run.sh                         # full run
#   MSB_BENCH_SANDBOXES=20 bash bench/run.sh  # fewer idle sandboxes for the memory benchmark
#   MSB_BENCH_ONLY=exec,stream bash bench/run.sh
#
# Prints a markdown table (ratios against baselines measured in the same run) and writes
# target/bench-results.json. Knobs: see bench/src/main.rs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

[[ $(id -u) -eq 0 ]] || { echo "bench: must run as root (crun, overlay mounts, cgroups)" >&2; exit 1; }
command -v crun >/dev/null || { echo "bench: crun not found; run scripts/setup.sh" >&2; exit 1; }

make agent
export MSB_GUEST_AGENT=${MSB_GUEST_AGENT:-$PWD/target/x86_64-unknown-linux-gnu/release/microsandbox-guest}
exec cargo run --release -p microsandbox-bench
