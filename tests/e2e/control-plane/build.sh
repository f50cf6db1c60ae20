#!/usr/bin/env bash
# Build a real Kubernetes control plane (kube-apiserver, etcd, kubectl, helm)
# from Go modules with the local Go toolchain, and cache the binaries outside
# the repository:
#
#   ${MSB_CACHE:-$HOME/.cache/microsandbox}/k8s/${KUBE_VERSION}/bin/
#
# Only a Go module proxy is needed (no Docker, no container registry, no
# GitHub release downloads). Idempotent: a binary is rebuilt only when it is
# missing or its `--version` output does not match the wanted version, so a
# second run returns immediately.
#
# Usage: tests/e2e/control-plane/build.sh [--print-bin-dir] [--force] [--node]
#   --print-bin-dir  only print the bin directory (after building if needed)
#   --force          rebuild all binaries
#   --node           also build what a node and the rest of the control plane need: kubelet,
#                    kube-proxy, kube-scheduler, kube-controller-manager (same module graph)
#
# Environment:
#   KUBE_VERSION / ETCD_VERSION / HELM_VERSION   see versions.env
#   MSB_CACHE                 cache root (default ~/.cache/microsandbox)
#   MSB_BUILD_GOMAXPROCS      GOMAXPROCS for the go tool (default 2)
#   MSB_BUILD_PARALLEL        go build -p (default 1: gentle on shared machines)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
. "${HERE}/versions.env"

PRINT_ONLY=0
FORCE=0
NODE=0
for arg in "$@"; do
  case "$arg" in
    --print-bin-dir) PRINT_ONLY=1 ;;
    --force) FORCE=1 ;;
    --node) NODE=1 ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

log() { if [ "$PRINT_ONLY" = 1 ]; then echo "[k8s-build] $*" >&2; else echo "[k8s-build] $*"; fi; }
die() { echo "[k8s-build] ERROR: $*" >&2; exit 1; }

command -v go >/dev/null || die "go not found in PATH"

SRC_DIR="${K8S_CACHE_DIR}/src"
mkdir -p "${K8S_BIN_DIR}" "${SRC_DIR}"

# ---------------------------------------------------------------- checks --
# Capture first, then match: `bin --version | grep -q` can fail under
# pipefail when grep exits early and the binary gets SIGPIPE.
out_has() { # regex cmd...
  local re="$1" out; shift
  out="$("$@" 2>/dev/null)" || return 1
  grep -qx -- "$re" <<<"$out"
}
kube_ok()  { out_has "Kubernetes ${KUBE_VERSION}" "${K8S_BIN_DIR}/kube-apiserver" --version; }
kctl_ok()  { out_has "Client Version: ${KUBE_VERSION}" "${K8S_BIN_DIR}/kubectl" version --client; }
etcd_ok()  { out_has "etcd Version: ${ETCD_VERSION#v}" "${K8S_BIN_DIR}/etcd" --version; }
helm_ok()  { out_has "${HELM_VERSION}\(+.*\)\{0,1\}" "${K8S_BIN_DIR}/helm" version --short; }
NODE_BINS="kubelet kube-proxy kube-scheduler kube-controller-manager"
node_bin_ok() { out_has "Kubernetes ${KUBE_VERSION}" "${K8S_BIN_DIR}/$1" --version; }
node_ok()  {
  [ "$NODE" = 0 ] && return 0
  local b; for b in $NODE_BINS; do node_bin_ok "$b" || return 1; done
}
all_ok()   { kube_ok && kctl_ok && etcd_ok && helm_ok && node_ok; }

if [ "$FORCE" = 0 ] && all_ok; then
  log "up to date: kubernetes ${KUBE_VERSION}, etcd ${ETCD_VERSION}, helm ${HELM_VERSION} in ${K8S_BIN_DIR}"
  [ "$PRINT_ONLY" = 1 ] && echo "${K8S_BIN_DIR}"
  exit 0
fi

# Serialise concurrent builds of the same version.
exec 9>"${K8S_CACHE_DIR}/.build.lock"
if command -v flock >/dev/null; then
  if ! flock -n 9; then
    log "another build of ${KUBE_VERSION} is running; waiting for ${K8S_CACHE_DIR}/.build.lock"
    flock 9
  fi
  if [ "$FORCE" = 0 ] && all_ok; then
    log "built by a concurrent run; up to date"
    [ "$PRINT_ONLY" = 1 ] && echo "${K8S_BIN_DIR}"
    exit 0
  fi
