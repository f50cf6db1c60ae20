# shellcheck shell=bash
# Helpers for scripts that build OCI images from Debian packages (sourced, not run):
#   . "$ROOT/images/lib.sh"
# Same approach as scripts/test-images.sh (debootstrap + umoci + skopeo, cached by recipe hash).
# Set LOG_TAG before sourcing to change the log prefix.

LOG_TAG=${LOG_TAG:-images}
log() { printf '[%s] %s\n' "$LOG_TAG" "$*"; }
die() { printf '[%s] ERROR: %s\n' "$LOG_TAG" "$*" >&2; exit 1; }

# sha256 of stdin, hex only.
sha() { sha256sum | cut -c1-64; }

# Installed version of a Debian package ("unknown" if absent).
pkgver() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo unknown; }

# remove_tree DIR: unmount anything below DIR (debootstrap mounts proc/sys in its target),
# then delete it without crossing into other filesystems.
remove_tree() {
  local m
  awk -v w="$1/" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done
  rm -rf --one-file-system "$1"
}

# The Debian mirror apt is configured with (MSB_DEBIAN_MIRROR overrides): deb822 *.sources
# first (URIs: ...), then one-line *.list entries; -security suites are skipped.
debian_mirror() {
  local uri
  if [[ -n ${MSB_DEBIAN_MIRROR:-} ]]; then
    echo "$MSB_DEBIAN_MIRROR"
    return
  fi
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

# is_loopback HOST[:PORT]: true for 127.0.0.0/8, localhost and [::1].
is_loopback() {
  local host=${1%:*}
  [[ $1 == \[::1\]* || $host == localhost || $host == 127.* ]]
}
