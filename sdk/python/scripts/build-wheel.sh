#!/usr/bin/env bash
# Builds a self-contained wheel into sdk/python/dist/: the native module plus the node agent
# and the static guest agent in microsandbox/bin/, so `pip install` is all a user needs (the SDK
# starts the bundled agent when none runs). The bundling is done by build.rs (nested release
# builds in target/bundle), exactly as in `pip install ./sdk/python`; this script only adds the
# dev venv's maturin (scripts/dev-setup.sh). Extra arguments go to `maturin build`.
set -euo pipefail

SDK=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

bash "$SDK/scripts/dev-setup.sh"
cd "$SDK"
MSB_SDK_BUNDLE=1 "$SDK/.venv/bin/maturin" build --release -o "$SDK/dist" "$@"
ls -l "$SDK/dist"
