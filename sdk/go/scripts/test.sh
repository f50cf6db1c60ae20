#!/usr/bin/env bash
# Go SDK checks: gofmt, go vet, staticcheck (installed once, pinned, into the project cache),
# then go test against a real agent (MSB_AGENT_BIN, MSB_GUEST_AGENT; the Makefile exports them).
set -euo pipefail
SDK=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${MSB_CACHE:-$HOME/.cache/microsandbox}
STATICCHECK_VERSION=v0.8.2
BIN=$CACHE/go-bin
cd "$SDK"
if [[ ! -x $BIN/staticcheck-$STATICCHECK_VERSION ]]; then
  echo "[sdk/go] installing staticcheck $STATICCHECK_VERSION into $BIN"
  mkdir -p "$BIN"
  GOBIN=$BIN go install "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION"
  mv "$BIN/staticcheck" "$BIN/staticcheck-$STATICCHECK_VERSION"
fi
echo "[sdk/go] gofmt"
unformatted=$(gofmt -l .)
[[ -z $unformatted ]] || { echo "gofmt: $unformatted" >&2; exit 1; }
echo "[sdk/go] go vet"
go vet ./...
echo "[sdk/go] staticcheck"
"$BIN/staticcheck-$STATICCHECK_VERSION" ./...
echo "[sdk/go] go test"
go test -count=1 "$@" ./...
