#!/usr/bin/env bash
# Reconnaissance and escape-check tools that node-agent/tests/escape.rs runs inside sandboxes,
# built from the Go module proxy (static, CGO off) and cached:
#   kdigger      (Quarkslab: Kubernetes pentest "context discovery": capabilities, devices,
#                 mounts, namespaces, processes, syscalls, tokens, cloud metadata, ...)
#   amicontained (container introspection: runtime, namespaces, capabilities, seccomp mode and
#                 the syscalls it finds blocked, probing each)
# Prints the directory that holds them.
set -euo pipefail
OUT="${XDG_CACHE_HOME:-$HOME/.cache}/microsandbox/escape-tools"
mkdir -p "$OUT"

build() { # module version name
  local bin="$OUT/$3-$2"
  if [[ ! -x $bin ]]; then
    # `go install mod@version` asks the proxy for the module's version list, which it withholds
    # for these; the exact version downloads, and builds from the module cache with its go.sum.
    local dir
    dir=$(go mod download -json "$1@$2" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
    [[ -n $dir ]] || { echo "escape-tools: cannot download $1@$2" >&2; exit 1; }
    (cd "$dir" && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$bin.tmp" .)
    mv "$bin.tmp" "$bin"
  fi
  ln -sf "$(basename "$bin")" "$OUT/$3"
}

build github.com/quarkslab/kdigger v1.5.1 kdigger >&2
build github.com/genuinetools/amicontained v0.4.9 amicontained >&2
echo "$OUT"
