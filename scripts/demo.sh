#!/usr/bin/env bash
# Run Python in a sandbox on this machine: start a local agent if none runs, create a sandbox from
# the `python` image (served by the local registry as docker.io's mirror), run code, remove it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

STATE="${MSB_STATE_DIR:-/var/lib/microsandbox}"
AGENT="${MSB_AGENT_BIN:-target/release/microsandbox-agent}"
SOCK="$STATE/agent.sock"
NAME="demo-$$"

if ! curl -s --max-time 2 --unix-socket "$SOCK" http://localhost/healthz >/dev/null 2>&1; then
  echo "starting microsandbox-agent (state: $STATE, log: $STATE/agent.log)"
  mkdir -p "$STATE"
  setsid nohup "$AGENT" serve --state-dir "$STATE" --mirror docker.io=127.0.0.1:5000 \
    >/dev/null 2>>"$STATE/agent.log" < /dev/null &
  for _ in $(seq 100); do
    curl -s --max-time 1 --unix-socket "$SOCK" http://localhost/healthz >/dev/null 2>&1 && break
    sleep 0.1
  done
fi

api() { # METHOD PATH [JSON]
  curl -sS --unix-socket "$SOCK" -X "$1" -H "Authorization: Bearer $(cat "$STATE/agent.token")" \
    -H 'content-type: application/json' ${3:+-d "$3"} "http://localhost$2"
}

trap 'api DELETE "/v1/sandboxes/$NAME" >/dev/null || true' EXIT
echo "== create sandbox $NAME (image: python, container isolation on this host)"
api POST /v1/sandboxes "{\"name\":\"$NAME\",\"image\":\"python\",\"memory_mib\":512,\"detached\":true}"
echo
echo "== exec python3 -c \"print('Hello!')\""
out=$(api POST "/v1/sandboxes/$NAME/exec" '{"command":"python3","args":["-c","import platform; print(\"Hello from\", platform.python_version())"]}')
echo "$out" | python3 -c 'import base64,json,sys; o=json.load(sys.stdin); print(base64.b64decode(o.get("stdout_b64","")).decode(), end=""); sys.exit(o.get("exit_code", 1))' \
  || { echo "exec failed: $out"; exit 1; }
