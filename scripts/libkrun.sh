#!/usr/bin/env bash
# The microVM runtime's two shared libraries, pinned, checksummed and cached:
#
#   libkrun.so.1    built from the `libkrun` crate on crates.io (cargo build --release --locked
#                   of the published crate with its own Cargo.lock)
#   libkrunfw.so.5  the guest kernel bundle libkrun loads, from Debian's `libkrunfw5` package
#                   (the unstable suite: bookworm has none), fetched and verified by apt
#
# Both are checked against the sha256 pinned below before use; a changed upstream file fails
# loudly instead of being shipped. Result (idempotent: an up-to-date cache returns at once):
#
#   ${MSB_CACHE:-~/.cache/microsandbox}/libkrun/<LIBKRUN_VERSION>+<LIBKRUNFW_VERSION>/lib/
#       libkrun.so.<version>, libkrun.so.1 -> ..., libkrunfw.so.<version>, libkrunfw.so.5 -> ...
#
# Usage: scripts/libkrun.sh [--print-lib-dir] [--out DIR]
#   --print-lib-dir  print only the lib directory on stdout (logs go to stderr)
#   --out DIR        also copy the libraries (and their soname links) into DIR
# Needs: cargo + a C compiler (libkrun's init is C), apt-get, sha256sum, flock.
# First run: about 5 minutes on 2 cores (the libkrun build); later runs: instant.
set -euo pipefail

LIBKRUN_VERSION=1.19.7
LIBKRUN_CRATE_SHA256=1610d0669ba96a8de6aee2b3ca1e7436933c77836aca6a2920930907046f4aaa
LIBKRUNFW_VERSION=5.5.0
LIBKRUNFW_DEB_VERSION=5.5.0+ds-1
LIBKRUNFW_DEB_SHA256=20c37f213b618690422dd6c16e7c0a605e568c1e89447e2c7e9e6e44563f1fde
LIBKRUNFW_SUITE=unstable

PRINT=0
OUT=
while [[ $# -gt 0 ]]; do
  case $1 in
    --print-lib-dir) PRINT=1; shift ;;
    --out) OUT=${2:?--out needs a directory}; shift 2 ;;
    --out=*) OUT=${1#*=}; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "[libkrun] unknown argument: $1" >&2; exit 2 ;;
  esac
done

log() { printf '[libkrun] %s\n' "$*" >&2; }
die() { printf '[libkrun] ERROR: %s\n' "$*" >&2; exit 1; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${MSB_CACHE:-$HOME/.cache/microsandbox}/libkrun
DIR=$CACHE/$LIBKRUN_VERSION+$LIBKRUNFW_VERSION
LIB=$DIR/lib
mkdir -p "$CACHE"

up_to_date() {
  [[ -f $LIB/libkrun.so.$LIBKRUN_VERSION && -f $LIB/libkrunfw.so.$LIBKRUNFW_VERSION &&
    -L $LIB/libkrun.so.1 && -L $LIB/libkrunfw.so.5 && -f $DIR/sha256sums ]] &&
    (cd "$LIB" && sha256sum --quiet -c "$DIR/sha256sums" >/dev/null 2>&1)
}

finish() {
  if [[ -n $OUT ]]; then
    mkdir -p "$OUT"
    cp -a "$LIB"/. "$OUT"/
  fi
  if [[ $PRINT == 1 ]]; then echo "$LIB"; fi
  exit 0
}

up_to_date && finish

exec 9>"$CACHE/lock"
flock 9 # one build at a time
up_to_date && finish
for tool in cargo apt-get sha256sum cc; do
  command -v "$tool" >/dev/null || die "$tool not found"
done
WORK=$(mktemp -d "$CACHE/work.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/lib"

# ---- libkrun: the crate, fetched by cargo (index checksum), then our pin -----------------
log "libkrun $LIBKRUN_VERSION: fetching the crate"
mkdir -p "$WORK/fetch/src"
cat >"$WORK/fetch/Cargo.toml" <<EOF
[package]
name = "msb-libkrun-fetch"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
libkrun = "=$LIBKRUN_VERSION"
EOF
: >"$WORK/fetch/src/lib.rs"
cargo fetch -q --manifest-path "$WORK/fetch/Cargo.toml" >&2 || die "cargo fetch libkrun@$LIBKRUN_VERSION failed"
CARGO_HOME=${CARGO_HOME:-$HOME/.cargo}
crate=$(find "$CARGO_HOME/registry/cache" -name "libkrun-$LIBKRUN_VERSION.crate" | head -n 1)
[[ -f $crate ]] || die "cargo fetched no libkrun-$LIBKRUN_VERSION.crate under $CARGO_HOME/registry/cache"
echo "$LIBKRUN_CRATE_SHA256  $crate" | sha256sum --quiet -c - ||
  die "$crate does not have the pinned sha256 $LIBKRUN_CRATE_SHA256"
tar -xzf "$crate" -C "$WORK"
src=$WORK/libkrun-$LIBKRUN_VERSION
log "libkrun $LIBKRUN_VERSION: cargo build --release --locked (about 5 minutes the first time)"
start=$SECONDS
# Its own target dir in the cache: a rebuild after a wiped lib/ is incremental.
CARGO_TARGET_DIR=$CACHE/target-$LIBKRUN_VERSION cargo build -q --release --locked \
  --manifest-path "$src/Cargo.toml" >&2 || die "building libkrun $LIBKRUN_VERSION failed"
install -m 0644 "$CACHE/target-$LIBKRUN_VERSION/release/libkrun.so" "$WORK/lib/libkrun.so.$LIBKRUN_VERSION"
ln -s "libkrun.so.$LIBKRUN_VERSION" "$WORK/lib/libkrun.so.1"
log "libkrun $LIBKRUN_VERSION: built in $((SECONDS - start))s"

# ---- libkrunfw: Debian's package, through apt (signed Release), then our pin -------------
# shellcheck source=images/lib.sh
LOG_TAG=libkrun
. "$ROOT/images/lib.sh"
# lib.sh logs to stdout; ours goes to stderr (stdout is the lib dir with --print-lib-dir).
log() { printf '[libkrun] %s\n' "$*" >&2; }
die() { printf '[libkrun] ERROR: %s\n' "$*" >&2; exit 1; }
log "libkrunfw $LIBKRUNFW_DEB_VERSION: apt-get download libkrunfw5 from $LIBKRUNFW_SUITE"
deb=$(apt_download "$LIBKRUNFW_SUITE" libkrunfw5 "$LIBKRUNFW_DEB_VERSION" "$LIBKRUNFW_DEB_SHA256" "$WORK")
dpkg-deb -x "$deb" "$WORK/deb"
install -m 0644 "$WORK/deb/usr/lib/x86_64-linux-gnu/libkrunfw.so.$LIBKRUNFW_VERSION" "$WORK/lib/"
ln -s "libkrunfw.so.$LIBKRUNFW_VERSION" "$WORK/lib/libkrunfw.so.5"

# ---- publish ------------------------------------------------------------------------------
(cd "$WORK/lib" && sha256sum "libkrun.so.$LIBKRUN_VERSION" "libkrunfw.so.$LIBKRUNFW_VERSION") >"$WORK/sha256sums"
rm -rf "$DIR"
mkdir -p "$DIR"
mv "$WORK/lib" "$LIB"
mv "$WORK/sha256sums" "$DIR/sha256sums"
log "ready: $LIB"
finish
