#!/usr/bin/env bash
# CLI benchmark (issue 15): wall time of `msx python -c 'print(1)'` (a temporary sandbox:
# create, run, remove, through a running agent) against `crun run` of the same python rootfs
# (bundle made here from the test image's cached rootfs, no network, no sandbox setup) in the
# same run; median and p90 of N runs each, and their ratio. Needs `make setup`, `make guest`.
# Usage: bench/msx.sh [N, default 20]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
N=${1:-20}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
CACHE=${MSB_CACHE:-$HOME/.cache/microsandbox}
cd "$ROOT"
cargo build -q --release -p microsandbox-agent -p microsandbox-cli

WORK=$(mktemp -d /tmp/msbmsx-XXXXXX)
export MSB_STATE_DIR=$WORK/state MSB_AGENT_BIN=$TARGET/release/microsandbox-agent
export MSB_GUEST_AGENT=${MSB_GUEST_AGENT:-$TARGET/x86_64-unknown-linux-gnu/release/microsandbox-guest}
export MSB_MIRRORS=${MSB_MIRRORS:-docker.io=127.0.0.1:5000}
unset MSB_AGENT_SOCKET MSB_HOST_ROOTS
cleanup() {
  pkill -TERM -f -- "--state-dir $MSB_STATE_DIR" 2>/dev/null || true
  sleep 0.5
  crun --root "$WORK/crun" delete --force msbbench >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
MSB=$TARGET/release/msb MSX=$TARGET/release/msx

# The baseline: crun running the same rootfs straight from a bundle.
tarball=$(ls "$CACHE"/images/python-rootfs-*.tar.gz 2>/dev/null | head -n1)
[[ -n $tarball ]] || { echo "no cached python rootfs: run scripts/test-images.sh" >&2; exit 1; }
mkdir -p "$WORK/bundle/rootfs"
tar --numeric-owner -xzf "$tarball" -C "$WORK/bundle/rootfs"
if [[ $EUID -eq 0 ]]; then (cd "$WORK/bundle" && crun spec); else (cd "$WORK/bundle" && crun spec --rootless); fi
jq '.process.terminal = false | .process.args = ["python3", "-c", "print(1)"] | .root.readonly = false' \
  "$WORK/bundle/config.json" >"$WORK/config.json"
mv "$WORK/config.json" "$WORK/bundle/config.json"

"$MSB" server start --detach >/dev/null
"$MSB" pull python >/dev/null

# time_runs NAME CMD...: N wall times in ms (after one warm-up run), one per line.
time_runs() {
  local name=$1 i t0 t1
  shift
  "$@" >/dev/null
  for ((i = 0; i < N; i++)); do
    t0=$(date +%s%N)
    out=$("$@")
    t1=$(date +%s%N)
    [[ $out == 1 ]] || { echo "$name printed $out" >&2; exit 1; }
    echo $(((t1 - t0) / 1000))
  done >"$WORK/$name.us"
}
time_runs crun crun --root "$WORK/crun" run --bundle "$WORK/bundle" msbbench
time_runs msx "$MSX" python -c 'print(1)'

stats() { sort -n "$WORK/$1.us" | awk '{ v[NR] = $1 } END { printf "%.1f %.1f", v[int((NR + 1) / 2)] / 1000, v[int(NR * 0.9 + 0.5)] / 1000 }'; }
read -r c50 c90 <<<"$(stats crun)"
read -r m50 m90 <<<"$(stats msx)"
printf "msx python -c 'print(1)' vs crun run of the same rootfs, %d runs each (container isolation)\n" "$N"
printf "%-6s %10s %10s\n" "" "median ms" "p90 ms"
printf "%-6s %10s %10s\n" crun "$c50" "$c90"
printf "%-6s %10s %10s\n" msx "$m50" "$m90"
awk -v a="$m50" -v b="$c50" 'BEGIN { printf "ratio msx / crun (median): %.2fx\n", a / b }'
