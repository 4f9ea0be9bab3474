#!/usr/bin/env bash
# Build the Debian package of mailroom from an already built binary: nothing is
# compiled here (CI builds once; the package reuses that build).
#
# usage: scripts/build-deb.sh [--build-dir DIR] [--out DIR]
#   --build-dir DIR  the build directory holding the mailroom binary (default build)
#   --out DIR        where mailroom_<version>_<arch>.deb is written (default DIR/deb)
#
# The package:
#   /usr/bin/mailroom                     DIR/mailroom, stripped (--strip-unneeded)
#   /lib/systemd/system/mailroom.service  packaging/mailroom.service (not enabled on install)
#   /etc/mailroom/mail_room.yml           packaging/mail_room.yml, a conffile (root:mailroom 0640)
#   /usr/share/man/man1/mailroom.1.gz     help2man from `mailroom --help` and the subcommands'
#   /usr/share/mailroom/                  the example config, deploy/prometheus/mailroom.rules.yml,
#                                         deploy/grafana/mailroom.json
#   /usr/share/doc/mailroom/              copyright, changelog.gz, README.Debian, README.md.gz,
#                                         configuration.md.gz, operations.md.gz
#   /usr/share/lintian/overrides/mailroom packaging/debian/lintian-overrides
#   DEBIAN/                               control (Depends from dpkg-shlibdeps, plus adduser),
#                                         conffiles, md5sums, postinst, prerm, postrm
# The version is the binary's (`mailroom --version`); packaging/debian/changelog must
# have an entry for it. The Maintainer comes from that changelog entry, the file
# dates from its timestamp (or $SOURCE_DATE_EPOCH), so the same binary gives the
# same package. Needs dpkg-dev, help2man and binutils (strip).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="build" OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) shift; BUILD="${1:?--build-dir needs a directory}" ;;
    --out) shift; OUT="${1:?--out needs a directory}" ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-deb: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$BUILD" in /*) ;; *) BUILD="$ROOT/$BUILD" ;; esac
[ -n "$OUT" ] || OUT="$BUILD/deb"
case "$OUT" in /*) ;; *) OUT="$PWD/$OUT" ;; esac

die() { echo "build-deb: $*" >&2; exit 1; }

BIN="$BUILD/mailroom"
PKGDIR="$ROOT/packaging"
[ -x "$BIN" ] || die "no mailroom binary at $BIN (build it first: cmake --build $BUILD)"
for tool in dpkg-deb dpkg-shlibdeps dpkg-parsechangelog strip help2man gzip md5sum; do
  command -v "$tool" >/dev/null || die "$tool is missing (apt-get install dpkg-dev help2man binutils)"
done

VERSION="$("$BIN" --version | awk 'NR == 1 { print $NF }')"
[[ "$VERSION" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "cannot read the version from '$BIN --version' (got '$VERSION')"
CMAKE_VERSION="$(sed -nE 's/^project\(mailroom VERSION ([0-9.]+).*/\1/p' "$ROOT/CMakeLists.txt")"
[ -z "$CMAKE_VERSION" ] || [ "$CMAKE_VERSION" = "$VERSION" ] ||
  echo "build-deb: warning: $BIN is version $VERSION, CMakeLists.txt says $CMAKE_VERSION (is the build stale?)" >&2
CHANGELOG="$PKGDIR/debian/changelog"
CL_VERSION="$(dpkg-parsechangelog -l "$CHANGELOG" -S Version)"
[ "$CL_VERSION" = "$VERSION" ] ||
  die "packaging/debian/changelog's latest entry is $CL_VERSION, the binary is $VERSION: add an entry for $VERSION"
MAINTAINER="$(dpkg-parsechangelog -l "$CHANGELOG" -S Maintainer)"
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(dpkg-parsechangelog -l "$CHANGELOG" -S Timestamp)}"
ARCH="$(dpkg --print-architecture)"
DEB="$OUT/mailroom_${VERSION}_${ARCH}.deb"

STAGE="$(mktemp -d "${TMPDIR:-/tmp}/mailroom-deb.XXXXXX")"
trap 'rm -rf "$STAGE"' EXIT
P="$STAGE/root"
umask 022
mkdir -p "$P/DEBIAN"

