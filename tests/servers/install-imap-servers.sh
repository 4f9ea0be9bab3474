#!/usr/bin/env bash
# Install Cyrus IMAP 3.6 and Courier-IMAP 5.0 (Debian 12 packages) NEXT TO Dovecot.
# Idempotent; run as root (or it re-runs itself through sudo).
#
# Both servers' packages conflict with dovecot-imapd (they all provide
# imap-server), so `apt-get install` would remove Dovecot.  Instead:
#   * the runtime libraries they link against are apt-get installed (Debian 12
#     packages only; none of them conflicts with Dovecot);
#   * cyrus-common + cyrus-imapd and courier-base + courier-imap are
#     `apt-get download`ed and unpacked with `dpkg-deb -x` into
#       $MAILROOM_IMAP_SERVERS_ROOT/cyrus  and  .../courier
#     (default /opt/mailroom-imap-servers); their maintainer scripts never run,
#     so no system service is configured or started;
#   * courier-authlib and courier-authlib-userdb are installed (no daemon, no
#     conflict; the auth modules and makedatprog must be at their compiled-in
#     paths).  courier-authdaemon (whose postinst would start a system
#     authdaemond) is not needed: start-courier.sh runs authdaemond itself.
#   * sasl2-bin (saslpasswd2 for Cyrus's sasldb) is kept at the installed
#     libsasl2-2 version, so libsasl2-2 is not upgraded as a side effect.
#   * the system user cyrus (group mail) is created; courier-authlib's postinst
#     creates the user courier, which owns the Courier test maildirs.
# A marker file ($ROOT/installed.txt) records the unpacked package versions; when
# it matches and everything is in place the script does nothing (about 0.1 s).
#
#   usage: tests/servers/install-imap-servers.sh        (MAILROOM_IMAP_SERVERS_ROOT=...)
#   then:  tests/servers/start-cyrus.sh / start-courier.sh find the servers there.
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
  exec sudo MAILROOM_IMAP_SERVERS_ROOT="${MAILROOM_IMAP_SERVERS_ROOT:-}" "$0" "$@"
fi
ROOT="${MAILROOM_IMAP_SERVERS_ROOT:-/opt/mailroom-imap-servers}"
export DEBIAN_FRONTEND=noninteractive
MARKER_FORMAT=1

unpack_pkgs=(cyrus-common cyrus-imapd courier-base courier-imap)
# Runtime libraries of the unpacked binaries (the Depends of the four packages
# above, minus what only unused binaries need: libclamav12 for cyr_virusscan,
# libzephyr4 for notifyd) and the tools the start scripts use.
runtime_pkgs=(
  # Cyrus
  libxapian30 libical3 libicu72 libjansson4 libpq5 libsqlite3-0 libwrap0 libxml2
  libkrb5-3 libcom-err2 libldap-2.5-0 libpcre3 libssl3 zlib1g libstdc++6
  libsasl2-2 libsasl2-modules libsasl2-modules-db sasl2-bin
  # Courier
  courier-authlib courier-authlib-userdb libcourier-unicode4 libgamin0 gamin
  libidn12 libgdbm6 libgnutls30 libltdl7
  # start scripts: certificates, DH parameters, the servers' setup
  openssl perl
)

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
candidate() { apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2; exit}'; }
# "pkg=candidate-version ..." for all arguments, one apt-cache call (about 0.5 s)
candidates() {
  apt-cache policy "$@" 2>/dev/null | awk '/^[^ ].*:$/ {p = substr($1, 1, length($1) - 1)}
                                         /Candidate:/ {printf "%s=%s ", p, $2}'
}

apt_updated=""
apt_update() {
  [ -n "$apt_updated" ] && return 0
  echo "install-imap-servers: apt-get update" >&2
  apt-get update -qq
  apt_updated=1
}

# --- runtime packages ---------------------------------------------------------
missing=()
for p in $(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' "${runtime_pkgs[@]}" 2>/dev/null | awk '$1 != "ii" {print $2}'); do
  missing+=("$p")
done
for p in "${runtime_pkgs[@]}"; do  # never known to dpkg: not listed above
  dpkg-query -W "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  # sasl2-bin/libsasl2-modules pinned to the installed libsasl2-2 (the archive
  # keeps both the bookworm and the bookworm-security versions); if that version
  # is gone from the archive, let apt upgrade libsasl2-2 together with them.
  sasl_ver="$(dpkg-query -W -f='${Version}' libsasl2-2 2>/dev/null || true)"
  has_version() { apt-cache madison "$1" 2>/dev/null | awk -F'|' '{gsub(/ /, "", $2); print $2}' | grep -qxF "$2"; }
  c="$(candidate sasl2-bin)"; { [ -n "$c" ] && [ "$c" != "(none)" ]; } || apt_update
  req=()
  for p in "${missing[@]}"; do
    case "$p" in
      sasl2-bin|libsasl2-modules|libsasl2-modules-db)
        if [ -n "$sasl_ver" ] && ! has_version "$p" "$sasl_ver"; then apt_update; fi
        if [ -n "$sasl_ver" ] && has_version "$p" "$sasl_ver"; then
          req+=("$p=$sasl_ver")
        else
          req+=("$p" libsasl2-2)
        fi ;;
      *) req+=("$p") ;;
    esac
  done
  echo "install-imap-servers: installing ${req[*]}" >&2
  if ! apt-get install -y -qq --no-install-recommends --no-remove "${req[@]}" >/dev/null; then
    apt_update
    apt-get install -y -qq --no-install-recommends --no-remove "${req[@]}" >/dev/null
  fi
