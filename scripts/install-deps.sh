#!/usr/bin/env bash
# Install everything mailroom needs to build, test and run its demo on Debian 12.
# Idempotent: packages already present are skipped by apt. Run as root (or via sudo).
#
# Boost comes from the versioned libboost1.81-dev packages: Debian's unversioned
# Boost dev packages are Boost 1.74 and would remove the 1.81 ones.
set -euo pipefail

build_pkgs=(
  cmake g++ make pkg-config ccache clang-format
  libssl-dev
  libboost1.81-dev libboost-json1.81-dev libboost-url1.81-dev
  libyaml-cpp-dev nlohmann-json3-dev libfmt-dev libcli11-dev
  libcurl4-openssl-dev libicu-dev libgmime-3.0-dev libpq-dev
  libgtest-dev libgmock-dev libbenchmark-dev librapidcheck-dev
  clang-14 libclang-rt-14-dev
)
server_pkgs=(
  dovecot-imapd dovecot-lmtpd openssl
  redis-server redis-sentinel redis-tools
  postgresql-15 postgresql-client-15
  ruby ruby-sidekiq
  python3 python3-pytest python3-redis python3-yaml
  prometheus
)
# Packaging and deployment checks: the Debian package (dpkg-deb, lintian,
# systemd-analyze, a debootstrapped Debian 12 root to install it into) and
# the container image (podman with runc: crun cannot set its rlimits here).
# MAILROOM_DEPLOY_TOOLS=0 skips them (the demo needs none).
deploy_pkgs=(
  dpkg-dev lintian help2man debootstrap systemd
  podman runc
)
[ "${MAILROOM_DEPLOY_TOOLS:-1}" = 0 ] && deploy_pkgs=()

missing=()
for p in "${build_pkgs[@]}" "${server_pkgs[@]}" "${deploy_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
if ((${#missing[@]} == 0)); then
  echo "install-deps: all packages present"
else
  echo "install-deps: installing ${missing[*]}"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  echo "install-deps: done"
fi

# Cyrus IMAP and Courier-IMAP for the interop tests: unpacked next to Dovecot
# (their packages conflict with dovecot-imapd); idempotent, about 1 s when present.
# MAILROOM_INTEROP=0 skips them.
if [ "${MAILROOM_INTEROP:-1}" != 0 ]; then
  "$(dirname "${BASH_SOURCE[0]}")/../tests/servers/install-imap-servers.sh"
fi
