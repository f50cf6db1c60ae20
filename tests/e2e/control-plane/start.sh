#!/usr/bin/env bash
# Start a throw-away Kubernetes control plane (etcd + kube-apiserver) bound to
# 127.0.0.1 only (or MSB_K8S_ADDRESS). No kubelet, no controller-manager, no scheduler
# (tests/e2e/node/start.sh adds those).
#
# Usage: tests/e2e/control-plane/start.sh [DIR]
#   DIR  state directory (created; default: a new mktemp -d). It receives
#        kubeconfig, env, certs/, etcd data, logs and pid files.
#
# On success prints `DIR=<dir>` and `KUBECONFIG=<dir>/kubeconfig` and writes
# <dir>/env (source it: exports KUBECONFIG, PATH with kubectl/helm,
# MSB_K8S_DIR, MSB_K8S_API_PORT, MSB_K8S_ADMIN_TOKEN).
# Stop with: tests/e2e/control-plane/stop.sh <dir>
#
# Environment:
#   MSB_K8S_API_PORT          apiserver secure port (default 6443, or a free
#                             port if 6443 is taken)
#   MSB_K8S_APISERVER_ARGS    extra kube-apiserver flags (word-split), e.g.
#                             "--disable-admission-plugins=ServiceAccount"
#   MSB_K8S_READY_TIMEOUT     seconds to wait for /readyz (default 120)
#   MSB_K8S_ADDRESS           address the apiserver binds and advertises (default
#                             127.0.0.1). Another address (one of this host's, e.g. on a
#                             dummy link) makes the `kubernetes` Service reachable from pods:
#                             the apiserver then maintains its endpoint (lease reconciler).
#   plus KUBE_VERSION / ETCD_VERSION / HELM_VERSION / MSB_CACHE (versions.env)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
. "${HERE}/versions.env"

log() { echo "[k8s-start] $*" >&2; }
die() { echo "[k8s-start] ERROR: $*" >&2; exit 1; }

command -v openssl >/dev/null || die "openssl not found"

# Build (or just locate) the binaries; instant when cached.
BIN="$("${HERE}/build.sh" --print-bin-dir)"

