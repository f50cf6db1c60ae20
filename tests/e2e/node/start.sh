#!/usr/bin/env bash
# A real one-node Kubernetes cluster on this host, for the chart's pods: etcd + kube-apiserver
# (control-plane/start.sh), kube-controller-manager (garbage collector, DaemonSet/Deployment,
# ServiceAccount and root-CA controllers), kube-scheduler, kube-proxy (nftables), and a kubelet
# on containerd 2 with runc as the OCI runtime. All built/fetched by tests/e2e/node/build.sh and
# cached outside the tree.
#
# Network: nothing is routed off the machine.
#   * The node's address is ${MSB_NODE_ADDRESS:-10.250.0.1}/32, added to the loopback link here:
#     the apiserver binds it, kubelet reports it, hostNetwork pods use it.
#   * Pods get 10.244.0.0/24 on a bridge (msb-cni0) made by the CNI bridge plugin; an nftables
#     table of ours (inet msb_e2e_node) drops everything the bridge would forward elsewhere, so
#     pods reach this host's own addresses (the apiserver via the `kubernetes` Service) and
#     each other, nothing else.
#   * Sandbox uplinks of node-agents go to the closed namespace msb-e2e-uplink (made here; no
#     route anywhere): install the chart with --set nodeAgent.network.uplinkNetns=msb-e2e-uplink.
#
# Usage: tests/e2e/node/start.sh DIR      (as root; DIR receives everything, see stop.sh)
# Prints DIR=... and KUBECONFIG=...; DIR/env exports KUBECONFIG, PATH (kubectl, helm),
# MSB_NODE_NAME, MSB_NODE_ADDRESS. Stop and clean up with tests/e2e/node/stop.sh DIR.
# Images: the pause image is built here (busybox-static) and pushed to the local registry
# (127.0.0.1:5000, scripts/test-registry.sh); containerd pulls 127.0.0.1:5000 over plain HTTP.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
LOG_TAG=node
# shellcheck source=../../../images/lib.sh
. "$ROOT/images/lib.sh"

DIR=${1:?usage: start.sh DIR}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
[[ $(id -u) -eq 0 ]] || die "run as root"
for tool in ip nft umoci skopeo busybox curl; do
  command -v "$tool" >/dev/null || die "$tool not found (scripts/setup.sh installs it)"
done
[[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/loopback ]] ||
  die "CNI plugins missing in /usr/lib/cni (apt-get install containernetworking-plugins)"

NODE=${MSB_NODE_NAME:-msb-e2e-node}
ADDR=${MSB_NODE_ADDRESS:-10.250.0.1}
POD_CIDR=10.244.0.0/24
REGISTRY=127.0.0.1:5000
PAUSE=$REGISTRY/microsandbox-e2e/pause:1
UPLINK=msb-e2e-uplink
CGROUP_ROOT=msb-e2e
BIN=$("$HERE/build.sh" --print-bin-dir)
# Short: containerd's shim sockets live below its state dir.
RUNDIR=/run/msb-e2e-node
mkdir -p "$RUNDIR"
echo "$BIN" >"$DIR/bin-dir"

# ---- host network: node address, forward fence, closed uplink -----------------------------
# On the loopback link: a local address like any other (kernels without the dummy driver too).
ip addr replace "$ADDR/32" dev lo
echo "$ADDR" >"$DIR/node-address"
nft -f - <<EOF
table inet msb_e2e_node
delete table inet msb_e2e_node
table inet msb_e2e_node {
  chain forward {
    type filter hook forward priority -10; policy accept;
    iifname "msb-cni0" oifname != "msb-cni0" drop
    ip saddr $POD_CIDR oifname != "msb-cni0" drop
  }
}
EOF
if [[ ! -e /run/netns/$UPLINK ]]; then
  ip netns add "$UPLINK"
fi
ip -n "$UPLINK" link set lo up

# ---- control plane on the node address ----------------------------------------------------
if [[ ! -f $DIR/cp/env ]] || ! kill -0 "$(cat "$DIR/cp/kube-apiserver.pid" 2>/dev/null || echo 0)" 2>/dev/null; then
  MSB_K8S_ADDRESS=$ADDR "$ROOT/tests/e2e/control-plane/start.sh" "$DIR/cp" >/dev/null
fi
# shellcheck disable=SC1091
. "$DIR/cp/env"
CERTS=$DIR/cp/certs

# ---- pause image ----------------------------------------------------------------------------
if ! curl -fsS 2>/dev/null --noproxy '*' -o /dev/null "http://$REGISTRY/v2/microsandbox-e2e/pause/manifests/1" \
  -H 'Accept: application/vnd.oci.image.manifest.v1+json'; then
  log "building the pause image ($PAUSE)"
  work=$(mktemp -d)
  umoci init --layout "$work/oci" >/dev/null
  umoci new --image "$work/oci:1" >/dev/null
  umoci unpack --image "$work/oci:1" "$work/bundle" >/dev/null
  install -D -m 0755 /bin/busybox "$work/bundle/rootfs/bin/busybox"
  ln -s busybox "$work/bundle/rootfs/bin/sh"
  ln -s busybox "$work/bundle/rootfs/bin/sleep"
  umoci repack --image "$work/oci:1" "$work/bundle" >/dev/null
  umoci config --image "$work/oci:1" --os linux --architecture amd64 \
    --config.entrypoint /bin/sh --config.entrypoint -c \
    --config.entrypoint 'trap "exit 0" TERM INT; sleep 2147483647 & wait' >/dev/null
  skopeo copy --quiet --insecure-policy --dest-tls-verify=false "oci:$work/oci:1" "docker://$PAUSE"
  remove_tree "$work"
fi