# -- files --------------------------------------------------------------------
install -d "$P/usr/bin"
# As dh_strip does for an executable.
strip --strip-unneeded --remove-section=.comment --remove-section=.note -o "$P/usr/bin/mailroom" "$BIN"
chmod 0755 "$P/usr/bin/mailroom"
"$P/usr/bin/mailroom" --version >/dev/null || die "the stripped binary does not run"

install -D -m 0644 "$PKGDIR/mailroom.service" "$P/lib/systemd/system/mailroom.service"
# 0644 in the archive; postinst makes it root:mailroom 0640 with dpkg-statoverride.
install -D -m 0644 "$PKGDIR/mail_room.yml" "$P/etc/mailroom/mail_room.yml"
install -D -m 0644 "$PKGDIR/mail_room.yml" "$P/usr/share/mailroom/mail_room.yml"
for extra in deploy/prometheus/mailroom.rules.yml deploy/grafana/mailroom.json; do
  [ -f "$ROOT/$extra" ] || die "$extra is missing (the package ships it in /usr/share/mailroom)"
  install -m 0644 "$ROOT/$extra" "$P/usr/share/mailroom/$(basename "$extra")"
done

DOC="$P/usr/share/doc/mailroom"
install -d "$DOC"
install -m 0644 "$PKGDIR/debian/copyright" "$DOC/copyright"
install -m 0644 "$PKGDIR/README.Debian" "$DOC/README.Debian"
# Native package: the Debian changelog is changelog.gz.
gzip -9nc "$CHANGELOG" > "$DOC/changelog.gz"
gzip -9nc "$ROOT/README.md" > "$DOC/README.md.gz"
for d in configuration operations; do
  gzip -9nc "$ROOT/docs/$d.md" > "$DOC/$d.md.gz"
done
if [ -s "$PKGDIR/debian/lintian-overrides" ]; then
  install -D -m 0644 "$PKGDIR/debian/lintian-overrides" "$P/usr/share/lintian/overrides/mailroom"
fi