if [ $# -ge 1 ]; then
  DIR="$1"; mkdir -p "$DIR"; DIR="$(cd "$DIR" && pwd)"
else
  DIR="$(mktemp -d "${TMPDIR:-/tmp}/msb-k8s.XXXXXX")"
fi
[ -e "$DIR/kube-apiserver.pid" ] && kill -0 "$(cat "$DIR/kube-apiserver.pid")" 2>/dev/null \
  && die "a control plane is already running in $DIR (stop.sh $DIR first)"

CERTS="$DIR/certs"
mkdir -p "$CERTS" "$DIR/etcd"
chmod 700 "$DIR"

# ----------------------------------------------------------------- ports --
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {
  if command -v python3 >/dev/null; then
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
  else
    local p
    for _ in $(seq 1 200); do p=$(( 20000 + RANDOM % 30000 )); port_free "$p" && { echo "$p"; return; }; done
    die "no free port found"
  fi
}
API_PORT="${MSB_K8S_API_PORT:-6443}"
if ! port_free "$API_PORT"; then
  [ -n "${MSB_K8S_API_PORT:-}" ] && die "port $API_PORT (MSB_K8S_API_PORT) is in use"
  API_PORT="$(free_port)"
fi
ETCD_PORT="$(free_port)"
ETCD_PEER_PORT="$(free_port)"
while [ "$ETCD_PEER_PORT" = "$ETCD_PORT" ] || [ "$ETCD_PEER_PORT" = "$API_PORT" ]; do ETCD_PEER_PORT="$(free_port)"; done

# ----------------------------------------------------------------- certs --
SERVICE_CIDR="10.96.0.0/24"
SERVICE_IP="10.96.0.1"   # first IP of SERVICE_CIDR: the `kubernetes` Service
ADDRESS="${MSB_K8S_ADDRESS:-127.0.0.1}"
RECONCILER=none          # a loopback endpoint would be refused
[ "$ADDRESS" = 127.0.0.1 ] || RECONCILER=lease
log "generating certificates in $CERTS"
(
  cd "$CERTS"
  umask 077
  ossl() { openssl "$@" 2>/dev/null; }
  ossl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 \
    -keyout ca.key -out ca.crt -subj "/CN=msb-test-kubernetes-ca"
  # apiserver serving certificate
  cat > apiserver.ext <<EOF
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:${ADDRESS},IP:${SERVICE_IP},DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
EOF
  ossl req -newkey rsa:2048 -nodes -sha256 -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver"
  ossl x509 -req -sha256 -days 3650 -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
    -extfile apiserver.ext -out apiserver.crt
  # admin client certificate (system:masters => cluster-admin via RBAC bootstrap)
  cat > client.ext <<EOF
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth
EOF
  ossl req -newkey rsa:2048 -nodes -sha256 -keyout admin.key -out admin.csr -subj "/O=system:masters/CN=admin"
  ossl x509 -req -sha256 -days 3650 -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
    -extfile client.ext -out admin.crt
  # service-account token signing key
  ossl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out sa.key
  ossl pkey -in sa.key -pubout -out sa.pub
  # static bearer token for the admin user (alternative to the client cert)
  ADMIN_TOKEN="$(openssl rand -hex 32)"
  echo "${ADMIN_TOKEN},admin-token,admin-token-uid,system:masters" > tokens.csv
  echo "$ADMIN_TOKEN" > admin.token
  rm -f ./*.csr ./*.ext ./*.srl
) || die "certificate generation failed"
ADMIN_TOKEN="$(cat "$CERTS/admin.token")"

# ------------------------------------------------------------------ etcd --
log "starting etcd ${ETCD_VERSION} on 127.0.0.1:${ETCD_PORT}"
setsid "$BIN/etcd" \
  --name=default \
  --data-dir="$DIR/etcd" \
  --listen-client-urls="http://127.0.0.1:${ETCD_PORT}" \
  --advertise-client-urls="http://127.0.0.1:${ETCD_PORT}" \
  --listen-peer-urls="http://127.0.0.1:${ETCD_PEER_PORT}" \
  --initial-advertise-peer-urls="http://127.0.0.1:${ETCD_PEER_PORT}" \
  --initial-cluster="default=http://127.0.0.1:${ETCD_PEER_PORT}" \
  --initial-cluster-state=new \
  --unsafe-no-fsync=true \
  --log-level=warn \
  </dev/null >"$DIR/etcd.log" 2>&1 &
echo $! > "$DIR/etcd.pid"

fail() {
  log "$1; last log lines:"
  tail -n 30 "$DIR/$2.log" >&2 || true
  "${HERE}/stop.sh" --keep "$DIR" >&2 || true
  die "$1 (logs kept in $DIR)"
}

for _ in $(seq 1 100); do
  kill -0 "$(cat "$DIR/etcd.pid")" 2>/dev/null || fail "etcd exited" etcd
  curl -fsS "http://127.0.0.1:${ETCD_PORT}/health" 2>/dev/null | grep -q '"health":"true"' && break
  sleep 0.2
done
curl -fsS "http://127.0.0.1:${ETCD_PORT}/health" 2>/dev/null | grep -q '"health":"true"' || fail "etcd not healthy" etcd

# -------------------------------------------------------- kube-apiserver --
log "starting kube-apiserver ${KUBE_VERSION} on https://${ADDRESS}:${API_PORT}"
# The command goes into a script of its own so restart-apiserver.sh can run it again.
cat > "$DIR/kube-apiserver.sh" <<EOF
#!/usr/bin/env bash
exec "$BIN/kube-apiserver" \\
  --bind-address=${ADDRESS} \\
  --advertise-address=${ADDRESS} \\
  --endpoint-reconciler-type=${RECONCILER} \\
  --kubelet-client-certificate="$CERTS/admin.crt" \\
  --kubelet-client-key="$CERTS/admin.key" \\
  --kubelet-preferred-address-types=InternalIP \\
  --secure-port="${API_PORT}" \\
  --etcd-servers="http://127.0.0.1:${ETCD_PORT}" \\
  --tls-cert-file="$CERTS/apiserver.crt" \\
  --tls-private-key-file="$CERTS/apiserver.key" \\
  --client-ca-file="$CERTS/ca.crt" \\
  --token-auth-file="$CERTS/tokens.csv" \\
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \\
  --service-account-key-file="$CERTS/sa.pub" \\
  --service-account-signing-key-file="$CERTS/sa.key" \\
  --service-cluster-ip-range="${SERVICE_CIDR}" \\
  --authorization-mode=RBAC \\
  --allow-privileged=true \\
  --profiling=false \\
  --v=1 \\
  ${MSB_K8S_APISERVER_ARGS:-}
EOF
chmod 700 "$DIR/kube-apiserver.sh"
setsid "$DIR/kube-apiserver.sh" </dev/null >>"$DIR/kube-apiserver.log" 2>&1 &
echo $! > "$DIR/kube-apiserver.pid"

# -------------------------------------------------------------- kubeconfig --
b64() { base64 -w0 < "$1" 2>/dev/null || base64 < "$1" | tr -d '\n'; }
cat > "$DIR/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: msb-test
  cluster:
    server: https://${ADDRESS}:${API_PORT}
    certificate-authority-data: $(b64 "$CERTS/ca.crt")
users:
- name: admin
  user:
    client-certificate-data: $(b64 "$CERTS/admin.crt")
    client-key-data: $(b64 "$CERTS/admin.key")
- name: admin-token
  user:
    token: ${ADMIN_TOKEN}
contexts:
- name: msb-test
  context:
    cluster: msb-test
    user: admin
    namespace: default
- name: msb-test-token
  context:
    cluster: msb-test
    user: admin-token
    namespace: default
current-context: msb-test
EOF
chmod 600 "$DIR/kubeconfig"

cat > "$DIR/env" <<EOF
export MSB_K8S_DIR='$DIR'
export KUBECONFIG='$DIR/kubeconfig'
export MSB_K8S_API_PORT='$API_PORT'
export MSB_K8S_API_URL='https://$ADDRESS:$API_PORT'
export MSB_K8S_ADDRESS='$ADDRESS'
export MSB_K8S_ADMIN_TOKEN='$ADMIN_TOKEN'
export MSB_K8S_ETCD_URL='http://127.0.0.1:$ETCD_PORT'
export PATH='$BIN':"\$PATH"
EOF

TIMEOUT="${MSB_K8S_READY_TIMEOUT:-120}"
deadline=$(( $(date +%s) + TIMEOUT ))
until "$BIN/kubectl" --kubeconfig "$DIR/kubeconfig" get --raw /readyz >/dev/null 2>&1; do
  kill -0 "$(cat "$DIR/kube-apiserver.pid")" 2>/dev/null || fail "kube-apiserver exited" kube-apiserver
  [ "$(date +%s)" -lt "$deadline" ] || fail "kube-apiserver not ready after ${TIMEOUT}s" kube-apiserver
  sleep 0.5
done
# /readyz covers the RBAC bootstrap; also wait for the system namespaces.
until "$BIN/kubectl" --kubeconfig "$DIR/kubeconfig" get ns kube-system kube-public default >/dev/null 2>&1; do
  [ "$(date +%s)" -lt "$deadline" ] || fail "system namespaces not created after ${TIMEOUT}s" kube-apiserver
  sleep 0.5
done

log "ready: kube-apiserver https://${ADDRESS}:${API_PORT}, etcd http://127.0.0.1:${ETCD_PORT}"
log "use:   source $DIR/env   (or kubectl --kubeconfig $DIR/kubeconfig ...)"
log "stop:  ${HERE}/stop.sh $DIR"
echo "DIR=$DIR"
echo "KUBECONFIG=$DIR/kubeconfig"
