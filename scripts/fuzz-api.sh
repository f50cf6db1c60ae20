#!/usr/bin/env bash
# API fuzzing: schemathesis (pinned, installed once into a cached venv) against a real agent,
# authenticated, every operation of node-agent/openapi.yaml, all checks, then the stateful phase
# (links from create to the per-sandbox and per-volume operations). Afterwards the agent must
# still answer, and once every sandbox and volume the run made is removed, nothing it created may
# be left: no mount, network namespace, cgroup, crun container or nftables chain.
#
# Confinement: the agent and schemathesis run in a network namespace of their own with only a
# loopback interface, so nothing a fuzzed request names (image registries, hosts) is contacted.
# Images come from a state directory that pulled `busybox` beforehand (from the local registry).
#
# Usage: scripts/fuzz-api.sh [EXAMPLES]   (max examples per operation; default 25, CI uses fewer)
#        MSB_FUZZ_MAX_TIME=SECONDS bounds the whole run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EXAMPLES="${1:-${MSB_FUZZ_EXAMPLES:-25}}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
AGENT="${MSB_AGENT_BIN:-$TARGET/debug/microsandbox-agent}"
GUEST="${MSB_GUEST_AGENT:-$TARGET/x86_64-unknown-linux-gnu/release/microsandbox-guest}"
ST_VERSION=4.32.5
VENV="${XDG_CACHE_HOME:-$HOME/.cache}/microsandbox/schemathesis-$ST_VERSION"

[[ -x $AGENT ]] || { echo "fuzz-api: $AGENT missing (cargo build -p microsandbox-agent)" >&2; exit 1; }
if [[ ! -x $VENV/bin/st ]]; then
  echo "fuzz-api: installing schemathesis $ST_VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "schemathesis==$ST_VERSION"
fi

STATE="$(mktemp -d /tmp/msb-fuzz.XXXXXX)"
NS="msb-fuzz-$$"
PORT=7979
AGENT_PID=""
cleanup() {
  [[ -n $AGENT_PID ]] && kill "$AGENT_PID" 2>/dev/null && wait "$AGENT_PID" 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
  rm -rf "$STATE"
}
trap cleanup EXIT

start_agent() { # [ip netns exec NS]
  "$@" "$AGENT" serve --state-dir "$STATE" --guest-agent "$GUEST" \
    --mirror docker.io=127.0.0.1:5000 --listen "127.0.0.1:$PORT" 2>>"$STATE/agent.log" &
  AGENT_PID=$!
  for _ in $(seq 200); do
    "$@" curl -s --max-time 1 "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "fuzz-api: the agent did not start; its log:" >&2
  tail -20 "$STATE/agent.log" >&2
  exit 1
}
api() { # METHOD PATH [JSON]   (inside the namespace)
  ip netns exec "$NS" curl -sS -X "$1" -H "Authorization: Bearer $(cat "$STATE/agent.token")" \
    -H 'content-type: application/json' ${3:+-d "$3"} "http://127.0.0.1:$PORT$2"
}

# 1. Pull busybox from the local registry (host namespace), then stop.
start_agent
curl -sS -X POST -H "Authorization: Bearer $(cat "$STATE/agent.token")" \
  -H 'content-type: application/json' -d '{"image":"busybox"}' \
  "http://127.0.0.1:$PORT/v1/images/pull" >/dev/null
kill "$AGENT_PID"; wait "$AGENT_PID" 2>/dev/null || true

# 2. The agent in a namespace with loopback only; schemathesis beside it.
ip netns add "$NS"
ip -n "$NS" link set lo up
start_agent ip netns exec "$NS"
TOKEN="$(cat "$STATE/agent.token")"
echo "fuzz-api: schemathesis $ST_VERSION, $EXAMPLES examples per operation, agent $AGENT"
set +e
# The two WebSocket routes (exec/ws, lease) are left out: schemathesis speaks plain HTTP; the SDK
# suites drive them.
ip netns exec "$NS" "$VENV/bin/st" --config-file "$ROOT/node-agent/fuzz/schemathesis.toml" \
  run "$ROOT/node-agent/openapi.yaml" --exclude-path-regex '/(exec/ws|lease)$' \
  --url "http://127.0.0.1:$PORT" -H "Authorization: Bearer $TOKEN" \
  --checks all --max-examples "$EXAMPLES" --workers 1 --request-timeout 60 \
  ${MSB_FUZZ_MAX_TIME:+--max-time "$MSB_FUZZ_MAX_TIME"} \
  --suppress-health-check all --no-color --report junit --report-dir "$STATE/report"
status=$?
set -e

# 3. Still serving; remove what the run made; nothing may be left.
api GET /healthz >/dev/null || { echo "fuzz-api: the agent stopped answering" >&2; exit 1; }
for name in $(api GET /v1/sandboxes | python3 -c 'import json,sys; [print(s["name"]) for s in json.load(sys.stdin)]'); do
  api DELETE "/v1/sandboxes/$name" >/dev/null
done
for name in $(api GET /v1/volumes | python3 -c 'import json,sys; [print(v["name"]) for v in json.load(sys.stdin)]'); do
  api DELETE "/v1/volumes/$name" >/dev/null
done
left=()
mounts=$(grep -c " $STATE/" /proc/self/mountinfo || true)
[[ $mounts -eq 0 ]] || left+=("$mounts mounts under $STATE")
# The agent names sandbox namespaces msb<first 6 hex of sha256(state dir)>-<sandbox>.
prefix="msb$(printf %s "$STATE" | sha256sum | cut -c1-6)-"
netns=$(ls /run/netns 2>/dev/null | grep -c "^$prefix" || true)
[[ $netns -eq 0 ]] || left+=("$netns sandbox network namespaces")
containers=$(crun --root "$STATE/crun" list -q 2>/dev/null | grep -c . || true)
[[ $containers -eq 0 ]] || left+=("$containers crun containers")
[[ -z $(ls "$STATE/sandboxes" 2>/dev/null) ]] || left+=("sandbox directories: $(ls "$STATE/sandboxes" | head -5 | tr '\n' ' ')")
if (( ${#left[@]} )); then
  printf 'fuzz-api: left behind: %s\n' "${left[@]}" >&2
  exit 1
fi
echo "fuzz-api: agent still serving, nothing left behind"
exit "$status"
