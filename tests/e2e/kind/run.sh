#!/usr/bin/env bash
# Kubernetes e2e on kind, on a KVM host: creates the kind cluster of kind-config.yaml (one
# control plane, two workers with /dev/kvm), builds the operator and node-agent images
# (images/build.sh --archive), loads them with `kind load image-archive`, installs the Helm chart,
# waits for the node Leases, then runs examples/sandbox.yaml (a microVM sandbox) to Ready and
# deletes it. Prints `PASS kind e2e: ...` on success.
#
# Usage: tests/e2e/kind/run.sh            (as root: images/build.sh debootstraps)
# Needs: docker + a reachable Docker engine, kind, kubectl, helm, jq, a /dev/kvm that boots a
# microVM guest (`microsandbox-agent doctor` says), and the release binaries (`make agent` and
# `cargo build --release -p microsandbox-operator`; this script does not build them).
# A missing prerequisite is not a failure: the script prints one line starting with
# `SKIP kind e2e:` and the reason, and exits 0. Hosts that need a custom guest kernel (PVM,
# `--kernel`) are not covered: the kind nodes would need that kernel and the chart's
# nodeAgent.kernel too.
#
# Env:
#   MSB_KIND_KEEP=1          keep the cluster afterwards (default: `kind delete cluster`)
#   MSB_KIND_CLUSTER=NAME    cluster name (default microsandbox-e2e; reused if it exists)
#   MSB_KIND_HELM_ARGS="..." extra `helm upgrade --install` arguments, e.g.
#                            "--set nodeAgent.mirrors={docker.io=mirror.internal:5000}"
#   MSB_KIND_REGISTRY=H:P    also run tests/e2e/helm/run.sh on the cluster, pushing to H:P
#   CARGO_TARGET_DIR         where the release binaries are (default: target/)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
cd "$ROOT"

CLUSTER=${MSB_KIND_CLUSTER:-microsandbox-e2e}
NS=microsandbox-system
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
AGENT=$TARGET/release/microsandbox-agent

log() { printf '[kind-e2e] %s\n' "$*"; }
skip() { printf 'SKIP kind e2e: %s\n' "$*"; exit 0; }
fail() { printf 'FAIL kind e2e: %s\n' "$*" >&2; exit 1; }

# ---- preflight: docker, kind, the other tools, KVM that boots a guest ----------------------
command -v docker >/dev/null || skip "no docker CLI in PATH"
if ! docker_err=$(docker info 2>&1 >/dev/null); then
  skip "no reachable Docker engine (docker info: $(printf '%s' "$docker_err" | grep -v '^ *$' | tail -n 1))"
fi
command -v kind >/dev/null || skip "no kind binary in PATH"
for tool in kubectl helm jq; do
  command -v "$tool" >/dev/null || skip "no $tool in PATH"
done
[[ -e /dev/kvm ]] || skip "no /dev/kvm on this host"
[[ -r /dev/kvm && -w /dev/kvm ]] || skip "/dev/kvm is not read-write for $(id -un)"
[[ -x $AGENT ]] || fail "$AGENT missing: build it with \`make agent\` (needed for its doctor)"
doctor=$("$AGENT" doctor --json) || fail "microsandbox-agent doctor failed"
if [[ $(jq -r '.isolation[] | select(.isolation == "microvm") | .available' <<<"$doctor") != true ]]; then
  skip "this host cannot boot a microVM guest: $(jq -r '.isolation[] | select(.isolation == "microvm") | .reason' <<<"$doctor")"
fi
[[ $(id -u) -eq 0 ]] || fail "run as root: images/build.sh debootstraps the image rootfs"

# The node-agent image carries its own libkrun and libkrunfw (images/build.sh,
# scripts/libkrun.sh): nothing of this host's goes into it.

# ---- cluster --------------------------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/msb-kind.XXXXXX")
export KUBECONFIG=$WORK/kubeconfig # never touches ~/.kube/config
cleanup() {
  local rc=$?
  if [[ $rc -ne 0 ]]; then
    log "diagnostics:"
    kubectl get nodes,pods -A -o wide 2>&1 | sed 's/^/  /' || true
    kubectl get sandboxes -A -o yaml 2>&1 | sed 's/^/  /' || true
    kubectl -n "$NS" logs -l app.kubernetes.io/component=operator --tail=50 2>&1 | sed 's/^/  /' || true
    kubectl -n "$NS" logs -l app.kubernetes.io/component=node-agent --tail=50 --prefix 2>&1 | sed 's/^/  /' || true
  fi
  if [[ ${MSB_KIND_KEEP:-0} == 1 ]]; then
    log "keeping cluster $CLUSTER (kind delete cluster --name $CLUSTER)"
  else
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  log "reusing cluster $CLUSTER"
  kind get kubeconfig --name "$CLUSTER" >"$KUBECONFIG"
else
  log "creating cluster $CLUSTER"
  kind create cluster --name "$CLUSTER" --config kind-config.yaml --kubeconfig "$KUBECONFIG" --wait 120s
fi

TAG=$(awk '/^\[/ { s = ($0 == "[workspace.package]") } s && $1 == "version" { gsub(/"/, "", $3); print $3; exit }' Cargo.toml)
log "building images microsandbox/{operator,node-agent}:$TAG"
images/build.sh --archive "$WORK/images" --tag "$TAG"
for name in operator node-agent; do
  kind load image-archive "$WORK/images/$name-$TAG.tar" --name "$CLUSTER"
done

log "installing the chart"
# shellcheck disable=SC2086 # MSB_KIND_HELM_ARGS is a list of arguments
helm upgrade --install microsandbox charts/microsandbox --namespace "$NS" --create-namespace \
  --set imageRegistry=microsandbox --set operator.image.tag="$TAG" --set nodeAgent.image.tag="$TAG" \
  --wait --timeout 5m ${MSB_KIND_HELM_ARGS:-}

kvm_nodes=$(kubectl get nodes -l microsandbox.dev/kvm=true -o name | wc -l)
log "waiting for $kvm_nodes node Leases microsandbox-node-*"
for _ in $(seq 60); do
  leases=$(kubectl -n "$NS" get leases -o name | grep -c '/microsandbox-node-' || true)
  [[ $leases -ge $kvm_nodes ]] && break
  sleep 2
done
[[ $leases -ge $kvm_nodes ]] || fail "only $leases of $kvm_nodes node Leases after 120s"

log "sandbox/hello (microvm)"
kubectl apply -f examples/sandbox.yaml
kubectl wait --for=condition=Ready sandbox/hello --timeout=180s
kubectl get sandbox hello
kubectl delete sandbox hello --wait=false
kubectl wait --for=delete sandbox/hello --timeout=120s

echo "PASS kind e2e: chart on kind ($kvm_nodes KVM workers), sandbox/hello Ready in a microVM and deleted"
# The whole user path (SDK exec via the pod proxy, upgrade, uninstall) on this cluster, when its
# nodes can pull from a registry this host pushes to:
if [[ -n ${MSB_KIND_REGISTRY:-} ]]; then
  kubectl delete namespace msb-helm-e2e --ignore-not-found >/dev/null
  helm uninstall microsandbox -n "$NS" --wait >/dev/null
  MSB_HELM_KUBECONFIG=$KUBECONFIG MSB_HELM_REGISTRY=$MSB_KIND_REGISTRY tests/e2e/helm/run.sh
else
  echo "SKIP kind helm e2e: set MSB_KIND_REGISTRY=HOST:PORT (a registry the kind nodes pull from) to run tests/e2e/helm/run.sh on this cluster"
fi