fi

# Everything the go tool prints goes to stderr when only the path is wanted.
if [ "$PRINT_ONLY" = 1 ]; then exec 3>&1 1>&2; fi

# ------------------------------------------------------------ go settings --
export CGO_ENABLED=0
export GOTOOLCHAIN=local          # never download another toolchain
export GOFLAGS="-trimpath -buildvcs=false"
export GOMAXPROCS="${MSB_BUILD_GOMAXPROCS:-2}"
PAR="${MSB_BUILD_PARALLEL:-1}"
GOVERSION="$(go env GOVERSION)"

# version_ge A B : A >= B for go versions like go1.26.8 / 1.26.0
version_ge() { [ "$(printf '%s\n%s\n' "${1#go}" "${2#go}" | sort -V | head -n1)" = "${2#go}" ]; }

# Print the `go` directive of a module's go.mod (path to go.mod in $1).
go_directive() { awk '$1=="go"{print $2; exit}' "$1"; }

# Download a module (go mod download -json) and print one of its fields.
mod_field() { # module@version field
  local json
  json="$(cd "${SRC_DIR}" && GOFLAGS='' go mod download -json "$1" 2>&1)" || {
    echo "$json" >&2
    die "go mod download $1 failed (is that version available from $(go env GOPROXY)?)"
  }
  printf '%s\n' "$json" | sed -n "s/^[[:space:]]*\"$2\": \"\\(.*\\)\",\\{0,1\\}\$/\\1/p" | head -n1
}

check_go() { # module-go.mod-path label
  local want; want="$(go_directive "$1")"
  [ -n "$want" ] || return 0
  version_ge "$GOVERSION" "$want" || die "$2 needs go >= ${want}, local toolchain is ${GOVERSION}"
}

# Wrapper modules: go.mod.gen holds the generated go.mod; `go get` then adds
# requirements to go.mod. Start afresh only when the generated part changes.
install_gomod() { # dir
  if cmp -s "$1/go.mod.gen.new" "$1/go.mod.gen" && [ -f "$1/go.mod" ]; then
    rm -f "$1/go.mod.gen.new"
  else
    mv -f "$1/go.mod.gen.new" "$1/go.mod.gen"
    cp "$1/go.mod.gen" "$1/go.mod"
    rm -f "$1/go.sum"
  fi
}

START_ALL=$(date +%s)
log "toolchain ${GOVERSION}, GOMAXPROCS=${GOMAXPROCS}, -p ${PAR}, GOPROXY=$(go env GOPROXY)"
log "target: kubernetes ${KUBE_VERSION}, etcd ${ETCD_VERSION}, helm ${HELM_VERSION}"
log "output: ${K8S_BIN_DIR}"

elapsed() { echo "$(( $(date +%s) - $1 ))s"; }

# ------------------------------------------------------------ kubernetes --
build_kubernetes() {
  local wd="${SRC_DIR}/kubernetes" t
  mkdir -p "$wd"
  log "kubernetes: downloading k8s.io/kubernetes@${KUBE_VERSION} (large, first time only)"
  t=$(date +%s)
  local gomod
  gomod="$(mod_field "k8s.io/kubernetes@${KUBE_VERSION}" GoMod)"
  [ -f "$gomod" ] || die "could not download k8s.io/kubernetes@${KUBE_VERSION}"
  check_go "$gomod" "k8s.io/kubernetes@${KUBE_VERSION}"
  local commit
  commit="$(mod_field "k8s.io/kubernetes@${KUBE_VERSION}" Hash || true)"
  log "kubernetes: downloaded in $(elapsed "$t")"

  # Staging modules: every `k8s.io/X => ./staging/src/k8s.io/X` replace in
  # kubernetes' go.mod. They are published as k8s.io/X v0.<minor>.<patch>.
  local staging_ver="v0.${KUBE_VERSION#v1.}"
  local staging
  staging="$(awk '
      /^replace[[:space:]]*\(/ {inrep=1; next}
      inrep && /^\)/ {inrep=0; next}
      { line=$0; sub(/^replace[[:space:]]+/, "", line) }
      (inrep || $1=="replace") && line ~ /=>[[:space:]]*\.\/staging\// { split(line, f, /[[:space:]]+/); for (i in f) if (f[i] ~ /^k8s\.io\//) { print f[i]; break } }
    ' "$gomod" | sort -u)"
  [ -n "$staging" ] || die "no staging replace directives found in $gomod"
  log "kubernetes: $(echo "$staging" | wc -l) staging modules -> ${staging_ver}"

  {
    echo "// Generated by tests/e2e/control-plane/build.sh - do not edit."
    echo "module msb.local/k8s-control-plane-build"
    echo
    echo "go $(go_directive "$gomod")"
    echo
    echo "require k8s.io/kubernetes ${KUBE_VERSION}"
    echo
    echo "replace ("
    for m in $staging; do printf '\t%s => %s %s\n' "$m" "$m" "$staging_ver"; done
    echo ")"
  } > "$wd/go.mod.gen.new"
  install_gomod "$wd"
  # A Go file so that the module has a package (keeps `go mod tidy`-like
  # tooling quiet); the real targets are the k8s.io/kubernetes/cmd mains.
  printf 'package build\n' > "$wd/doc.go"

  local pkg=k8s.io/component-base/version cgo=k8s.io/client-go/pkg/version
  local minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
  local date; date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  local ld="-s -w"
  for p in "$pkg" "$cgo"; do
    ld="$ld -X $p.gitVersion=${KUBE_VERSION} -X $p.gitMajor=1 -X $p.gitMinor=${minor}"
    ld="$ld -X $p.gitCommit=${commit:-unknown} -X $p.gitTreeState=clean -X $p.buildDate=${date}"
  done

  log "kubernetes: resolving module graph"
  t=$(date +%s)
  local cmds="kube-apiserver kubectl" c gets=()
  [ "$NODE" = 1 ] && cmds="$cmds $NODE_BINS"
  for c in $cmds; do gets+=("k8s.io/kubernetes/cmd/$c@${KUBE_VERSION}"); done
  (cd "$wd" && go mod download k8s.io/kubernetes && go get "${gets[@]}") \
    || die "module resolution failed (is every staging module published at ${staging_ver}?)"
  log "kubernetes: module graph resolved in $(elapsed "$t")"

  if [ "$FORCE" = 1 ] || ! kube_ok; then
    log "kubernetes: building kube-apiserver (slow: several minutes)"
    t=$(date +%s)
    (cd "$wd" && go build -p "$PAR" -ldflags "$ld" -o "${K8S_BIN_DIR}/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver)
    mv -f "${K8S_BIN_DIR}/kube-apiserver.tmp" "${K8S_BIN_DIR}/kube-apiserver"
    log "kubernetes: kube-apiserver built in $(elapsed "$t")"
  fi
  if [ "$FORCE" = 1 ] || ! kctl_ok; then
    log "kubernetes: building kubectl"
    t=$(date +%s)
    (cd "$wd" && go build -p "$PAR" -ldflags "$ld" -o "${K8S_BIN_DIR}/kubectl.tmp" k8s.io/kubernetes/cmd/kubectl)
    mv -f "${K8S_BIN_DIR}/kubectl.tmp" "${K8S_BIN_DIR}/kubectl"
    log "kubernetes: kubectl built in $(elapsed "$t")"
  fi
  if [ "$NODE" = 1 ]; then
    for c in $NODE_BINS; do
      if [ "$FORCE" = 1 ] || ! node_bin_ok "$c"; then
        log "kubernetes: building $c"
        t=$(date +%s)
        (cd "$wd" && go build -p "$PAR" -ldflags "$ld" -o "${K8S_BIN_DIR}/$c.tmp" "k8s.io/kubernetes/cmd/$c")
        mv -f "${K8S_BIN_DIR}/$c.tmp" "${K8S_BIN_DIR}/$c"
        log "kubernetes: $c built in $(elapsed "$t")"
      fi
    done
  fi
}

# ------------------------------------------------------------------ etcd --
build_etcd() {
  # go.etcd.io/etcd/server/v3 is a main package (server/main.go). Its go.mod
  # has local replace directives, so `go install ...@version` refuses it;
  # build it from a small wrapper module instead.
  local wd="${SRC_DIR}/etcd" t gomod
  mkdir -p "$wd"
  log "etcd: downloading go.etcd.io/etcd/server/v3@${ETCD_VERSION}"
  gomod="$(mod_field "go.etcd.io/etcd/server/v3@${ETCD_VERSION}" GoMod)"
  [ -f "$gomod" ] || die "could not download go.etcd.io/etcd/server/v3@${ETCD_VERSION}"
  check_go "$gomod" "etcd ${ETCD_VERSION}"
  cat > "$wd/go.mod.gen.new" <<EOF
// Generated by tests/e2e/control-plane/build.sh - do not edit.
module msb.local/etcd-build

go $(go_directive "$gomod")

require go.etcd.io/etcd/server/v3 ${ETCD_VERSION}
EOF
  install_gomod "$wd"
  printf 'package build\n' > "$wd/doc.go"
  (cd "$wd" && go get "go.etcd.io/etcd/server/v3@${ETCD_VERSION}") || die "etcd module resolution failed"
  log "etcd: building"
  t=$(date +%s)
  (cd "$wd" && go build -p "$PAR" -ldflags "-s -w" -o "${K8S_BIN_DIR}/etcd.tmp" go.etcd.io/etcd/server/v3)
  mv -f "${K8S_BIN_DIR}/etcd.tmp" "${K8S_BIN_DIR}/etcd"
  log "etcd: built in $(elapsed "$t")"
}

# ------------------------------------------------------------------ helm --
build_helm() {
  local t gomod cgo minor
  log "helm: downloading helm.sh/helm/v3@${HELM_VERSION}"
  gomod="$(mod_field "helm.sh/helm/v3@${HELM_VERSION}" GoMod)"
  [ -f "$gomod" ] || die "could not download helm.sh/helm/v3@${HELM_VERSION}"
  check_go "$gomod" "helm ${HELM_VERSION}"
  # Same as helm's Makefile: k8s version defaults derived from client-go.
  cgo="$(awk '$1=="k8s.io/client-go"{print $2; exit}' "$gomod")"
  minor="${cgo#v0.}"; minor="${minor%%.*}"
  local ld="-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION} -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  if [ -n "$minor" ]; then
    local p
    for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
      ld="$ld -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=${minor}"
    done
  fi
  log "helm: building (go install helm.sh/helm/v3/cmd/helm@${HELM_VERSION})"
  t=$(date +%s)
  # helm's go.mod has no replace directives, so plain `go install` works.
  local gobin="${SRC_DIR}/helm-bin"
  mkdir -p "$gobin"
  (cd "${SRC_DIR}" && GOBIN="$gobin" go install -p "$PAR" -ldflags "$ld" "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}")
  mv -f "$gobin/helm" "${K8S_BIN_DIR}/helm"
  log "helm: built in $(elapsed "$t")"
}

if [ "$FORCE" = 1 ] || ! etcd_ok; then build_etcd; else log "etcd: up to date"; fi
if [ "$FORCE" = 1 ] || ! helm_ok; then build_helm; else log "helm: up to date"; fi
if [ "$FORCE" = 1 ] || ! kube_ok || ! kctl_ok || ! node_ok; then build_kubernetes; else log "kubernetes: up to date"; fi

etcd_ok || die "etcd --version does not report ${ETCD_VERSION}: $("${K8S_BIN_DIR}/etcd" --version 2>&1 | head -n1)"
helm_ok || die "helm version does not report ${HELM_VERSION}: $("${K8S_BIN_DIR}/helm" version --short 2>&1)"
kube_ok || die "kube-apiserver --version does not report ${KUBE_VERSION}: $("${K8S_BIN_DIR}/kube-apiserver" --version 2>&1)"
kctl_ok || die "kubectl version does not report ${KUBE_VERSION}: $("${K8S_BIN_DIR}/kubectl" version --client 2>&1 | head -n1)"
node_ok || die "a node binary ($NODE_BINS) does not report ${KUBE_VERSION}"

log "done in $(elapsed "$START_ALL"):"
bins="kube-apiserver etcd kubectl helm"
[ "$NODE" = 1 ] && bins="$bins $NODE_BINS"
for b in $bins; do
  log "  $(du -h "${K8S_BIN_DIR}/$b" | cut -f1)	${K8S_BIN_DIR}/$b"
done
if [ "$PRINT_ONLY" = 1 ]; then echo "${K8S_BIN_DIR}" >&3; fi