fi
installed dovecot-imapd || echo "install-imap-servers: note: dovecot-imapd is not installed (scripts/install-deps.sh installs it)" >&2

# --- users ----------------------------------------------------------------------
getent group mail >/dev/null || groupadd --system mail
if ! getent passwd cyrus >/dev/null; then
  # as Debian's cyrus-common would create it (adduser --system --ingroup mail)
  useradd --system --gid mail --home-dir /var/lib/cyrus --no-create-home \
    --shell /usr/sbin/nologin --comment "Cyrus Mailsystem User" cyrus
fi
if ! getent passwd courier >/dev/null; then
  # normally created by courier-authlib's postinst
  getent group courier >/dev/null || groupadd --system courier
  useradd --system --gid courier --home-dir /var/lib/courier --no-create-home \
    --shell /usr/sbin/nologin courier
fi
# Compiled-in paths of courier-authlib: start-courier.sh bind-mounts its own
# directories over these two (in a private mount namespace) or, without one,
# uses them directly.
mkdir -p /etc/courier /run/courier/authdaemon

# --- unpacked servers -----------------------------------------------------------
want="$(candidates "${unpack_pkgs[@]}")"
case " $want" in
  *"=(none) "*|*"= "*) apt_update; want="$(candidates "${unpack_pkgs[@]}")" ;;
esac
for p in "${unpack_pkgs[@]}"; do
  case " $want" in
    *" $p=(none) "*|*" $p= "*) echo "install-imap-servers: no candidate for $p" >&2; exit 1 ;;
    *" $p="*) ;;
    *) echo "install-imap-servers: no candidate for $p" >&2; exit 1 ;;
  esac
done
want="${want% }"
read -r -a vers <<<"$want"
want="format=$MARKER_FORMAT $want"
if [ -f "$ROOT/installed.txt" ] && [ "$(cat "$ROOT/installed.txt")" = "$want" ] \
   && [ -x "$ROOT/cyrus/usr/lib/cyrus/bin/master" ] && [ -x "$ROOT/courier/usr/bin/imapd" ]; then
  echo "install-imap-servers: present in $ROOT ($want)" >&2
  exit 0
fi

mkdir -p "$ROOT"
work="$(mktemp -d "$ROOT/.download.XXXXXX")"
trap 'rm -rf "$work"' EXIT
chmod 0755 "$work"
# apt drops privileges to _apt for downloads; it needs to write here
getent passwd _apt >/dev/null && chown _apt "$work"
dl() { (cd "$work" && apt-get download -qq "$@" >/dev/null); }
if ! dl "${vers[@]}"; then apt_update; dl "${vers[@]}"; fi

rm -rf "$work/cyrus" "$work/courier"
mkdir -p "$work/cyrus" "$work/courier"
for p in cyrus-common cyrus-imapd; do dpkg-deb -x "$work/${p}_"*.deb "$work/cyrus"; done
for p in courier-base courier-imap; do dpkg-deb -x "$work/${p}_"*.deb "$work/courier"; done

# every shared library the servers load must resolve
check_libs() {
  local out
  out="$(LD_LIBRARY_PATH="$1" ldd "${@:2}" 2>&1 | grep 'not found' | sort -u || true)"
  if [ -n "$out" ]; then
    echo "install-imap-servers: unresolved libraries:" >&2; echo "$out" >&2; exit 1
  fi
}
check_libs "$work/cyrus/usr/lib/x86_64-linux-gnu" \
  "$work/cyrus/usr/lib/cyrus/bin/"{master,imapd,idled,ctl_cyrusdb,lmtpd} "$work/cyrus/usr/lib/x86_64-linux-gnu/"libcyrus*.so.0
check_libs "" "$work/courier/usr/bin/imapd" "$work/courier/usr/lib/courier/courier/imaplogin" \
  "$work/courier/usr/sbin/couriertcpd" "$work/courier/usr/bin/couriertls" \
  /usr/lib/courier/courier-authlib/authdaemond /usr/lib/courier-authlib/libauthuserdb.so

rm -rf "$ROOT/cyrus" "$ROOT/courier"
mv "$work/cyrus" "$ROOT/cyrus"
mv "$work/courier" "$ROOT/courier"
chmod 0755 "$ROOT"
printf '%s\n' "$want" > "$ROOT/installed.txt"
echo "install-imap-servers: unpacked into $ROOT ($want)" >&2
