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

# apt_download SUITE PACKAGE VERSION SHA256 DIR: download PACKAGE=VERSION of Debian SUITE into
# DIR with apt (signed Release, hashed indexes) and check the .deb against the pinned SHA256;
# prints the .deb's path. Uses a private apt state under ${MSB_CACHE:-~/.cache/microsandbox}/apt
# (the host's sources and preferences are left alone). A version gone from the suite fails
# with a message saying which pin to update.
apt_download() {
  local suite=$1 pkg=$2 version=$3 sum=$4 dir=$5 deb
  local apt=${MSB_CACHE:-$HOME/.cache/microsandbox}/apt/$suite
  mkdir -p "$apt/lists/partial" "$apt/archives/partial" "$apt/parts" "$dir"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $(debian_mirror) $suite main" \
    >"$apt/sources.list"
  local opts=(
    -o "Dir::Etc::sourcelist=$apt/sources.list" -o "Dir::Etc::sourceparts=$apt/parts"
    -o "Dir::State::lists=$apt/lists" -o "Dir::Cache=$apt" -o "Dir::Cache::archives=$apt/archives"
    -o "Dir::Etc::preferencesparts=$apt/parts" -o Dir::State::status=/dev/null
    -o APT::Sandbox::User=root -q
  )
  (
    exec 8>"$apt.lock"
    flock 8
    if ! apt-get "${opts[@]}" download --print-uris "$pkg=$version" >/dev/null 2>&1; then
      apt-get "${opts[@]}" update >&2 || die "apt-get update of Debian $suite failed"
    fi
    cd "$dir" && apt-get "${opts[@]}" download "$pkg=$version" >&2
  ) || die "apt-get download $pkg=$version from Debian $suite failed (above): if the suite no longer has that version, pin the one it has now"
  deb=$(ls "$dir/${pkg}_"*.deb)
  echo "$sum  $deb" | sha256sum --quiet -c - >&2 || die "$deb does not have the pinned sha256 $sum"
  echo "$deb"
}
