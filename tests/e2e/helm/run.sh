#!/usr/bin/env bash
# The user's path, literally, as one e2e test:
#   images/build.sh pushes the operator and node-agent images
#   -> helm install -> operator Deployment and node-agent DaemonSet pods Ready (probes pass)
#   -> a Sandbox applied with kubectl reaches Ready (microVM where the node can boot one,
#      container isolation otherwise, in a namespace that allows it)
#   -> the Python SDK in cluster mode execs in it through the API server's pod proxy
#   -> kubectl delete leaves no process, mount, cgroup, netns or nft rule on the node
#   -> helm upgrade to a new node-agent image while sandboxes run: re-adopted, none lost,
#      exec works after (and the longest window in which one could not exec is printed)
#   -> helm uninstall: its pre-delete hook deletes every Sandbox first; nothing is left
#      Terminating, the CRDs and Volumes stay (charts/microsandbox/README.md)
#   -> helm install again over the kept CRDs (images now cached on the node) -> uninstall
# Prints `PASS helm e2e: ...` and a benchmark table, or `SKIP helm e2e: <why>`.
#
# Usage: tests/e2e/helm/run.sh
#   Default: a one-node cluster on this host (tests/e2e/node/start.sh; as root), images pushed
#   to the local registry 127.0.0.1:5000 (scripts/test-registry.sh).
# Env:
#   MSB_HELM_KUBECONFIG=FILE   use this cluster instead (kind on a KVM host, a real cluster);
#                              then MSB_HELM_REGISTRY=HOST[:PORT] must be a registry its nodes
#                              pull from and this host pushes to, and checks on the node's host
#                              state are skipped (said so).
#   MSB_HELM_SANDBOXES=N       sandboxes running through the upgrade (default 3; the benchmark
#                              runs 20: tests/e2e/helm/bench.sh)
#   MSB_HELM_KEEP=1            keep the cluster and logs afterwards
#   MSB_HELM_INSECURE=0        speak TLS to MSB_HELM_REGISTRY (default: plain HTTP, as to 127.0.0.1)
#   CARGO_TARGET_DIR           where the release binaries are (built here if missing)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
cd "$ROOT"
log() { printf '[helm-e2e] %s\n' "$*" >&2; }
fail() { printf 'FAIL helm e2e: %s\n' "$*" >&2; exit 1; }
skip() { printf 'SKIP helm e2e: %s\n' "$*"; exit 0; }

NS=microsandbox-system
TEAM=msb-helm-e2e
N=${MSB_HELM_SANDBOXES:-3}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
VERSION=$(awk '/^\[/ { s = ($0 == "[workspace.package]") } s && $1 == "version" { gsub(/"/, "", $3); print $3; exit }' Cargo.toml)
LOCAL=1
[[ -n ${MSB_HELM_KUBECONFIG:-} ]] && LOCAL=0
REGISTRY=${MSB_HELM_REGISTRY:-127.0.0.1:5000}
STATE=/var/lib/msb-helm-e2e/agent # the agents' state dir on the node (hostPath)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/msb-helm.XXXXXX")
declare -A BENCH=()
T0=$(date +%s.%N)
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

[[ $(id -u) -eq 0 ]] || skip "needs root (images/build.sh debootstraps; the local node is a kubelet)"

# ---- binaries and images --------------------------------------------------------------------
log "building release binaries (make agent, cargo build --release -p microsandbox-operator)"
make -s agent >/dev/null
cargo build -q --release -p microsandbox-operator
log "images/build.sh --registry $REGISTRY --tag $VERSION"
t=$(now)
images/build.sh --registry "$REGISTRY" --tag "$VERSION" >"$WORK/images.log" 2>&1 ||
  { tail -n 30 "$WORK/images.log" >&2; fail "images/build.sh failed"; }
