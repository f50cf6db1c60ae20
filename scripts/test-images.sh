#!/usr/bin/env bash
# Builds the test images and pushes them to the local test registry
# (scripts/test-registry.sh, http://127.0.0.1:5000). No public registry needed.
#
#   127.0.0.1:5000/library/busybox:latest  busybox-static rootfs, 1 layer
#   127.0.0.1:5000/library/layered:latest  2 layers; layer 2 whites out
#                                          /etc/removed-me and adds /etc/added-file
#   127.0.0.1:5000/library/layered:opaque  layered:latest + a 3rd layer that makes
#                                          /opt/opaque-dir opaque (.wh..wh..opq)
#                                          and adds /opt/opaque-dir/new-file
#   127.0.0.1:5000/library/python:latest   Debian bookworm minbase + python3 (+ python -> python3)
#   127.0.0.1:5000/library/node:latest     Debian bookworm minbase + nodejs (node)
#   127.0.0.1:5000/microsandbox/{python,node}:latest  the same two, under upstream's names
#
# Every image has root, nobody (65534) and sandbox (1000, home /home/sandbox).
#
# Cached under ${MSB_CACHE:-$HOME/.cache/microsandbox}/images: an image is
# rebuilt only if the registry does not serve the digest recorded in its stamp
# file or the recipe (the functions of this script + tool versions) changed.
# The debootstrapped python and node rootfs are cached as tarballs keyed by their recipes.
# Set MSB_REBUILD_IMAGES=1 to force a rebuild/push (the rootfs tarball is kept).
#
# Must run as root (umoci unpack/repack, debootstrap, chown).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${MSB_CACHE:-$HOME/.cache/microsandbox}
IMGCACHE=$CACHE/images
REGISTRY=127.0.0.1:5000
DEBIAN_SUITE=bookworm
PY_INCLUDE=python3,python-is-python3
NODE_INCLUDE=nodejs
PATH_ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

log() { printf '[images] %s\n' "$*"; }
die() { printf '[images] ERROR: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (umoci unpack/repack and debootstrap need it)"
for tool in umoci skopeo debootstrap jq curl busybox flock sha256sum; do
  command -v "$tool" >/dev/null || die "$tool not found; run scripts/setup.sh"
done
# Never route loopback traffic through a proxy.
export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}" no_proxy="127.0.0.1,localhost${no_proxy:+,$no_proxy}"

mkdir -p "$IMGCACHE/stamps" "$IMGCACHE/tmp"
exec 9>"$IMGCACHE/lock"
flock 9 # serialise concurrent runs

# remove_tree DIR: unmount anything below DIR (debootstrap mounts proc/sys in
# its target), then delete it without crossing into other filesystems.
remove_tree() {
  local m
  awk -v w="$1/" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done
  rm -rf --one-file-system "$1"
}
for stale in "$IMGCACHE"/tmp/build.*; do # left by an interrupted run (we hold the lock)
  [[ -d $stale ]] && remove_tree "$stale"
done
WORK=$(mktemp -d "$IMGCACHE/tmp/build.XXXXXX")
cleanup() { remove_tree "$WORK"; }
trap cleanup EXIT

pkgver() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo unknown; }
sha() { sha256sum | cut -c1-64; }

# ------------------------------------------------------------------------------
# rootfs recipes
# ------------------------------------------------------------------------------

# Users/groups shared by all images (busybox has no useradd).
write_etc_users() {
  local root=$1
  mkdir -p "$root/etc" "$root/root" "$root/home/sandbox" "$root/tmp"
  cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
sandbox:x:1000:1000:sandbox:/home/sandbox:/bin/sh
EOF
  cat >"$root/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
sandbox:x:1000:
EOF
  cat >"$root/etc/shadow" <<'EOF'
root:*:19000:0:99999:7:::
nobody:*:19000:0:99999:7:::
sandbox:*:19000:0:99999:7:::
EOF
  chmod 0644 "$root/etc/passwd" "$root/etc/group"
  chmod 0640 "$root/etc/shadow"
  chmod 0700 "$root/root"
  chmod 1777 "$root/tmp"
  chown 1000:1000 "$root/home/sandbox"
  chmod 0755 "$root/home/sandbox"
}

