#!/usr/bin/env bash
# SDK benchmark (issue 14): the same program in every SDK against one agent in the same run —
# exec("true") p50/p99 in one sandbox, create -> first output (median of 7), and 64 MiB of stdout streamed —
# printed with each SDK's ratio to the Rust crate's numbers. Container isolation (this machine's
# KVM cannot boot a guest). Needs `make setup`, `make guest`; builds what it runs.
# Usage: bench/sdks.sh [N execs, default 200]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
N=${1:-200}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
cd "$ROOT"
cargo build -q -p microsandbox-agent -p microsandbox-node --release
cargo build -q -p microsandbox --release --example bench_exec
cp "$TARGET/release/libmicrosandbox_node.so" sdk/node/microsandbox.node
bash sdk/python/scripts/dev-setup.sh >/dev/null
(cd sdk/go && go build -o "$TARGET/release/go-benchexec" ./cmd/benchexec)

STATE=$(mktemp -d /tmp/msbbench-XXXXXX)
trap 'pkill -TERM -f -- "--state-dir $STATE" 2>/dev/null || true; sleep 0.5; rm -rf "$STATE"' EXIT
export MSB_STATE_DIR=$STATE MSB_AGENT_BIN=$TARGET/release/microsandbox-agent
export MSB_GUEST_AGENT=${MSB_GUEST_AGENT:-$TARGET/x86_64-unknown-linux-gnu/release/microsandbox-guest}
export MSB_MIRRORS=${MSB_MIRRORS:-docker.io=127.0.0.1:5000}
unset MSB_AGENT_SOCKET MSB_HOST_ROOTS

# Warm-up (not measured): starts the agent and pulls the image, so that no SDK's "create"
# includes them.
"$TARGET/release/examples/bench_exec" 1 >/dev/null
rows=()
rows+=("$("$TARGET/release/examples/bench_exec" "$N")")
rows+=("$(sdk/python/.venv/bin/python sdk/python/examples/bench_exec.py "$N")")
rows+=("$("$TARGET/release/go-benchexec" "$N")")
rows+=("$(node sdk/node/bench/bench_exec.js "$N")")
printf '%s\n' "${rows[@]}" | awk -v n="$N" '
  NR == 1 { r50 = $2; r99 = $3; rc = $4; rs = $5 }
  { line[NR] = $0; name[NR] = $1; p50[NR] = $2; p99[NR] = $3; c[NR] = $4; s[NR] = $5 }
  END {
    printf "exec(\"true\") x %d, create -> first output, 64 MiB stdout streamed (ratio: SDK / Rust)\n", n
    printf "%-8s %10s %6s %10s %6s %12s %6s %10s %6s\n", "sdk", "p50 ms", "x", "p99 ms", "x", "create ms", "x", "MiB/s", "x"
    for (i = 1; i <= NR; i++)
      printf "%-8s %10.3f %6.2f %10.3f %6.2f %12.1f %6.2f %10.0f %6.2f\n", name[i], p50[i], p50[i] / r50, p99[i], p99[i] / r99, c[i], c[i] / rc, s[i], s[i] / rs
  }'