BENCH[images/build.sh + push (s)]=$(since "$t")
# The image the upgrade rolls to: the same content under a new tag changes the DaemonSet's pod
# template exactly as a new release does (every agent pod is replaced).
tls=()
[[ ${MSB_HELM_INSECURE:-1} == 1 ]] && tls=(--src-tls-verify=false --dest-tls-verify=false)
skopeo copy --quiet --insecure-policy "${tls[@]}" "docker://$REGISTRY/microsandbox/node-agent:$VERSION" \
  "docker://$REGISTRY/microsandbox/node-agent:$VERSION-upgrade" || fail "tagging node-agent:$VERSION-upgrade failed"

# ---- cluster --------------------------------------------------------------------------------
NODE_DIR=$WORK/node
PROBER=
cleanup() {
  local rc=$?
  if [[ -n $PROBER ]]; then kill "$PROBER" 2>/dev/null || true; fi
  if [[ $rc -ne 0 ]]; then
    log "diagnostics:"
    kubectl get nodes,pods -A -o wide 2>&1 | sed 's/^/  /' >&2 || true
    kubectl get sandboxes -A -o wide 2>&1 | sed 's/^/  /' >&2 || true
    kubectl -n "$NS" logs -l app.kubernetes.io/component=operator --tail=40 2>&1 | sed 's/^/  op: /' >&2 || true
    kubectl -n "$NS" logs -l app.kubernetes.io/component=node-agent --tail=60 2>&1 | sed 's/^/  agent: /' >&2 || true
    [[ $LOCAL == 1 ]] && tail -n 20 "$NODE_DIR/kubelet.log" 2>/dev/null | sed 's/^/  kubelet: /' >&2
  fi
  if [[ ${MSB_HELM_KEEP:-0} == 1 ]]; then
    log "kept: KUBECONFIG=${KUBECONFIG:-} (stop: tests/e2e/node/stop.sh $NODE_DIR)"
    return
  fi
  if [[ $LOCAL == 1 ]]; then
    # Sandboxes a failed run left: their agent removes them while it still runs ...
    if [[ $rc -ne 0 ]]; then
      timeout 90 kubectl delete sandboxes --all -A --wait --timeout=60s >/dev/null 2>&1 || true
    fi
    tests/e2e/node/stop.sh "$NODE_DIR" >/dev/null 2>&1 || true
    sweep_sandboxes
    umount -R -l "${STATE%/agent}" 2>/dev/null || true
    rm -rf --one-file-system "${STATE%/agent}" 2>/dev/null || true
  else
    helm uninstall microsandbox -n "$NS" --wait >/dev/null 2>&1 || true
    kubectl delete namespace "$TEAM" --wait=false >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
}
# ... and what the agent could not remove goes here: its crun containers (their cgroups with
# them) and the network namespaces it made, msb<sha256 of the state dir, 6 hex>-<sandbox>.
sweep_sandboxes() {
  local id ns prefix
  for id in $(crun --root "$STATE/crun" list -q 2>/dev/null); do
    crun --root "$STATE/crun" kill "$id" KILL >/dev/null 2>&1 || true
    crun --root "$STATE/crun" delete -f "$id" >/dev/null 2>&1 || true
  done
  pkill -KILL -f "vmm --plan $STATE/" 2>/dev/null || true # microVM sandboxes' VMMs
  prefix=msb$(printf '%s' "$STATE" | sha256sum | cut -c1-6)-
  for ns in $(ip netns list | awk -v p="$prefix" 'index($1, p) == 1 { print $1 }'); do
    ip netns del "$ns" 2>/dev/null || true
  done
}
trap cleanup EXIT

