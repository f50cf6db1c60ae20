#!/usr/bin/env bash
# Everything a one-node test cluster needs besides the API server, cached outside the tree:
#   kubelet, kube-proxy, kube-scheduler, kube-controller-manager  (control-plane/build.sh --node)
#   containerd + containerd-shim-runc-v2                          (Debian's package, pinned)
#   runc                                                          (its Go module, cgo + libseccomp)
# into ${MSB_CACHE:-~/.cache/microsandbox}/k8s/<KUBE_VERSION>/bin. Idempotent; prints the bin
# directory with --print-bin-dir. The CNI plugins, nftables and libseccomp-dev are Debian
# bookworm packages (scripts/setup.sh installs them).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
# shellcheck source=../control-plane/versions.env
. "$HERE/../control-plane/versions.env"
# shellcheck source=versions.env
. "$HERE/versions.env"
LOG_TAG=node-build
# shellcheck source=../../../images/lib.sh
. "$ROOT/images/lib.sh"

PRINT=0
[[ ${1:-} == --print-bin-dir ]] && PRINT=1

BIN=$("$HERE/../control-plane/build.sh" --node --print-bin-dir)
containerd_ok() {
  [[ -x $BIN/containerd && -x $BIN/containerd-shim-runc-v2 && -f $BIN/containerd.deb-version &&
    $(<"$BIN/containerd.deb-version") == "$CONTAINERD_DEB_VERSION" ]]
}
if ! containerd_ok; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  log "containerd $CONTAINERD_DEB_VERSION from Debian $CONTAINERD_SUITE" >&2
  deb=$(apt_download "$CONTAINERD_SUITE" containerd "$CONTAINERD_DEB_VERSION" "$CONTAINERD_DEB_SHA256" "$work")
  dpkg-deb -x "$deb" "$work/x"
  for b in containerd containerd-shim-runc-v2 ctr; do
    install -m 0755 "$work/x/usr/bin/$b" "$BIN/$b.tmp"
    mv -f "$BIN/$b.tmp" "$BIN/$b"
  done
  echo "$CONTAINERD_DEB_VERSION" >"$BIN/containerd.deb-version"
  "$BIN/containerd" --version >&2
fi
runc_ok() { [[ $("$BIN/runc" --version 2>/dev/null | head -n 1) == "runc version ${RUNC_VERSION#v}" ]]; }
if ! runc_ok; then
  log "runc $RUNC_VERSION from its Go module" >&2
  gobin=$(mktemp -d)
  (cd "$gobin" && GOTOOLCHAIN=local CGO_ENABLED=1 GOBIN=$gobin GOFLAGS=-trimpath \
    go install -tags seccomp -ldflags "-s -w -X main.version=${RUNC_VERSION#v}" \
    "github.com/opencontainers/runc@$RUNC_VERSION") >&2 || die "building runc $RUNC_VERSION failed"
  mv -f "$gobin/runc" "$BIN/runc"
  rm -rf "$gobin"
  runc_ok || die "$BIN/runc does not report $RUNC_VERSION"
fi
if [[ $PRINT == 1 ]]; then echo "$BIN"; else log "ready: $BIN"; fi