# ---- containerd -------------------------------------------------------------------------------
CTRD=$DIR/containerd
mkdir -p "$CTRD/certs.d/$REGISTRY" "$DIR/cni"
cat >"$CTRD/certs.d/$REGISTRY/hosts.toml" <<EOF
server = "http://$REGISTRY"
[host."http://$REGISTRY"]
  capabilities = ["pull", "resolve"]
EOF
cat >"$DIR/cni/10-msb-e2e.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "msb-e2e",
  "plugins": [
    {"type": "bridge", "bridge": "msb-cni0", "isGateway": true, "ipMasq": false,
     "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR"}]],
              "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$DIR/cni-ipam"}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
cat >"$CTRD/config.toml" <<EOF
version = 3
root = "$CTRD/root"
state = "$RUNDIR/containerd"

[grpc]
  address = "$RUNDIR/containerd.sock"

[plugins.'io.containerd.cri.v1.images']
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "$PAUSE"
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = "$CTRD/certs.d"

[plugins.'io.containerd.cri.v1.runtime']
  # This host refuses lowering oom_score_adj below the caller's.
  restrict_oom_score_adj = true
  # Pod network namespaces below our state dir, not among the host's /run/netns.
  netns_mounts_under_state_dir = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "$BIN/runc"
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "$DIR/cni"
EOF

running() { [[ -f $DIR/$1.pid ]] && kill -0 "$(cat "$DIR/$1.pid")" 2>/dev/null; }
spawn() { # NAME CMD...: start CMD in its own session, log to DIR/NAME.log
  local name=$1
  shift
  running "$name" && return 0
  setsid "$@" </dev/null >>"$DIR/$name.log" 2>&1 &
  echo $! >"$DIR/$name.pid"
}
wait_for() { # WHAT SECONDS CMD...
  local what=$1 secs=$2 i
  shift 2
  for ((i = 0; i < secs * 4; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.25
  done
  die "$what not ready after ${secs}s (logs in $DIR)"
}

spawn containerd "$BIN/containerd" --config "$CTRD/config.toml"
wait_for containerd 30 "$BIN/ctr" --address "$RUNDIR/containerd.sock" version

# ---- control-plane controllers ---------------------------------------------------------------
spawn kube-controller-manager "$BIN/kube-controller-manager" \
  --kubeconfig="$KUBECONFIG" --authentication-kubeconfig="$KUBECONFIG" \
  --authorization-kubeconfig="$KUBECONFIG" --leader-elect=false \
  --bind-address=127.0.0.1 --secure-port=10257 \
  --root-ca-file="$CERTS/ca.crt" --service-account-private-key-file="$CERTS/sa.key" \
  --use-service-account-credentials=false --controllers='*' --v=1
spawn kube-scheduler "$BIN/kube-scheduler" \
  --kubeconfig="$KUBECONFIG" --authentication-kubeconfig="$KUBECONFIG" \
  --authorization-kubeconfig="$KUBECONFIG" --leader-elect=false \
  --bind-address=127.0.0.1 --secure-port=10259 --v=1

# ---- kubelet + kube-proxy ---------------------------------------------------------------------
cat >"$DIR/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# Our hosts are cgroup v1 (hybrid); kubelet 1.35+ refuses that unless told.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /$CGROUP_ROOT
containerRuntimeEndpoint: unix://$RUNDIR/containerd.sock
address: $ADDR
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $CERTS/ca.crt}
authorization: {mode: AlwaysAllow}
podLogsDir: $DIR/pod-logs
failSwapOn: false
serializeImagePulls: false
# A shared test machine: never evict for disk or memory pressure.
evictionHard: {memory.available: "0%", nodefs.available: "0%", imagefs.available: "0%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
maxPods: 50
EOF
# Pods' cgroups under a root of our own (msb-e2e), so stop.sh touches nothing else's.
for controller in /sys/fs/cgroup/*/; do
  if [[ -e $controller/cgroup.procs ]]; then mkdir -p "$controller/$CGROUP_ROOT"; fi
done
spawn kubelet "$BIN/kubelet" --config="$DIR/kubelet.yaml" --kubeconfig="$KUBECONFIG" \
  --root-dir="$DIR/kubelet" --cert-dir="$DIR/kubelet-pki" \
  --hostname-override="$NODE" --node-ip="$ADDR" \
  --node-labels=microsandbox.dev/kvm=true --v=1

cat >"$DIR/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
clientConnection: {kubeconfig: $KUBECONFIG}
hostnameOverride: $NODE
clusterCIDR: $POD_CIDR
nodePortAddresses: ["$ADDR/32"]
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
# Leave the host's conntrack settings alone.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
spawn kube-proxy "$BIN/kube-proxy" --config="$DIR/kube-proxy.yaml" --v=1

node_ready() {
  [[ $(kubectl get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}') == True ]]
}
wait_for "node $NODE" 120 node_ready
# The ServiceAccount controller makes `default` in each namespace; the root-CA publisher the
# kube-root-ca.crt ConfigMap every pod's token volume needs.
wait_for "default ServiceAccount" 60 kubectl -n default get serviceaccount default
wait_for "kube-root-ca.crt" 60 kubectl -n default get configmap kube-root-ca.crt

cat >"$DIR/env" <<EOF
. '$DIR/cp/env'
export MSB_NODE_DIR='$DIR'
export MSB_NODE_NAME='$NODE'
export MSB_NODE_ADDRESS='$ADDR'
export MSB_NODE_UPLINK_NETNS='$UPLINK'
EOF
log "ready: node $NODE ($ADDR), apiserver $MSB_K8S_API_URL"
echo "DIR=$DIR"
echo "KUBECONFIG=$KUBECONFIG"
