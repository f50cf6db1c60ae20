#!/usr/bin/env bash
# Dev environment of the Python SDK: sdk/python/.venv with maturin, pytest, pytest-asyncio and
# mypy, and the package installed in it (editable; the native module built with
# `maturin develop --release`). Idempotent and fast when nothing changed: the tools are
# installed once, and the native module is rebuilt only when a Rust source is newer than it.
#
#   PYTHON=python3.12 scripts/dev-setup.sh   # another interpreter for the venv (>= 3.10)
#   MSB_SDK_PROFILE=debug scripts/dev-setup.sh  # faster, unoptimised native build
#
# The agent binaries are not bundled here (MSB_SDK_BUNDLE=0, see build.rs): the dev flow uses
# MSB_AGENT_BIN (the Makefile sets it) or an agent on PATH. Wheels (`pip install`, `maturin
# build`, scripts/build-wheel.sh) bundle them.
set -euo pipefail

SDK=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPO=$(cd "$SDK/../.." && pwd)
VENV=$SDK/.venv
PY=${PYTHON:-python3}
PROFILE=${MSB_SDK_PROFILE:-release}

log() { printf '[sdk/python] %s\n' "$*"; }

if [[ ! -x $VENV/bin/python ]]; then
  log "creating $VENV"
  "$PY" -m venv "$VENV"
fi

# Tools: reinstalled only when requirements-dev.txt changes.
deps_stamp=$VENV/.requirements-dev.sha256
deps_sum=$(sha256sum "$SDK/requirements-dev.txt" | cut -c1-64)
if [[ ! -f $deps_stamp || $(cat "$deps_stamp") != "$deps_sum" ]]; then
  log "installing dev tools"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$SDK/requirements-dev.txt"
  echo "$deps_sum" >"$deps_stamp"
fi

# Native module: rebuilt when any input is newer than the built library (or the profile changed).
lib=$(ls "$SDK"/python/microsandbox/_native*.so 2>/dev/null | head -n1 || true)
profile_stamp=$VENV/.native-profile
needs_build=0
if [[ -z $lib || ! -f $profile_stamp || $(cat "$profile_stamp") != "$PROFILE" ]]; then
  needs_build=1
elif [[ -n $(find "$SDK/src" "$SDK/build.rs" "$SDK/Cargo.toml" "$SDK/pyproject.toml" "$REPO/client/src" \
               "$REPO/client/Cargo.toml" "$REPO/wire/src" "$REPO/crds/src" "$REPO/Cargo.lock" \
               "$REPO/sdk/rust/src" "$REPO/sdk/rust/Cargo.toml" \
               -newer "$lib" -print -quit) ]]; then
  needs_build=1
elif ! "$VENV/bin/python" -c "import microsandbox" 2>/dev/null; then
  needs_build=1
fi
if ((needs_build)); then
  log "building the native module ($PROFILE)"
  args=()
  [[ $PROFILE == release ]] && args+=(--release)
  (cd "$SDK" && MSB_SDK_BUNDLE=0 VIRTUAL_ENV=$VENV PATH=$VENV/bin:$PATH "$VENV/bin/maturin" develop --quiet "${args[@]}")
  echo "$PROFILE" >"$profile_stamp"
else
  log "native module up to date"
fi