if [[ $LOCAL == 1 ]]; then
  log "starting the one-node cluster (tests/e2e/node/start.sh)"
  t=$(now)
  tests/e2e/node/start.sh "$NODE_DIR" >"$WORK/node-start.log" 2>&1 ||
    { tail -n 30 "$WORK/node-start.log" >&2; fail "tests/e2e/node/start.sh failed"; }
  # shellcheck disable=SC1091
  . "$NODE_DIR/env"
  log "node $MSB_NODE_NAME Ready in $(since "$t")s"
  # The agent's state dir is shared with the node (mountPropagation: Bidirectional needs a
  # shared mount on the node; this host's / is private, unlike a systemd node's).
  mkdir -p "$STATE"
  if ! grep -q " ${STATE%/agent} ${STATE%/agent} " /proc/self/mountinfo; then
    mount --bind "${STATE%/agent}" "${STATE%/agent}"
  fi
  mount --make-rshared "${STATE%/agent}"
  HELM_NET=(--set "nodeAgent.network.uplinkNetns=$MSB_NODE_UPLINK_NETNS"
    # A 2-CPU test machine offers 8 vCPUs by default; the upgrade runs N sandboxes of 1 vCPU.
    --set "nodeAgent.capacity.cpus=$((N + 8))")
  MIRROR=127.0.0.1:5000
else
  export KUBECONFIG=$MSB_HELM_KUBECONFIG
  command -v kubectl >/dev/null && command -v helm >/dev/null || skip "kubectl and helm must be in PATH"
  log "using $KUBECONFIG; node host state (processes, mounts, cgroups, netns, nft) is not checked: not this host"
  HELM_NET=()
  MIRROR=${MSB_HELM_MIRROR:-}
fi
kubectl version >/dev/null 2>&1 || fail "no API server answers for $KUBECONFIG"

# ---- helm install ---------------------------------------------------------------------------
helm_args=(
  --namespace "$NS" --create-namespace --wait --timeout 5m
  --set "imageRegistry=$REGISTRY/microsandbox"
  --set "nodeAgent.stateDir=$STATE"
  --set "nodeAgent.resources.limits.memory=1Gi"
  "${HELM_NET[@]}"
)
if [[ -n $MIRROR ]]; then
  helm_args+=(--set "nodeAgent.mirrors={docker.io=$MIRROR}" --set "nodeAgent.insecureRegistries={$MIRROR}")
fi
log "helm install microsandbox charts/microsandbox ${helm_args[*]}"
t_install=$(now)
helm install microsandbox charts/microsandbox "${helm_args[@]}" >"$WORK/helm.log" 2>&1 ||
  { cat "$WORK/helm.log" >&2; fail "helm install failed"; }
for c in operator node-agent; do
  kubectl -n "$NS" wait pod -l "app.kubernetes.io/component=$c" --for=condition=Ready --timeout=120s >/dev/null ||
    fail "$c pods not Ready"
done
BENCH[helm install -> pods Ready (s)]=$(since "$t_install")
log "operator and node-agent pods Ready (probes pass) in ${BENCH[helm install -> pods Ready (s)]}s"

# The node's Lease says which isolation it offers: microVM where it can boot one.
lease_iso() {
  kubectl -n "$NS" get lease -o json |
    jq -r '[.items[] | select(.metadata.name | startswith("microsandbox-node-")) | .metadata.annotations["microsandbox.dev/isolation"] // ""] | join(",")'
}
for _ in $(seq 1 60); do [[ -n $(lease_iso) ]] && break; sleep 1; done
ISO=container
[[ $(lease_iso) == *microvm* ]] && ISO=microvm
[[ $ISO == container ]] && log "the node cannot boot microVMs here ($(lease_iso)): container isolation (microVM boot runs where KVM can boot a guest)"

kubectl create namespace "$TEAM" >/dev/null
kubectl label namespace "$TEAM" microsandbox.dev/allow-container-isolation=true >/dev/null

sandbox_yaml() { # NAME
  cat <<EOF
apiVersion: microsandbox.dev/v1alpha1
kind: Sandbox
metadata:
  name: $1
  namespace: $TEAM
spec:
  image: busybox
  isolation: $ISO
  resources: {memory: 128Mi, cpus: 1}
EOF
}
ready() { kubectl -n "$TEAM" wait sandbox "$1" --for=condition=Ready --timeout="${2:-120s}" >/dev/null; }

