#!/usr/bin/env bash
# Builds the container images of the operator and the node-agent WITHOUT Docker, from the
# release binaries already built in this tree, as OCI layouts (umoci), then pushes them to a
# registry and/or exports docker-archive tarballs (what `kind load image-archive` takes):
#
#   microsandbox/operator:<tag>    Debian bookworm minbase + ca-certificates, libssl3;
#                                  /usr/local/bin/microsandbox-operator, runs as 65532:65532
#   microsandbox/node-agent:<tag>  the same + crun; /usr/local/bin/microsandbox-agent and the
#                                  static guest agent beside it (/usr/local/bin/microsandbox-guest),
#                                  and the microVM runtime in /usr/local/lib: libkrun (built from
#                                  crates.io) and libkrunfw (Debian), pinned and checksummed by
#                                  scripts/libkrun.sh; the build runs `microsandbox-agent doctor`
#                                  inside the image and fails unless both load
#
# Usage: images/build.sh [--registry HOST:PORT] [--archive DIR] [--tag TAG] [--insecure]
#                        [--add-lib FILE]...
#   --registry HOST:PORT  push to docker://HOST:PORT/microsandbox/<name>:<tag>; the default when
#                         --archive is not given is 127.0.0.1:5000 (scripts/test-registry.sh).
#                         Loopback registries are spoken to over plain HTTP.
#   --archive DIR         write DIR/<name>-<tag>.tar (docker-archive, tagged microsandbox/<name>:<tag>)
#   --tag TAG             image tag (default: [workspace.package] version of Cargo.toml)
#   --insecure            plain HTTP / no TLS verification for a non-loopback registry too
#   --add-lib FILE        also copy shared library FILE into the node-agent image's
#                         /usr/local/lib; repeatable (libkrun and libkrunfw are always there)
# Prints each image reference with its digest. Needs root (debootstrap, umoci unpack/repack)
# and the binaries, built by:
#   make agent                                   (agent + static guest agent)
#   cargo build --release -p microsandbox-operator
# (under $CARGO_TARGET_DIR if set, else target/). This script never builds them.
#
# The Debian rootfs of each image is debootstrapped from the apt mirror the host is configured
# with (MSB_DEBIAN_MIRROR overrides) and cached as a tarball keyed by its recipe in
# ${MSB_CACHE:-~/.cache/microsandbox}/release-images; the OCI layouts are cached there too,
# keyed by recipe + binaries, so a rerun with unchanged binaries only pushes/exports.
# MSB_REBUILD_IMAGES=1 forces a rebuild of the layouts (the rootfs tarballs are kept).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOG_TAG=build-images
# shellcheck source=images/lib.sh
. "$ROOT/images/lib.sh"

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

REGISTRY=
ARCHIVE=
TAG=
INSECURE=0
ADD_LIBS=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --registry) REGISTRY=${2:?--registry needs HOST:PORT}; shift 2 ;;
    --registry=*) REGISTRY=${1#*=}; shift ;;
    --archive) ARCHIVE=${2:?--archive needs a directory}; shift 2 ;;
    --archive=*) ARCHIVE=${1#*=}; shift ;;
    --tag) TAG=${2:?--tag needs a value}; shift 2 ;;
    --tag=*) TAG=${1#*=}; shift ;;
    --insecure) INSECURE=1; shift ;;
    --add-lib) ADD_LIBS+=("${2:?--add-lib needs a file}"); shift 2 ;;
    --add-lib=*) ADD_LIBS+=("${1#*=}"); shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done
[[ -z $REGISTRY && -z $ARCHIVE ]] && REGISTRY=127.0.0.1:5000
if [[ -z $TAG ]]; then
  TAG=$(awk '/^\[/ { s = ($0 == "[workspace.package]") } s && $1 == "version" { gsub(/"/, "", $3); print $3; exit }' \
    "$ROOT/Cargo.toml")
  [[ -n $TAG ]] || die "no version in [workspace.package] of $ROOT/Cargo.toml; pass --tag"
