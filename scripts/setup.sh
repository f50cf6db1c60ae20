#!/usr/bin/env bash
# Idempotent host setup for microsandbox development and CI (Debian/Ubuntu).
#
#   1. installs the Debian packages the test suite needs (only the missing ones);
#   2. stops a distro-started docker-registry service (we run our own, see
#      scripts/test-registry.sh, bound to 127.0.0.1 only);
#   3. works around crun's "cgroups in hybrid mode not supported" error on
#      cgroup v1 hybrid hosts, then proves crun works by running a tiny
#      busybox container.
#
# Safe to run repeatedly; a no-op run takes a second or two. Must run as root
# (or with passwordless sudo).
set -euo pipefail

PACKAGES=(
  crun docker-registry skopeo umoci debootstrap busybox-static jq iproute2 nftables
  libssl-dev pkg-config python3-venv curl ca-certificates
  containernetworking-plugins libseccomp-dev
)

log() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || die "must run as root (or have sudo)"
  SUDO=(sudo)
fi
as_root() { "${SUDO[@]}" "$@"; }

# --- 1. packages --------------------------------------------------------------
is_installed() {
  [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]
}

missing=()
for p in "${PACKAGES[@]}"; do
  is_installed "$p" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing missing packages: ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  log "all ${#PACKAGES[@]} packages already installed"
fi

# --- 2. distro registry service -------------------------------------------------
# The docker-registry package ships a service listening on *:5000. We run our
# own loopback-only instance instead, so make sure the distro one is stopped.
if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
  if systemctl is-active --quiet docker-registry 2>/dev/null ||
     systemctl is-enabled --quiet docker-registry 2>/dev/null; then
    log "stopping and disabling the distro docker-registry service (we run our own on 127.0.0.1:5000)"
    as_root systemctl disable --now docker-registry || true
  fi
fi

# --- 3. cgroups -----------------------------------------------------------------
fstype() { stat -f -c %T "$1" 2>/dev/null || echo none; }

# Is controller $1 bound to some mounted cgroup v1 hierarchy?
v1_mounted() {
  awk -v c="$1" '$3 == "cgroup" {
      n = split($4, o, ","); for (i = 1; i <= n; i++) if (o[i] == c) found = 1
    } END { exit !found }' /proc/mounts
}

cg_root=/sys/fs/cgroup
case "$(fstype "$cg_root")" in
  cgroup2fs)
    log "cgroup v2 (unified) host: no cgroup fix needed"
    ;;
  tmpfs)
    if [[ $(fstype "$cg_root/unified") == cgroup2fs ]]; then
      # Hybrid mode. crun 1.8 refuses hybrid mode while the v2 mount still has
      # controllers attached; binding each of them to a v1 hierarchy detaches
      # them from v2.
      v2_ctrls=()
      read -r -a v2_ctrls <"$cg_root/unified/cgroup.controllers" || true
      if ((${#v2_ctrls[@]} == 0)); then
        log "cgroup v1 hybrid host: no controllers on the v2 mount, nothing to fix"
      fi
      for c in "${v2_ctrls[@]}"; do
        if v1_mounted "$c"; then
          log "cgroup v1 hierarchy for '$c' already mounted"
        else
          log "cgroup v1 hybrid host: mounting v1 hierarchy for '$c' at $cg_root/$c"
          as_root mkdir -p "$cg_root/$c"
          as_root mount -t cgroup -o "$c" cgroup "$cg_root/$c" ||
            die "could not mount cgroup v1 '$c' hierarchy"
        fi
      done
    else
      log "cgroup v1 (legacy) host: no cgroup fix needed"
    fi
    ;;
  *)
    log "WARNING: unexpected filesystem at $cg_root ($(fstype "$cg_root")); skipping cgroup fix"
    ;;
esac

# --- 4. smoke test: run a busybox container with crun ----------------------------
bundle=$(mktemp -d "${TMPDIR:-/tmp}/msb-crun-check.XXXXXX")
trap 'rm -rf "$bundle"' EXIT
mkdir -p "$bundle/rootfs/bin"
cp /bin/busybox "$bundle/rootfs/bin/busybox"
ln -s busybox "$bundle/rootfs/bin/sh"
(cd "$bundle" && crun spec)
jq '.process.terminal = false | .process.args = ["/bin/sh", "-c", "echo hi"]' \
  "$bundle/config.json" >"$bundle/config.json.new"
mv "$bundle/config.json.new" "$bundle/config.json"

name="msb-setup-check-$$"
if out=$(as_root timeout 60 crun run --bundle "$bundle" "$name" 2>&1) && [[ $out == hi ]]; then
  log "crun smoke test OK (busybox container printed 'hi')"
else
  as_root crun delete -f "$name" >/dev/null 2>&1 || true
  die "crun smoke test failed; output: ${out:-<none>}"
fi
log "host setup complete"