t=$(now)
sandbox_yaml first | kubectl apply -f - >/dev/null
ready first || fail "Sandbox first did not become Ready"
BENCH[helm install -> first Sandbox Ready, cold node (s)]=$(since "$t_install")
BENCH[first Sandbox apply -> Ready (s)]=$(since "$t")
log "Sandbox first Ready in ${BENCH[first Sandbox apply -> Ready (s)]}s"

# ---- exec through the SDK, via the API server's pod proxy ----------------------------------
# As a user of the team namespace with the least it needs: read Sandboxes, `create` on
# `sandboxes/exec` (checked by the agent), and the chart's agent-proxy Role in the release
# namespace (pods/proxy); a bearer token, as node-agents check tokens.
kubectl -n "$TEAM" create serviceaccount dev >/dev/null
kubectl -n "$TEAM" create role sandbox-dev --verb=get,list,watch,create,delete \
  --resource=sandboxes.microsandbox.dev,secrets.microsandbox.dev >/dev/null
kubectl -n "$TEAM" create role secret-writer --verb=create --resource=secrets >/dev/null
kubectl -n "$TEAM" create rolebinding secret-writer --role=secret-writer --serviceaccount="$TEAM:dev" >/dev/null
kubectl -n "$TEAM" create role sandbox-exec --verb=create --resource=sandboxes.microsandbox.dev/exec >/dev/null
kubectl -n "$TEAM" create rolebinding sandbox-dev --role=sandbox-dev --serviceaccount="$TEAM:dev" >/dev/null
kubectl -n "$TEAM" create rolebinding sandbox-exec --role=sandbox-exec --serviceaccount="$TEAM:dev" >/dev/null
kubectl -n "$NS" create rolebinding "$TEAM-dev-agent-proxy" --role=microsandbox-agent-proxy \
  --serviceaccount="$TEAM:dev" >/dev/null
DEV_KUBECONFIG=$WORK/dev.kubeconfig
{
  server=$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.server}')
  ca=$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')
  token=$(kubectl -n "$TEAM" create token dev --duration=2h)
  cat <<EOF
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "$server", certificate-authority-data: "$ca"}}]
users: [{name: dev, user: {token: "$token"}}]
contexts: [{name: dev, context: {cluster: c, user: dev, namespace: $TEAM}}]
current-context: dev
EOF
} >"$DEV_KUBECONFIG"
chmod 600 "$DEV_KUBECONFIG"
bash sdk/python/scripts/dev-setup.sh >/dev/null 2>&1 || fail "sdk/python/scripts/dev-setup.sh failed"
PY=sdk/python/.venv/bin/python
sdk_exec() { # NAME -> prints the sandbox's answer; on failure the SDK's error goes to stderr
  local rc=0
  KUBECONFIG=$DEV_KUBECONFIG "$PY" -X faulthandler - "$1" "$TEAM" 2>"$WORK/sdk.err" <<'EOF' || rc=$?
import asyncio, sys
from microsandbox import Cluster, Sandbox

async def main() -> None:
    sb = await Sandbox.get(sys.argv[1], cluster=Cluster(namespace=sys.argv[2], agent_access="proxy"))
    out = await sb.exec("sh", ["-c", "echo hello from $(hostname)"])
    print(out.stdout().strip())

asyncio.run(main())
EOF
  if [[ $rc -ne 0 ]]; then
    printf '[helm-e2e] SDK exec in %s exited %s: %s\n' "$1" "$rc" "$(tail -n 40 "$WORK/sdk.err")" >&2
  fi
  return "$rc"
}
out=$(sdk_exec first) || fail "SDK exec in first failed"
[[ $out == "hello from "* ]] || fail "SDK exec answered '$out'"
log "SDK (cluster mode, pod proxy) exec: $out"