fi
SOURCE_URL=$(awk '$1 == "home:" { print $2; exit }' "$ROOT/charts/microsandbox/Chart.yaml")
SOURCE_URL=${SOURCE_URL:-https://github.com/microsandbox/microsandbox}

DEBIAN_SUITE=bookworm
OPERATOR_INCLUDE=ca-certificates,libssl3
AGENT_INCLUDE=ca-certificates,libssl3,crun,iproute2,nftables
PATH_ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
ARCH=amd64 # the guest agent is built for x86_64-unknown-linux-gnu

# ---- preflight ------------------------------------------------------------------------------
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
AGENT_BIN=$TARGET/release/microsandbox-agent
OPERATOR_BIN=$TARGET/release/microsandbox-operator
GUEST_BIN=$TARGET/x86_64-unknown-linux-gnu/release/microsandbox-guest
missing=()
[[ -x $AGENT_BIN ]] || missing+=("$AGENT_BIN (make agent)")
[[ -x $GUEST_BIN ]] || missing+=("$GUEST_BIN (make guest)")
[[ -x $OPERATOR_BIN ]] || missing+=("$OPERATOR_BIN (cargo build --release -p microsandbox-operator)")
if [[ ${#missing[@]} -gt 0 ]]; then
  printf '[%s] missing release binary: %s\n' "$LOG_TAG" "${missing[@]}" >&2
  die "build them first (make agent && cargo build --release -p microsandbox-operator); this script does not"
fi
for lib in "${ADD_LIBS[@]}"; do
  [[ -f $lib ]] || die "--add-lib $lib: no such file"
done
[[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap, umoci unpack/repack need it)"
# The microVM runtime: built/fetched once, cached (scripts/libkrun.sh).
KRUN_LIB=$("$ROOT/scripts/libkrun.sh" --print-lib-dir) || die "scripts/libkrun.sh failed (above)"
ADD_LIBS+=("$KRUN_LIB/libkrun.so.1" "$KRUN_LIB/libkrunfw.so.5")
for tool in umoci skopeo debootstrap jq flock sha256sum; do
  command -v "$tool" >/dev/null || die "$tool not found (apt-get install umoci skopeo debootstrap jq)"
done
[[ $(dpkg --print-architecture) == "$ARCH" ]] || die "only $ARCH hosts are supported"
# Never route loopback traffic through a proxy.
export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}" no_proxy="127.0.0.1,localhost${no_proxy:+,$no_proxy}"

CACHE=${MSB_CACHE:-$HOME/.cache/microsandbox}/release-images
mkdir -p "$CACHE/oci" "$CACHE/tmp"
exec 9>"$CACHE/lock"
flock 9 # serialise concurrent runs
for stale in "$CACHE"/tmp/build.*; do # left by an interrupted run (we hold the lock)
  [[ -d $stale ]] && remove_tree "$stale"
done
WORK=$(mktemp -d "$CACHE/tmp/build.XXXXXX")
trap 'remove_tree "$WORK"' EXIT

# ---- Debian rootfs (cached tarball per recipe) ----------------------------------------------

# make_rootfs ROOT MIRROR INCLUDE: debootstrap minbase + INCLUDE, add the distroless-style
# `nonroot` user (65532), shrink.
make_rootfs() {
  local root=$1 mirror=$2 include=$3
  debootstrap --variant=minbase --include="$include" "$DEBIAN_SUITE" "$root" "$mirror"
  chroot "$root" groupadd -g 65532 nonroot
  chroot "$root" useradd -M -d /home/nonroot -u 65532 -g 65532 -s /usr/sbin/nologin nonroot
  install -d -m 0700 -o 65532 -g 65532 "$root/home/nonroot"
  # Shrink: caches, docs, locales, logs; device nodes come from the runtime.
  rm -rf "${root:?}"/var/cache/apt/* "${root:?}"/var/lib/apt/lists/* \
    "${root:?}"/usr/share/doc/* "${root:?}"/usr/share/man/* "${root:?}"/usr/share/info/* \
    "${root:?}"/usr/share/locale/* "${root:?}"/usr/share/lintian \
    "${root:?}"/var/cache/debconf/*-old "${root:?}"/var/lib/dpkg/*-old \
    "${root:?}"/var/log/* "${root:?}"/dev/* "${root:?}"/run/* "${root:?}"/tmp/* "${root:?}"/root/.cache
  : >"$root/etc/machine-id"
  chmod 1777 "$root/tmp"
}

rootfs_key() { # INCLUDE
  { declare -f make_rootfs; echo "$DEBIAN_SUITE $1"; pkgver debootstrap; } | sha | cut -c1-16
}

# rootfs_tarball FLAVOR INCLUDE: prints the cached tarball, debootstrapping it if needed.
rootfs_tarball() {
  local flavor=$1 include=$2 key tarball mirror dir start
  key=$(rootfs_key "$include")
  tarball=$CACHE/rootfs-$flavor-$DEBIAN_SUITE-$key.tar.gz
  if [[ ! -f $tarball ]]; then
    mirror=$(debian_mirror)
    dir=$WORK/rootfs-$flavor
    start=$SECONDS
    log "$flavor: debootstrap $DEBIAN_SUITE minbase (+$include) from $mirror; this takes a few minutes" >&2
    make_rootfs "$dir" "$mirror" "$include" >"$WORK/debootstrap-$flavor.log" 2>&1 || {
      tail -n 30 "$WORK/debootstrap-$flavor.log" >&2
      die "debootstrap failed (log above)"
    }
    tar --numeric-owner -C "$dir" -czf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    find "$CACHE" -maxdepth 1 -name "rootfs-$flavor-*.tar.gz" ! -path "$tarball" -delete
    remove_tree "$dir"
    log "$flavor: rootfs built in $((SECONDS - start))s, cached as $tarball ($(du -h "$tarball" | cut -f1))" >&2
  fi
  echo "$tarball"
}

# ---- images ---------------------------------------------------------------------------------

# Files of each image: "SRC DEST MODE" lines.
files_operator() { echo "$OPERATOR_BIN /usr/local/bin/microsandbox-operator 0755"; }
files_node_agent() {
  local lib
  echo "$AGENT_BIN /usr/local/bin/microsandbox-agent 0755"
  echo "$GUEST_BIN /usr/local/bin/microsandbox-guest 0755"
  for lib in "${ADD_LIBS[@]}"; do
    lib=$(readlink -f "$lib")
    echo "$lib /usr/local/lib/$(basename "$lib") 0644"
  done
}

# assemble NAME TARBALL INCLUDE USER ENTRYPOINT LAYOUT: OCI layout LAYOUT:$TAG with two layers,
# the Debian rootfs (TARBALL, debootstrapped with INCLUDE) and the files of NAME.
assemble() {
  local name=$1 tarball=$2 include=$3 user=$4 entrypoint=$5 layout=$6 bundle=$WORK/bundle-$1 src dest mode
  umoci init --layout "$layout"
  umoci new --image "$layout:$TAG"
  umoci unpack --image "$layout:$TAG" "$bundle" >/dev/null
  tar --numeric-owner -xpzf "$tarball" -C "$bundle/rootfs"
  umoci repack --refresh-bundle --image "$layout:$TAG" --history.created_by "images/build.sh" \
    --history.comment "debian $DEBIAN_SUITE minbase + $include" "$bundle"
  while read -r src dest mode; do
    install -D -m "$mode" "$src" "$bundle/rootfs$dest"
  done < <("files_${name//-/_}")
  if [[ $name == node-agent && ${#ADD_LIBS[@]} -gt 0 ]]; then
    chroot "$bundle/rootfs" /sbin/ldconfig # soname links for the added libraries
    while read -r src dest mode; do
      [[ $dest == /usr/local/lib/* ]] || continue
      if chroot "$bundle/rootfs" /usr/bin/ldd "$dest" | grep 'not found' >&2; then
        die "$src needs libraries the $DEBIAN_SUITE image lacks (above)"
      fi
    done < <(files_node_agent)
  fi
  if [[ $name == node-agent ]]; then
    image_doctor "$bundle/rootfs"
  fi
  umoci repack --image "$layout:$TAG" --history.created_by "images/build.sh" \
    --history.comment "microsandbox $name $TAG" "$bundle"
  umoci config --image "$layout:$TAG" --os linux --architecture "$ARCH" --author microsandbox \
    --clear=config.cmd --clear=config.entrypoint --clear=config.env --clear=config.labels \
    --config.env "$PATH_ENV" --config.workingdir / --config.user "$user" \
    --config.entrypoint "$entrypoint" \
    --config.label "org.opencontainers.image.source=$SOURCE_URL" \
    --config.label "org.opencontainers.image.version=$TAG" \
    --config.label "org.opencontainers.image.title=microsandbox-$name"
  umoci gc --layout "$layout"
  remove_tree "$bundle"
}

# image_doctor ROOTFS: `microsandbox-agent doctor` inside the image (chroot, its own /proc):
# libkrun and libkrunfw must load there, whatever this host's KVM can do.
image_doctor() {
  local root=$1 report status
  report=$(unshare --mount --fork sh -c 'mount -t proc proc "$1/proc" && exec chroot "$1" /usr/local/bin/microsandbox-agent doctor --json' \
    sh "$root") || true
  for check in libkrun libkrunfw; do
    status=$(jq -r --arg c "$check" '.checks[] | select(.name == $c) | .status' <<<"$report" 2>/dev/null || true)
    [[ $status == ok ]] || die "doctor inside the node-agent image: $check is '${status:-missing}': $(jq -c --arg c "$check" '.checks[] | select(.name == $c)' <<<"$report" 2>/dev/null || echo "$report")"
  done
  log "node-agent: doctor inside the image: libkrun ok, libkrunfw ok"
}

manifest_digest() { # LAYOUT
  jq -r --arg t "$TAG" \
    '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $t) | .digest' "$1/index.json"
}

# image NAME FLAVOR INCLUDE USER ENTRYPOINT: the cached layout of NAME ($CACHE/oci/NAME),
# rebuilt when its key (recipe, rootfs, binaries, tag) changed.
image() {
  local name=$1 flavor=$2 include=$3 user=$4 entrypoint=$5 tarball key layout=$CACHE/oci/$1 start
  tarball=$(rootfs_tarball "$flavor" "$include")
  key=$({
    declare -f assemble "files_${name//-/_}"
    echo "$tarball $include $user $entrypoint $TAG $SOURCE_URL $PATH_ENV $ARCH"
    pkgver umoci
    "files_${name//-/_}" | while read -r src dest mode; do echo "$dest $mode $(sha <"$src")"; done
  } | sha)
  if [[ ${MSB_REBUILD_IMAGES:-0} != 1 && -f $layout.key && $(<"$layout.key") == "$key" && -f $layout/index.json ]]; then
    log "$name: layout up to date ($layout)"
    return 0
  fi
  start=$SECONDS
  log "$name: assembling $name:$TAG"
  assemble "$name" "$tarball" "$include" "$user" "$entrypoint" "$WORK/oci-$name" >/dev/null
  rm -rf "$layout" "$layout.key"
  mv "$WORK/oci-$name" "$layout"
  echo "$key" >"$layout.key"
  log "$name: built in $((SECONDS - start))s, manifest $(manifest_digest "$layout")"
}

image operator operator "$OPERATOR_INCLUDE" 65532:65532 /usr/local/bin/microsandbox-operator
image node-agent node-agent "$AGENT_INCLUDE" 0:0 /usr/local/bin/microsandbox-agent

# ---- push / export --------------------------------------------------------------------------
results=()
for name in operator node-agent; do
  layout=$CACHE/oci/$name
  ref=microsandbox/$name:$TAG
  if [[ -n $REGISTRY ]]; then
    tls=()
    if [[ $INSECURE == 1 ]] || is_loopback "$REGISTRY"; then tls=(--dest-tls-verify=false); fi
    skopeo copy --quiet --insecure-policy "${tls[@]}" --digestfile "$WORK/digest" \
      "oci:$layout:$TAG" "docker://$REGISTRY/$ref"
    results+=("$REGISTRY/$ref@$(<"$WORK/digest")")
  fi
  if [[ -n $ARCHIVE ]]; then
    mkdir -p "$ARCHIVE"
    file=$(cd "$ARCHIVE" && pwd)/$name-$TAG.tar
    rm -f "$file.tmp"
    skopeo copy --quiet --insecure-policy "oci:$layout:$TAG" "docker-archive:$file.tmp:$ref"
    mv "$file.tmp" "$file"
    # The image ID docker/containerd show for it: the digest of its config.
    id=$(skopeo inspect --raw "docker-archive:$file" | jq -r .config.digest)
    results+=("$file ($ref, image id $id)")
  fi
done
log "images (OCI manifest digests: operator $(manifest_digest "$CACHE/oci/operator"), node-agent $(manifest_digest "$CACHE/oci/node-agent")):"
for r in "${results[@]}"; do log "  $r"; done
