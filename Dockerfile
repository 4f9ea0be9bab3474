# syntax=docker/dockerfile:1
#
# The mailroom container image: Debian 12 slim, the mailroom Debian package
# and the libraries its Depends name, nothing else (no compiler, no -dev
# package). It is a drop-in for the image of GitLab's Helm chart
# (registry.gitlab.com/gitlab-org/build/cng/gitlab-mailroom):
#
#   default command  /usr/bin/mail_room -c /var/opt/gitlab/mail_room.yml --log-exit-as json
#                    (/usr/bin/mail_room is a symlink to /usr/bin/mailroom)
#   user             1000:1000 (mailroom), the chart's runAsUser and fsGroup
#   port             8080, the chart's `:health_check: {:address: 0.0.0.0, :port: 8080}`
#                    (/liveness, /readiness, /metrics)
#   stop signal      SIGTERM: deliveries in flight finish, mailroom exits 0
#   /scripts/healthcheck   the chart's readinessProbe (exec): a mailroom process runs
#   pkill (procps)         the chart's preStop hook: pkill -f 'mail_room'
#   ca-certificates        the trust store for `:ssl: true` (the chart may mount its
#                          own bundle over /etc/ssl/certs)
#
# Two ways to build it:
#
# 1. From source: the `build` stage compiles mailroom (RelWithDebInfo, no tests)
#    and packages it with scripts/build-deb.sh; the final stage installs that
#    package.
#
#      docker build -t mailroom .
#      podman build -t mailroom .
#
# 2. From a package built beforehand (CI compiles once and never again inside
#    a container): the target `runtime-from-deb` installs the one
#    build/deb/mailroom_*.deb of the build context; the `build` stage is not
#    run.
#
#      cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo && cmake --build build --target mailroom
#      scripts/build-deb.sh                     # -> build/deb/mailroom_<version>_amd64.deb
#      docker build --target runtime-from-deb -t mailroom .
#
#    scripts/build-image.sh does this with podman, without any registry: it
#    makes the base image from a debootstrapped Debian 12 root and passes it
#    as BASE (see deploy/container/README.md).
#
# Build arguments:
#   BASE        the runtime base image (debian:bookworm-slim)
#   BUILD_BASE  the image the build stage compiles in (debian:bookworm)
#   VERSION     the org.opencontainers.image.version label (build-image.sh
#               passes the package's version)
#
# The package is COPYed, not bind-mounted into the RUN that installs it:
# buildah 1.28 (Debian 12's podman) reuses a cached RUN --mount layer after
# the mounted file changed, whereas a COPY is cached by its content. The
# package file (about 1 MB) stays in that lower layer.

ARG BASE=debian:bookworm-slim
ARG BUILD_BASE=debian:bookworm

# -- runtime-base: everything both final stages share but the package --------
FROM ${BASE} AS runtime-base
ARG BASE
ARG VERSION=""
LABEL org.opencontainers.image.title="mailroom" \
      org.opencontainers.image.description="IMAP watcher delivering new mail to Sidekiq or a webhook; a drop-in replacement for GitLab's mail_room" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.base.name="${BASE}"
COPY --chmod=0755 deploy/container/healthcheck /scripts/healthcheck
COPY deploy/container/install-deb.sh /tmp/mailroom-deb/
EXPOSE 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/mail_room"]
CMD ["-c", "/var/opt/gitlab/mail_room.yml", "--log-exit-as", "json"]

# -- runtime-from-deb: the image from build/deb/mailroom_*.deb of the context -
# Listed before the build stage: building this target never compiles.
FROM runtime-base AS runtime-from-deb
COPY build/deb/mailroom_*.deb /tmp/mailroom-deb/
RUN sh /tmp/mailroom-deb/install-deb.sh /tmp/mailroom-deb && rm -rf /tmp/mailroom-deb
USER 1000:1000

# -- build: compile mailroom and package it ------------------------------------
FROM ${BUILD_BASE} AS build
# The build packages of scripts/install-deps.sh (without the test, lint and
# fuzzing tools), plus what scripts/build-deb.sh uses.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      cmake g++ make pkg-config \
      libssl-dev \
      libboost1.81-dev libboost-json1.81-dev libboost-url1.81-dev \
      libyaml-cpp-dev nlohmann-json3-dev libfmt-dev libcli11-dev \
      libcurl4-openssl-dev libicu-dev libgmime-3.0-dev libpq-dev \
      dpkg-dev help2man binutils \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN rm -rf build \
 && cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMAILROOM_TESTS=OFF \
 && cmake --build build --target mailroom -j"$(nproc)" \
 && scripts/build-deb.sh --build-dir build --out /out

# -- runtime (the default target): the image from the package built above ------
FROM runtime-base AS runtime
COPY --from=build /out/mailroom_*.deb /tmp/mailroom-deb/
RUN sh /tmp/mailroom-deb/install-deb.sh /tmp/mailroom-deb && rm -rf /tmp/mailroom-deb
USER 1000:1000
