#!/usr/bin/env bash
# Builds a self-contained wheel into sdk/python/dist/: the native module plus the node agent
# and the static guest agent in microsandbox/bin/, so `pip install` is all a user needs (the SDK
# starts the bundled agent when none runs). Uses the dev venv's maturin (scripts/dev-setup.sh).
set -euo pipefail

SDK=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPO=$(cd "$SDK/../.." && pwd)
HOST_TRIPLE=x86_64-unknown-linux-gnu

bash "$SDK/scripts/dev-setup.sh"
cd "$REPO"
RUSTFLAGS="-C target-feature=+crt-static" cargo build -p microsandbox-guest --release --target "$HOST_TRIPLE"
cargo build -p microsandbox-agent --release
bin=$SDK/python/microsandbox/bin
mkdir -p "$bin"
install -m 0755 "target/release/microsandbox-agent" "$bin/microsandbox-agent"
install -m 0755 "target/$HOST_TRIPLE/release/microsandbox-guest" "$bin/microsandbox-guest"
cd "$SDK"
"$SDK/.venv/bin/maturin" build --release -o "$SDK/dist" "$@"
ls -l "$SDK/dist"
