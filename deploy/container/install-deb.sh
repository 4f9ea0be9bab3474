#!/bin/sh
# Install the mailroom package into the container image. The Dockerfile runs
# it as root, with DIR holding exactly one mailroom_*.deb (and this script),
# and removes DIR afterwards.
#
# usage: install-deb.sh DIR
#
#  - apt installs the package with its Depends (the shared libraries
#    dpkg-shlibdeps found, and adduser), without Recommends, plus
#    ca-certificates (the trust store for `:ssl: true`; it brings openssl,
#    whose /usr/lib/ssl/cert.pem is where OpenSSL looks for it) and procps
#    (pkill for the preStop hook of GitLab's Helm chart, pgrep for
#    /scripts/healthcheck);
#  - the package's postinst creates the system user mailroom; it is
#    renumbered to uid 1000, gid 1000 (the runAsUser and fsGroup of GitLab's
#    chart), and the files it owned follow;
#  - /usr/bin/mail_room -> mailroom, the chart's command;
#  - the mount points /var/opt/gitlab (the configuration) and
#    /etc/gitlab/mailroom (the secrets the configuration reads with ERB);
#  - apt's lists, caches and logs are removed.
set -eu

IMAGE_UID=1000
IMAGE_GID=1000

dir="${1:?usage: install-deb.sh DIR}"
set -- "$dir"/mailroom_*.deb
if [ "$#" -ne 1 ] || [ ! -f "$1" ]; then
  echo "install-deb: $dir must hold exactly one mailroom_*.deb; it holds: $*" >&2
  exit 1
fi
deb="$1"
echo "install-deb: installing $(basename "$deb")"

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "$deb" ca-certificates procps

# The service user, renumbered. uid/gid 1000 must be free (they are in
# Debian's images: the first user an administrator adds gets them).
old_uid="$(id -u mailroom)"
old_gid="$(id -g mailroom)"
if [ "$old_gid" != "$IMAGE_GID" ]; then
  if getent group "$IMAGE_GID" >/dev/null; then
    echo "install-deb: gid $IMAGE_GID is taken in the base image: $(getent group "$IMAGE_GID")" >&2
    exit 1
  fi
  groupmod -g "$IMAGE_GID" mailroom
  find / -xdev -gid "$old_gid" -exec chgrp -h "$IMAGE_GID" {} +
fi
if [ "$old_uid" != "$IMAGE_UID" ]; then
  if getent passwd "$IMAGE_UID" >/dev/null; then
    echo "install-deb: uid $IMAGE_UID is taken in the base image: $(getent passwd "$IMAGE_UID")" >&2
    exit 1
  fi
  usermod -u "$IMAGE_UID" mailroom
  find / -xdev -uid "$old_uid" -exec chown -h "$IMAGE_UID" {} +
fi
[ "$(id -u mailroom):$(id -g mailroom)" = "$IMAGE_UID:$IMAGE_GID" ] || {
  echo "install-deb: mailroom is $(id mailroom), expected $IMAGE_UID:$IMAGE_GID" >&2
  exit 1
}

[ -e /usr/bin/mail_room ] || ln -s mailroom /usr/bin/mail_room
install -d -m 0755 /var/opt/gitlab /etc/gitlab /etc/gitlab/mailroom

apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/debconf/*-old /var/lib/dpkg/*-old \
       /var/log/apt /var/log/dpkg.log /var/log/alternatives.log

/usr/bin/mail_room --version