make_busybox_rootfs() {
  local root=$1 applet
  mkdir -p "$root"/{bin,etc,dev,proc,sys,run,var,usr/bin}
  chmod 0755 "$root"
  install -m 0755 /bin/busybox "$root/bin/busybox"
  # Same as `busybox --install -s /bin`, but with relative link targets
  # (run on the host, --install would point the links at the host path).
  for applet in $(busybox --list); do
    [[ $applet == busybox ]] && continue
    ln -sf busybox "$root/bin/$applet"
  done
  ln -sf ../../bin/env "$root/usr/bin/env" # for `#!/usr/bin/env` scripts
  write_etc_users "$root"
  printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
}

debian_mirror() {
  local uri
  if [[ -n ${MSB_DEBIAN_MIRROR:-} ]]; then
    echo "$MSB_DEBIAN_MIRROR"
    return
  fi
  # deb822 *.sources first (URIs: ...), then one-line *.list; skip -security.
  uri=$(
    {
      awk 'tolower($1) == "uris:" { for (i = 2; i <= NF; i++) print $i }' \
        /etc/apt/sources.list.d/*.sources 2>/dev/null || true
      awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^https?:\/\//) { print $i; break } }' \
        /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true
    } | grep -E '^https?://' | grep -v -- '-security' | grep -E '/debian/?$' | head -n 1
  ) || true
  echo "${uri:-http://deb.debian.org/debian}"
}

# debootstrap a minimal Debian with packages $3 (comma-separated) into $1 from mirror $2, check
# it with the command $4..., and shrink it.
make_debian_rootfs() {
  local root=$1 mirror=$2 include=$3
  shift 3
  debootstrap --variant=minbase --include="$include" "$DEBIAN_SUITE" "$root" "$mirror"
  chroot "$root" groupadd -g 1000 sandbox
  chroot "$root" useradd -m -u 1000 -g 1000 -s /bin/bash sandbox
  chroot "$root" "$@"
  # Shrink: caches, docs, locales, logs; device nodes come from the runtime.
  rm -rf "${root:?}"/var/cache/apt/* "${root:?}"/var/lib/apt/lists/* \
    "${root:?}"/usr/share/doc/* "${root:?}"/usr/share/man/* "${root:?}"/usr/share/info/* \
    "${root:?}"/usr/share/locale/* "${root:?}"/usr/share/lintian "${root:?}"/usr/share/common-licenses \
    "${root:?}"/var/cache/debconf/*-old "${root:?}"/var/lib/dpkg/*-old \
    "${root:?}"/var/log/* "${root:?}"/dev/* "${root:?}"/run/* "${root:?}"/tmp/* "${root:?}"/root/.cache
  : >"$root/etc/machine-id"
  chmod 1777 "$root/tmp"
}

# ------------------------------------------------------------------------------
# OCI layout helpers (umoci)
# ------------------------------------------------------------------------------

# new_image LAYOUT BUNDLE: empty image LAYOUT:latest, unpacked at BUNDLE.
new_image() {
  umoci init --layout "$1"
  umoci new --image "$1:latest"
  umoci unpack --image "$1:latest" "$2" >/dev/null
}

# set_config LAYOUT:TAG CMD...
set_config() {
  local image=$1 c
  shift
  local args=(--image "$image" --clear=config.cmd --clear=config.env
    --config.env "$PATH_ENV" --config.workingdir / --os linux
    --architecture "$(dpkg --print-architecture)" --author microsandbox-tests)
  for c in "$@"; do args+=(--config.cmd "$c"); done
  umoci config "${args[@]}"
}

# write_blob LAYOUT FILE -> prints "sha256:<hex> <size>" after storing FILE as a blob.
write_blob() {
  local d
  d=$(sha <"$2")
  mv "$2" "$1/blobs/sha256/$d"
  echo "sha256:$d $(stat -c %s "$1/blobs/sha256/$d")"
}

# append_layer LAYOUT TAG LAYER.tar COMMENT: adds a hand-made layer to LAYOUT:TAG
# (umoci 0.4.7's `insert` writes truncated tar streams, and repack never emits
# opaque whiteouts, so the opaque layer is built with GNU tar).
append_layer() {
  local layout=$1 tag=$2 tarball=$3 comment=$4
  local diff_id ldig lsize mdig cdig cfg man newc newcs md ms
  diff_id=sha256:$(sha <"$tarball")
  gzip -n -9 "$tarball"
  read -r ldig lsize < <(write_blob "$layout" "$tarball.gz")
  mdig=$(jq -r --arg t "$tag" \
    '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $t) | .digest' \
    "$layout/index.json")
  [[ -n $mdig ]] || die "tag $tag not found in $layout"
  man=$layout/blobs/sha256/${mdig#sha256:}
  cdig=$(jq -r .config.digest "$man")
  cfg=$WORK/config.json
  jq -c --arg d "$diff_id" --arg c "$comment" \
    '.rootfs.diff_ids += [$d] | .history += [{created: (now | todate), created_by: "scripts/test-images.sh", comment: $c}]' \
    "$layout/blobs/sha256/${cdig#sha256:}" >"$cfg"
  read -r newc newcs < <(write_blob "$layout" "$cfg")
  jq -c --arg cd "$newc" --argjson cs "$newcs" --arg ld "$ldig" --argjson ls "$lsize" \
    '.config.digest = $cd | .config.size = $cs
     | .layers += [{mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: $ld, size: $ls}]' \
    "$man" >"$WORK/manifest.json"
  read -r md ms < <(write_blob "$layout" "$WORK/manifest.json")
  jq -c --arg t "$tag" --arg md "$md" --argjson ms "$ms" \
    '(.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $t)) |= (.digest = $md | .size = $ms)' \
    "$layout/index.json" >"$WORK/index.json"
  mv "$WORK/index.json" "$layout/index.json"
}

# Every layer blob must be a complete tar stream (guards against umoci bugs).
check_layers() {
  local layout=$1 tag=$2 mdig l
  mdig=$(jq -r --arg t "$tag" \
    '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $t) | .digest' \
    "$layout/index.json")
  for l in $(jq -r '.layers[].digest' "$layout/blobs/sha256/${mdig#sha256:}"); do
    tar -tzf "$layout/blobs/sha256/${l#sha256:}" >/dev/null ||
      die "$layout:$tag: layer $l is not a valid tar.gz"
  done
}

# push LAYOUT TAG REPO: pushes LAYOUT:TAG to $REGISTRY/REPO:TAG, records digest.
push() {
  local layout=$1 tag=$2 repo=$3
  check_layers "$layout" "$tag"
  skopeo copy --quiet --insecure-policy --dest-tls-verify=false \
    --digestfile "$WORK/digest" \
    "oci:$layout:$tag" "docker://$REGISTRY/$repo:$tag"
  echo "$repo:$tag $(<"$WORK/digest")" >>"$WORK/stamp"
  log "pushed $REGISTRY/$repo:$tag ($(<"$WORK/digest"))"
}

served_digest() { # REPO TAG
  curl -fsSI --noproxy '*' -m 10 \
    -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    -H 'Accept: application/vnd.oci.image.index.v1+json' \
    "http://$REGISTRY/v2/$1/manifests/$2" 2>/dev/null |
    tr -d '\r' | awk 'tolower($1) == "docker-content-digest:" { print $2 }'
}

# up_to_date NAME RECIPE: stamp has RECIPE and registry serves every recorded digest.
up_to_date() {
  local stamp=$IMGCACHE/stamps/$1.stamp ref digest
  [[ ${MSB_REBUILD_IMAGES:-0} == 1 ]] && return 1
  [[ -f $stamp ]] || return 1
  [[ $(head -n 1 "$stamp") == "recipe $2" ]] || return 1
  while read -r ref digest; do
    [[ $ref == recipe ]] && continue
    [[ $(served_digest "${ref%:*}" "${ref##*:}") == "$digest" ]] || return 1
  done <"$stamp"
}

# build NAME: runs build_NAME unless up to date, then writes the stamp.
build() {
  local name=$1 recipe start
  recipe=$(recipe_"$name")
  if up_to_date "$name" "$recipe"; then
    log "$name: up to date (registry serves the stamped digests), skipping"
    return 0
  fi
  start=$SECONDS
  log "$name: building"
  echo "recipe $recipe" >"$WORK/stamp"
  remove_tree "${WORK:?}/$name"
  mkdir -p "$WORK/$name"
  "build_$name" "$WORK/$name"
  mv "$WORK/stamp" "$IMGCACHE/stamps/$name.stamp"
  remove_tree "${WORK:?}/$name"
  log "$name: done in $((SECONDS - start))s"
}

# Recipe of an image: every function in this script + the tools' versions.
common_recipe() {
  { declare -f; echo "$DEBIAN_SUITE $PY_INCLUDE $PATH_ENV"
    pkgver busybox-static; pkgver umoci; pkgver skopeo; } | sha
}

# ------------------------------------------------------------------------------
# images
# ------------------------------------------------------------------------------

recipe_busybox() { echo "busybox $(common_recipe)" | sha; }
build_busybox() {
  local d=$1
  new_image "$d/oci" "$d/bundle"
  make_busybox_rootfs "$d/bundle/rootfs"
  umoci repack --image "$d/oci:latest" --history.comment "busybox-static rootfs" "$d/bundle"
  set_config "$d/oci:latest" /bin/sh
  push "$d/oci" latest library/busybox
}

recipe_layered() { echo "layered $(common_recipe)" | sha; }
build_layered() {
  local d=$1 r=$1/bundle/rootfs
  new_image "$d/oci" "$d/bundle"
  # layer 1: busybox rootfs + files that later layers remove/mask
  make_busybox_rootfs "$r"
  echo "this file is deleted by layer 2" >"$r/etc/removed-me"
  mkdir -p "$r/opt/opaque-dir/old-subdir"
  echo "hidden by the opaque layer of layered:opaque" >"$r/opt/opaque-dir/old-file"
  echo "hidden by the opaque layer of layered:opaque" >"$r/opt/opaque-dir/old-subdir/old-nested"
  umoci repack --refresh-bundle --image "$d/oci:latest" --history.comment "layer 1: busybox + /etc/removed-me" "$d/bundle"
  # layer 2: delete /etc/removed-me (-> etc/.wh.removed-me) and add a file
  rm "$r/etc/removed-me"
  echo "added by layer 2" >"$r/etc/added-file"
  umoci repack --image "$d/oci:latest" --history.comment "layer 2: rm /etc/removed-me, add /etc/added-file" "$d/bundle"
  set_config "$d/oci:latest" /bin/sh
  push "$d/oci" latest library/layered

  # layered:opaque = layered:latest + layer 3 with an opaque /opt/opaque-dir
  local l3=$d/layer3
  mkdir -p "$l3/opt/opaque-dir"
  : >"$l3/opt/opaque-dir/.wh..wh..opq"
  echo "added by the opaque layer" >"$l3/opt/opaque-dir/new-file"
  chmod 0755 "$l3/opt" "$l3/opt/opaque-dir"
  tar --sort=name --numeric-owner --owner=0 --group=0 --mtime=@0 --format=ustar \
    -C "$l3" -cf "$d/layer3.tar" opt
  umoci tag --image "$d/oci:latest" opaque
  append_layer "$d/oci" opaque "$d/layer3.tar" "layer 3: opaque /opt/opaque-dir + new-file"
  push "$d/oci" opaque library/layered
}

# debian_image NAME INCLUDE CMD CHECK...: a Debian minbase image with INCLUDE, pushed as
# library/NAME:latest with config command CMD; its rootfs is cached as a tarball keyed by its
# recipe (CHECK runs in the new rootfs).
debian_rootfs_key() { # INCLUDE CHECK...
  { declare -f make_debian_rootfs; echo "$DEBIAN_SUITE $*"; pkgver debootstrap; } | sha | cut -c1-16
}
build_debian_image() {
  local d=$1 name=$2 include=$3 cmd=$4 key tarball mirror start
  shift 4
  key=$(debian_rootfs_key "$include" "$@")
  tarball=$IMGCACHE/$name-rootfs-$DEBIAN_SUITE-$key.tar.gz
  if [[ -f $tarball ]]; then
    log "$name: using cached rootfs $tarball"
  else
    mirror=$(debian_mirror)
    start=$SECONDS
    log "$name: debootstrap $DEBIAN_SUITE (+$include) from $mirror; this takes a few minutes"
    make_debian_rootfs "$d/debootstrap" "$mirror" "$include" "$@" >"$d/debootstrap.log" 2>&1 || {
      tail -n 30 "$d/debootstrap.log" >&2
      die "debootstrap failed (log above)"
    }
    tar --numeric-owner -C "$d/debootstrap" -czf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    find "$IMGCACHE" -maxdepth 1 -name "$name-rootfs-*.tar.gz" ! -path "$tarball" -delete
    remove_tree "$d/debootstrap"
    log "$name: rootfs built in $((SECONDS - start))s, cached as $tarball ($(du -h "$tarball" | cut -f1))"
  fi
  new_image "$d/oci" "$d/bundle"
  tar --numeric-owner -xpzf "$tarball" -C "$d/bundle/rootfs"
  umoci repack --image "$d/oci:latest" --history.comment "debian $DEBIAN_SUITE minbase + $include" "$d/bundle"
  set_config "$d/oci:latest" "$cmd"
  push "$d/oci" latest "library/$name"
  # The upstream microsandbox names (its docs and MCP examples use microsandbox/python and
  # microsandbox/node): the same image.
  push "$d/oci" latest "microsandbox/$name"
}

PY_CHECK=(python3 -c 'import sys; print("python", sys.version.split()[0])')
recipe_python() { echo "python+alias $(debian_rootfs_key "$PY_INCLUDE" "${PY_CHECK[@]}") $(common_recipe)" | sha; }
build_python() { build_debian_image "$1" python "$PY_INCLUDE" python3 "${PY_CHECK[@]}"; }

NODE_CHECK=(node -e 'console.log("node", process.version)')
recipe_node() { echo "node+alias $(debian_rootfs_key "$NODE_INCLUDE" "${NODE_CHECK[@]}") $(common_recipe)" | sha; }
build_node() { build_debian_image "$1" node "$NODE_INCLUDE" node "${NODE_CHECK[@]}"; }

# ------------------------------------------------------------------------------

if ! curl -fsS --noproxy '*' -m 2 -o /dev/null "http://$REGISTRY/v2/"; then
  log "registry not running, starting it"
  "$SCRIPT_DIR/test-registry.sh" start
fi

start_all=$SECONDS
for image in busybox layered python node; do
  build "$image"
done

log "registry catalog: $(curl -fsS --noproxy '*' -m 10 "http://$REGISTRY/v2/_catalog")"
for f in "$IMGCACHE"/stamps/*.stamp; do
  while read -r ref digest; do
    [[ $ref == recipe ]] || log "  $REGISTRY/$ref  $digest"
  done <"$f"
done
log "all images ready in $((SECONDS - start_all))s"