# -- manual page: help2man, with every subcommand's --help as SUBCOMMANDS ------
roff_escape() {  # plain text -> roff (no-fill block)
  sed -e 's/\\/\\e/g' -e 's/-/\\-/g' -e "s/^\([.']\)/\\\\\&\1/"
}
H2M="$STAGE/mailroom.h2m"
{
  echo "[SUBCOMMANDS]"
  cat <<'EOF'
Each subcommand takes the configuration file with \fB\-c\fR \fIFILE\fR like the service,
and exits 0 when it succeeded, 1 on a failure and 2 on a usage error.
EOF
  for sub in $("$P/usr/bin/mailroom" --help | awk '/^Subcommands:/ { on = 1; next } on && /^  [a-z]/ { print $1; next } on { exit }'); do
    echo ".SS \"mailroom $sub\""
    echo ".nf"
    "$P/usr/bin/mailroom" "$sub" --help | roff_escape
    echo ".fi"
  done
  # --help's closing "Examples:" and "Signals:" lines are not an option list;
  # help2man would run them together into one paragraph.
  cat <<'EOF'
[=EXAMPLES]
.nf
mailroom \-c /etc/mailroom/mail_room.yml \-\-log\-exit\-as json
mailroom check \-c /etc/mailroom/mail_room.yml
mailroom status \-c /etc/mailroom/mail_room.yml
mailroom unseen \-c /etc/mailroom/mail_room.yml \-\-older\-than 2d
.fi
[SIGNALS]
SIGTERM and SIGINT stop taking new work: deliveries in flight finish and their
messages are flagged, each connection logs out, and mailroom exits 0.
Connections still busy after 25 seconds are closed; a second signal closes them
at once.
[EXIT STATUS]
.TP
.B 0
Stopped by SIGTERM or SIGINT (a subcommand: success).
.TP
.B 1
An invalid configuration (every problem is printed to standard error with its
file and line), a mailbox whose first login is rejected, or a health port that
cannot be bound (a subcommand: a failure).
.TP
.B 2
A usage error.
[FILES]
.TP
.I /etc/mailroom/mail_room.yml
The configuration of the mailroom service (mail_room's YAML, with ERB).
.TP
.I /lib/systemd/system/mailroom.service
The systemd unit; installed but not enabled.
.TP
.I /usr/share/mailroom/
The example configuration, Prometheus alerting rules and a Grafana dashboard.
.TP
.I /usr/share/doc/mailroom/README.md.gz
The full documentation, including the configuration reference.
[SEE ALSO]
.BR systemctl (1),
.BR journalctl (1)
EOF
} > "$H2M"
grep -q '^\.SS "mailroom check"' "$H2M" || die "could not list the subcommands from 'mailroom --help'"
help2man --no-info --section 1 \
  --name "watch IMAP mailboxes and deliver new mail to Sidekiq or a webhook" \
  --source "mailroom $VERSION" --manual "User Commands" \
  --include "$H2M" --output "$STAGE/mailroom.1" "$P/usr/bin/mailroom" ||
  die "help2man failed"
install -d "$P/usr/share/man/man1"
gzip -9nc "$STAGE/mailroom.1" > "$P/usr/share/man/man1/mailroom.1.gz"

# -- control ------------------------------------------------------------------
# dpkg-shlibdeps wants a debian/control naming the package, in its working directory.
mkdir -p "$STAGE/shlibdeps/debian"
printf 'Source: mailroom\n\nPackage: mailroom\nArchitecture: any\n' > "$STAGE/shlibdeps/debian/control"
SHLIBS="$(cd "$STAGE/shlibdeps" && dpkg-shlibdeps -O --warnings=7 -e"$P/usr/bin/mailroom")" ||
  die "dpkg-shlibdeps failed (the libraries mailroom links with must be installed)"
SHLIBS="${SHLIBS#shlibs:Depends=}"
[ -n "$SHLIBS" ] || die "dpkg-shlibdeps found no dependencies"
if grep -qE '(^|, )[^ ,]+-dev( |,|$)' <<<"$SHLIBS"; then
  die "dpkg-shlibdeps resolved to a -dev package: $SHLIBS"
fi
# postinst creates the service user with adduser.
DEPENDS="$SHLIBS, adduser"

install -m 0644 "$PKGDIR/debian/conffiles" "$P/DEBIAN/conffiles"
for s in postinst prerm postrm; do
  install -m 0755 "$PKGDIR/debian/$s" "$P/DEBIAN/$s"
done
while read -r f; do
  [ -f "$P$f" ] || die "conffile $f is not in the package"
done < "$P/DEBIAN/conffiles"
# md5sums of everything but DEBIAN/ and the conffiles (dpkg tracks those itself).
(cd "$P" && find . -type f ! -path './DEBIAN/*' ! -path './etc/*' -printf '%P\0' | LC_ALL=C sort -z |
   xargs -0 md5sum) > "$P/DEBIAN/md5sums"
chmod 0644 "$P/DEBIAN/md5sums"

# Installed-Size as dpkg-gencontrol counts it: KiB per file, rounded up; 1 per
# directory or link.
INSTALLED_SIZE="$(cd "$P" && find . ! -path './DEBIAN*' ! -path . -printf '%y %s\n' |
  awk '$1 == "f" { n += int(($2 + 1023) / 1024); next } { n += 1 } END { print n }')"

sed -e "s/@VERSION@/$VERSION/" -e "s/@ARCH@/$ARCH/" -e "s/@MAINTAINER@/$MAINTAINER/" \
    -e "s/@INSTALLED_SIZE@/$INSTALLED_SIZE/" -e "s/@DEPENDS@/$DEPENDS/" \
    "$PKGDIR/debian/control.in" > "$P/DEBIAN/control"
chmod 0644 "$P/DEBIAN/control"
! grep -q '@[A-Z_]*@' "$P/DEBIAN/control" || die "unfilled field in DEBIAN/control"

# -- archive ------------------------------------------------------------------
find "$P" -type d -exec chmod 0755 {} +
find "$P" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
mkdir -p "$OUT"
rm -f "$DEB"
dpkg-deb --root-owner-group -Zxz --build "$P" "$DEB" >/dev/null

echo "build-deb: $DEB"
echo "build-deb: $(stat -c %s "$DEB") bytes, Installed-Size $INSTALLED_SIZE KiB"
echo "build-deb: Depends: $DEPENDS"
