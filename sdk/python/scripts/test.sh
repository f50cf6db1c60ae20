#!/usr/bin/env bash
# Python SDK tests: dev setup (idempotent), lint (ruff), type checks (mypy --strict, stubtest of
# the native module's stubs), then pytest against a real node agent that the test session starts.
#
# Needs what the Rust integration tests need: root, crun, the local registry with the test
# images (`make setup`), the static guest agent (`make guest`) and an agent binary (release or
# debug build; built here in debug if there is none, or set MSB_AGENT_BIN).
# Extra arguments go to pytest, e.g. `scripts/test.sh -k stream -x`.
set -euo pipefail

SDK=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPO=$(cd "$SDK/../.." && pwd)
VENV=$SDK/.venv

bash "$SDK/scripts/dev-setup.sh"

if [[ -z ${MSB_AGENT_BIN:-} && ! -x $REPO/target/release/microsandbox-agent \
      && ! -x $REPO/target/debug/microsandbox-agent ]]; then
  echo "[sdk/python] no agent binary: building microsandbox-agent (debug)"
  (cd "$REPO" && cargo build -p microsandbox-agent)
fi

if [[ -z ${MSB_CLI_BIN:-} && ! -x $REPO/target/debug/msb ]]; then
  echo "[sdk/python] no msb binary (tests/test_mcp.py drives \`msb mcp\`): building microsandbox-cli"
  (cd "$REPO" && cargo build -p microsandbox-cli)
fi

echo "[sdk/python] ruff"
(cd "$SDK" && "$VENV/bin/ruff" check --quiet python tests tests_cluster examples)
echo "[sdk/python] mypy"
(cd "$SDK" && "$VENV/bin/python" -m mypy)
echo "[sdk/python] stubtest"
(cd /tmp && "$VENV/bin/python" -m mypy.stubtest microsandbox \
  --allowlist "$SDK/stubtest-allowlist.txt")
echo "[sdk/python] pytest"
cd "$SDK"
exec "$VENV/bin/python" -m pytest "$@"
