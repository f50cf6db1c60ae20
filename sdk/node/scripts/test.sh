#!/usr/bin/env bash
# Node.js SDK: builds the native core (napi-rs over the microsandbox crate), type-checks the
# examples with tsc --strict, runs node's test runner against an agent the SDK starts, then
# packs the package, installs the tarball in an empty directory and runs the example from there.
# Needs MSB_AGENT_BIN / MSB_GUEST_AGENT (the Makefile exports them), `make setup`, `make guest`.
set -euo pipefail
SDK=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPO=$(cd "$SDK/../.." && pwd)
CACHE=${MSB_CACHE:-$HOME/.cache/microsandbox}
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
TOOLS=$CACHE/node-tools/ts-5.9
cd "$SDK"

echo "[sdk/node] native core"
(cd "$REPO" && cargo build -q -p microsandbox-node)
cp "$TARGET/debug/libmicrosandbox_node.so" "$SDK/microsandbox.node"

if [[ ! -x $TOOLS/node_modules/.bin/tsc ]]; then
  echo "[sdk/node] installing typescript and @types/node into $TOOLS"
  mkdir -p "$TOOLS"
  npm install --silent --no-audit --no-fund --prefix "$TOOLS" typescript@5.9 @types/node@20 >/dev/null
fi
echo "[sdk/node] tsc --strict (index.d.ts and the examples)"
NODE_PATH=$TOOLS/node_modules "$TOOLS/node_modules/.bin/tsc" -p examples/tsconfig.json \
  --typeRoots "$TOOLS/node_modules/@types"

STATE=$(mktemp -d /tmp/msbnode-XXXXXX)
stop_agent() {
  pkill -TERM -f -- "--state-dir $STATE" 2>/dev/null || true
  sleep 0.5
  rm -rf "$STATE" "$SDK/build"
}
trap stop_agent EXIT
export MSB_STATE_DIR=$STATE MSB_MIRRORS=${MSB_MIRRORS:-${MSB_TEST_MIRROR:-docker.io=127.0.0.1:5000}}
unset MSB_AGENT_SOCKET MSB_HOST_ROOTS

echo "[sdk/node] node --test"
node --test tests/

echo "[sdk/node] npm pack, install the tarball in an empty directory, run the example"
PKG=$(npm pack --silent --pack-destination "$STATE")
APP=$STATE/app
mkdir -p "$APP"
(cd "$APP" && npm init -y >/dev/null && npm install --silent --no-audit --no-fund "$STATE/$PKG" >/dev/null)
cp build/examples/hello.js "$APP/hello.js"
out=$(cd "$APP" && node hello.js)
expected=$'Hello!\n1\n2\ntimed out (exit 137)'
[[ $out == "$expected" ]] || { echo "example printed:"; echo "$out"; exit 1; }
echo "[sdk/node] ok"
