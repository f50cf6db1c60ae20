#!/usr/bin/env bash
# The CRDs against a real kube-apiserver (built from Go modules, tests/e2e/control-plane): the
# generated YAML installs, every example is accepted, and every bad spec in tests/invalid is
# rejected by the apiserver itself (CEL / OpenAPI validation) with its `# expect:` message.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CP="$REPO/tests/e2e/control-plane"
DIR=$(mktemp -d /tmp/msb-crds.XXXXXX)
"$CP/start.sh" "$DIR" >/dev/null
trap '"$CP/stop.sh" "$DIR" >/dev/null 2>&1 || true' EXIT
# shellcheck source=/dev/null
source "$DIR/env"

kubectl apply --server-side -f "$REPO/crds/microsandbox.dev_crds.yaml" >/dev/null
kubectl wait --for condition=established --timeout=60s \
  crd/sandboxes.microsandbox.dev crd/volumes.microsandbox.dev crd/secrets.microsandbox.dev \
  crd/sandboxtemplates.microsandbox.dev crd/sandboxwarmpools.microsandbox.dev \
  crd/sandboxclaims.microsandbox.dev >/dev/null

passed=0
failed=0
ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL $1: $2"; }

for f in "$REPO"/crds/examples/*.yaml; do
  if out=$(kubectl create -f "$f" 2>&1); then ok; else bad "$(basename "$f")" "valid example rejected: $out"; fi
  kubectl delete -f "$f" --ignore-not-found --wait=false >/dev/null 2>&1 || true
done

for f in "$REPO"/crds/tests/invalid/*.yaml; do
  name=$(basename "$f")
  expect=$(head -1 "$f" | sed -n 's/^# expect: //p')
  [[ -n $expect ]] || { bad "$name" "no '# expect:' line"; continue; }
  work=$(mktemp -d)
  # Split into documents: doc-00 (and doc-01 for update cases).
  awk -v dir="$work" 'BEGIN{n=0} /^---/{n++; next} {print > sprintf("%s/doc-%02d.yaml", dir, n)}' "$f"
  docs=$(find "$work" -name 'doc-*.yaml' | sort)
  first=$(echo "$docs" | head -1)
  if [[ $(echo "$docs" | wc -l) -ge 2 ]]; then
    if ! out=$(kubectl create -f "$first" 2>&1); then
      bad "$name" "valid first document rejected: $out"
    elif out=$(kubectl apply --server-side --force-conflicts -f "$(echo "$docs" | sed -n 2p)" 2>&1); then
      bad "$name" "update accepted, expected: $expect"
    elif [[ $out != *"$expect"* ]]; then
      bad "$name" "rejected with an unexpected message: $out (expected: $expect)"
    else ok; fi
  else
    if out=$(kubectl create -f "$first" 2>&1); then
      bad "$name" "accepted, expected rejection: $expect"
    elif [[ $out != *"$expect"* ]]; then
      bad "$name" "rejected with an unexpected message: $out (expected: $expect)"
    else ok; fi
  fi
  kubectl delete -f "$first" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  rm -rf "$work"
done

echo "crds on kube-apiserver: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
