#!/usr/bin/env bash
# Make a minimal Debian 12 (bookworm) root file system in DIR, unless DIR holds
# one already: debootstrap --variant=minbase (about 200 MB, half a minute with a
# good network), then an /etc/apt/sources.list for bookworm, bookworm-updates
# and bookworm-security at deb.debian.org, so that apt works inside it after an
# `apt-get update`. Nothing else is installed or configured: the root serves as
# a package-test chroot and as a container base image.
#
# usage: scripts/debian-root.sh DIR
# env:   DEBIAN_MIRROR (http://deb.debian.org/debian),
#        DEBIAN_SECURITY_MIRROR (http://deb.debian.org/debian-security)
# Idempotent: a complete root (one that debootstrap finished) is left as it is,
# apart from sources.list, which is rewritten if it differs. A root left half
# made by an interrupted run (debootstrap removes its work directory DIR/debootstrap
# only when it succeeds) is removed and made again. Concurrent runs on the same
# DIR wait for each other (flock on DIR.lock). Run as root.
set -euo pipefail

die() { echo "debian-root: $*" >&2; exit 1; }

case "${1:-}" in
  -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  "") die "usage: scripts/debian-root.sh DIR" ;;
esac
[ $# -eq 1 ] || die "usage: scripts/debian-root.sh DIR"
DIR="$1"
SUITE=bookworm
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SECURITY="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
complete() {  # debootstrap finished in $DIR
  [ -f "$DIR/etc/debian_version" ] && [ -x "$DIR/usr/bin/apt-get" ] && [ ! -e "$DIR/debootstrap" ]
}

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot)"

# One run at a time per DIR (two test sessions sharing a cache, say).
mkdir -p "$(dirname "$DIR")"
exec 9>"$DIR.lock"
flock 9

if complete; then
  echo "debian-root: $DIR already holds a Debian $SUITE root ($(cat "$DIR/etc/debian_version"))"
else
  command -v debootstrap >/dev/null || die "debootstrap is missing (apt-get install debootstrap)"
  if [ -e "$DIR" ] && [ -n "$(ls -A "$DIR" 2>/dev/null)" ]; then
    # Only ever remove what an earlier run of this script left: a debootstrap
    # root that debootstrap did not finish. Never mounted file systems, never
    # anything else.
    if [ -d "$DIR/debootstrap" ] || [ -f "$DIR/etc/debian_version" ]; then
      if grep -q " $(realpath "$DIR")/" /proc/self/mounts; then
        die "$DIR is incomplete and has file systems mounted below it; unmount them first"
      fi
      echo "debian-root: $DIR holds an incomplete root (an interrupted run); making it again"
      rm -rf --one-file-system "$DIR"
    else
      die "$DIR exists, is not empty and is not a Debian root; not touching it"
    fi
  fi
  mkdir -p "$DIR"
  echo "debian-root: debootstrap --variant=minbase $SUITE $DIR $MIRROR"
  t0=$(date +%s)
  log="$(mktemp "${TMPDIR:-/tmp}/debian-root.XXXXXX.log")"
  debootstrap --variant=minbase "$SUITE" "$DIR" "$MIRROR" >"$log" 2>&1 || {
    tail -n 30 "$log" >&2
    die "debootstrap failed (whole log: $log)"
  }
  rm -f "$log"
  complete || die "debootstrap succeeded but $DIR does not look like a finished root"
  # The downloaded .debs are not needed (apt-get clean).
  find "$DIR/var/cache/apt/archives" -maxdepth 1 -name '*.deb' -delete
  echo "debian-root: made $DIR in $(( $(date +%s) - t0 )) s ($(du -sh --one-file-system "$DIR" | cut -f1))"
fi

SOURCES="deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY $SUITE-security main"
if [ "$(cat "$DIR/etc/apt/sources.list" 2>/dev/null)" != "$SOURCES" ]; then
  printf '%s\n' "$SOURCES" > "$DIR/etc/apt/sources.list"
  echo "debian-root: wrote $DIR/etc/apt/sources.list ($SUITE, $SUITE-updates, $SUITE-security)"
fi