# ---- secrets through the SDK; Kubernetes' garbage collector takes what a Sandbox owns --------
# The SDK makes a core Secret + a Secret object per secret, owned by the Sandbox; the operator
# seals the value to the node. The guest sees a placeholder only; deleting the Sandbox leaves the
# owned objects to kube-controller-manager's garbage collector.
gc_out=$(KUBECONFIG=$DEV_KUBECONFIG "$PY" - "$TEAM" 2>"$WORK/sdk.err" <<'EOF'
import asyncio, sys
from microsandbox import Cluster, NetworkPolicy, Sandbox, Secret

async def main() -> None:
    sb = await Sandbox.create(
        "owner", image="busybox", isolation="container", memory=128,
        network=NetworkPolicy.public_only(),
        secrets=[Secret.env("API_TOKEN", "s3cr3t-helm-e2e", allow_hosts=["api.example.com"])],
        cluster=Cluster(namespace=sys.argv[1], agent_access="proxy"),
    )
    out = await sb.exec("sh", ["-c", "echo $API_TOKEN"])
    print(out.stdout().strip())

asyncio.run(main())
EOF
) || fail "SDK create with a secret failed: $(tail -n 5 "$WORK/sdk.err")"
[[ -n $gc_out && $gc_out != *s3cr3t-helm-e2e* ]] || fail "the guest saw '$gc_out' for API_TOKEN (want a placeholder)"
owner_uid=$(kubectl -n "$TEAM" get sandbox owner -o jsonpath='{.metadata.uid}')
owned() { # core Secrets and Secret objects whose owner is the Sandbox
  kubectl -n "$TEAM" get secrets,secrets.microsandbox.dev -o json |
    jq -r --arg u "$owner_uid" '.items[] | select(any(.metadata.ownerReferences[]?; .uid == $u)) | .kind + "/" + .metadata.name'
}
[[ $(owned | wc -l) -ge 2 ]] || fail "no core Secret + Secret object owned by Sandbox owner: $(owned)"
log "SDK secret: the guest sees a placeholder; $(owned | wc -l) objects owned by the Sandbox"
kubectl -n "$TEAM" delete sandbox owner --timeout=60s >/dev/null || fail "deleting Sandbox owner did not finish"
for _ in $(seq 1 60); do [[ -z $(owned) ]] && break; sleep 1; done
[[ -z $(owned) ]] || fail "the garbage collector left objects owned by the deleted Sandbox: $(owned)"
log "garbage collector: the Sandbox's Secret objects went with it"

# ---- delete leaves nothing on the node ------------------------------------------------------
uid_hex() { kubectl -n "$TEAM" get sandbox "$1" -o jsonpath='{.metadata.uid}' | tr -d '-' | cut -c1-12; }
leftovers() { # HEX: what the sandbox with this uid left on this host
  local hex=$1
  ls /run/netns 2>/dev/null | grep -- "-.*$hex" | sed 's/^/netns /' || true
  grep -- "$hex" /proc/mounts | awk '{ print "mount " $2 }' || true
  find /sys/fs/cgroup -maxdepth 4 -path '*microsandbox*' -name "*$hex*" 2>/dev/null | sed 's/^/cgroup /' || true
  crun --root "$STATE/crun" list -q 2>/dev/null | grep -- "$hex" | sed 's/^/container /' || true
  ps -eo pid=,args= | grep -v grep | grep -- "$hex" | sed 's/^/process /' || true
  {
    nft list ruleset 2>/dev/null
    [[ -n ${MSB_NODE_UPLINK_NETNS:-} ]] && ip netns exec "$MSB_NODE_UPLINK_NETNS" nft list ruleset 2>/dev/null
  } | grep -- "$hex" | sed 's/^/nft /' || true
}
if [[ $LOCAL == 1 ]]; then
  hex=$(uid_hex first)
  [[ -n $(leftovers "$hex") ]] || fail "found nothing of running sandbox first ($hex) on the node: the leak check would be blind"
fi
kubectl -n "$TEAM" delete sandbox first --timeout=60s >/dev/null || fail "kubectl delete sandbox first did not finish"
if [[ $LOCAL == 1 ]]; then
  left=$(leftovers "$hex")
  [[ -z $left ]] || fail "kubectl delete left on the node: $left"
  log "kubectl delete: no process, mount, cgroup, netns, container or nft rule left"
fi

# ---- helm upgrade with sandboxes running ----------------------------------------------------
log "creating $N sandboxes, one after the other (apply -> Ready timed each)"
: >"$WORK/ready-times"
for i in $(seq 1 "$N"); do
  t=$(now)
  sandbox_yaml "s$i" | kubectl apply -f - >/dev/null
  ready "s$i" 300s || fail "Sandbox s$i did not become Ready"
  since "$t" >>"$WORK/ready-times"
  echo >>"$WORK/ready-times"
done
pct() { sort -n "$WORK/ready-times" | awk -v p="$1" '{ v[NR] = $1 } END { i = int((NR - 1) * p / 100) + 1; print v[i] }'; }
BENCH[Sandbox apply -> Ready p50 (s, n=$N)]=$(pct 50)
BENCH[Sandbox apply -> Ready p99 (s, n=$N)]=$(pct 99)
for i in $(seq 1 "$N"); do echo "s$i $(kubectl -n "$TEAM" get sandbox "s$i" -o jsonpath='{.metadata.uid}')"; done >"$WORK/uids"

# A prober execs in every sandbox in turn through the SDK during the upgrade and records, per
# sandbox, the longest span between two successful execs that contains failures.
KUBECONFIG=$DEV_KUBECONFIG "$PY" - "$TEAM" "$N" "$WORK/probe.json" "$WORK/probe.stop" <<'EOF' &
import asyncio, json, os, sys, time
from microsandbox import Cluster, Sandbox

async def main() -> None:
    ns, n, out, stop = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    cluster = Cluster(namespace=ns, agent_access="proxy")
    names = [f"s{i}" for i in range(1, n + 1)]
    last_ok = {name: time.monotonic() for name in names}
    worst = {name: 0.0 for name in names}
    failures = {name: 0 for name in names}
    execs = 0
    while not os.path.exists(stop):
        for name in names:
            try:
                sb = await asyncio.wait_for(Sandbox.get(name, cluster=cluster), 10)
                r = await asyncio.wait_for(sb.exec("true", []), 10)
                if r.exit_code != 0:
                    raise RuntimeError(f"exit {r.exit_code}")
                now = time.monotonic()
                worst[name] = max(worst[name], now - last_ok[name])
                last_ok[name] = now
                execs += 1
            except Exception:
                failures[name] += 1
                await asyncio.sleep(0.1)
    json.dump({"worst": worst, "failures": failures, "execs": execs}, open(out, "w"))

asyncio.run(main())
EOF
PROBER=$!
sleep 3
log "helm upgrade: node-agent image $VERSION -> $VERSION-upgrade"
t=$(now)
helm upgrade microsandbox charts/microsandbox "${helm_args[@]}" --set "nodeAgent.image.tag=$VERSION-upgrade" \
  >"$WORK/helm-upgrade.log" 2>&1 || { cat "$WORK/helm-upgrade.log" >&2; fail "helm upgrade failed"; }
kubectl -n "$NS" rollout status daemonset -l app.kubernetes.io/component=node-agent --timeout=180s >/dev/null 2>&1 ||
  kubectl -n "$NS" rollout status "daemonset/$(kubectl -n "$NS" get ds -o jsonpath='{.items[0].metadata.name}')" --timeout=180s >/dev/null ||
  fail "node-agent DaemonSet rollout did not finish"
BENCH[helm upgrade -> DaemonSet rolled (s)]=$(since "$t")
img=$(kubectl -n "$NS" get pods -l app.kubernetes.io/component=node-agent -o jsonpath='{.items[*].spec.containers[0].image}')
[[ $img == *":$VERSION-upgrade" ]] || fail "node-agent pods run $img after the upgrade"
sleep 5 # the prober sees the new agent serve
: >"$WORK/probe.stop"
wait "$PROBER" || fail "the exec prober failed"
for i in $(seq 1 "$N"); do
  ready "s$i" 60s || fail "Sandbox s$i is not Ready after the upgrade"
  read -r _ uid < <(grep "^s$i " "$WORK/uids")
  [[ $(kubectl -n "$TEAM" get sandbox "s$i" -o jsonpath='{.metadata.uid}') == "$uid" ]] || fail "Sandbox s$i was re-created"
  out=$(sdk_exec "s$i") || fail "exec in s$i after the upgrade failed"
  [[ $out == "hello from "* ]] || fail "s$i answered '$out' after the upgrade"
done
worst=$(jq -r '[.worst[]] | max | . * 100 | round / 100' "$WORK/probe.json")
BENCH[helm upgrade: longest no-exec window of a sandbox (s)]=$worst
log "upgrade: $N sandboxes re-adopted, none lost, exec works; longest window without exec ${worst}s ($(jq -c . "$WORK/probe.json"))"

# ---- helm uninstall -------------------------------------------------------------------------
hexes=()
for i in $(seq 1 "$N"); do hexes+=("$(uid_hex "s$i")"); done
log "helm uninstall (pre-delete hook deletes every Sandbox while the agents still run)"
t=$(now)
helm uninstall microsandbox -n "$NS" --wait --timeout 5m >"$WORK/helm-uninstall.log" 2>&1 ||
  { cat "$WORK/helm-uninstall.log" >&2; fail "helm uninstall failed"; }
BENCH[helm uninstall with $N sandboxes (s)]=$(since "$t")
left=$(kubectl get sandboxes -A --no-headers 2>/dev/null || true)
[[ -z $left ]] || fail "Sandboxes left after helm uninstall: $left"
for _ in $(seq 1 60); do
  [[ -z $(kubectl -n "$NS" get pods --no-headers 2>/dev/null) ]] && break
  sleep 1
done
[[ -z $(kubectl -n "$NS" get pods --no-headers 2>/dev/null) ]] || fail "pods left in $NS after uninstall"
kubectl get crd sandboxes.microsandbox.dev >/dev/null || fail "helm uninstall removed the CRDs (documented: it keeps them)"
if [[ $LOCAL == 1 ]]; then
  for hex in "${hexes[@]}"; do
    left=$(leftovers "$hex")
    [[ -z $left ]] || fail "helm uninstall left on the node: $left"
  done
fi
log "uninstall: no Sandbox left (none Terminating), CRDs kept, node clean"

# ---- install again: the node has the images now, the CRDs are still there -------------------
t=$(now)
helm install microsandbox charts/microsandbox "${helm_args[@]}" >"$WORK/helm.log" 2>&1 ||
  { cat "$WORK/helm.log" >&2; fail "helm install over the kept CRDs failed"; }
kubectl -n "$NS" wait pod -l app.kubernetes.io/component=node-agent --for=condition=Ready --timeout=120s >/dev/null ||
  fail "node-agent pods not Ready after the reinstall"
sandbox_yaml warm | kubectl apply -f - >/dev/null
ready warm || fail "Sandbox warm did not become Ready after the reinstall"
BENCH[helm install -> first Sandbox Ready, images cached (s)]=$(since "$t")
helm uninstall microsandbox -n "$NS" --wait --timeout 5m >"$WORK/helm-uninstall.log" 2>&1 ||
  { cat "$WORK/helm-uninstall.log" >&2; fail "the second helm uninstall failed"; }
[[ -z $(kubectl get sandboxes -A --no-headers 2>/dev/null) ]] || fail "Sandboxes left after the second uninstall"
log "reinstall over the kept CRDs: Sandbox Ready; uninstalled again"

printf 'PASS helm e2e: helm install -> %s Sandbox Ready -> SDK exec via pod proxy -> delete clean -> upgrade with %s sandboxes -> uninstall clean (%ss)\n' \
  "$ISO" "$N" "$(since "$T0")"
printf '\n%-58s %s\n' "benchmark (one-node cluster on this host, agent as a pod)" "value"
for k in "${!BENCH[@]}"; do printf '%-58s %s\n' "$k" "${BENCH[$k]}"; done | sort
