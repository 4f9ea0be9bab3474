#!/usr/bin/env bash
# Build the mailroom container image with podman from an already built Debian
# package (scripts/build-deb.sh): the Dockerfile's target runtime-from-deb.
# Nothing is compiled, and no registry is contacted: the base image is made
# here from a debootstrapped Debian 12 root (scripts/debian-root.sh), slimmed
# like debian:bookworm-slim and imported as
# localhost/mailroom-base/debian:bookworm-slim, then passed as BASE. Only
# deb.debian.org is needed (debootstrap once, and apt inside the build).
#
# usage: scripts/build-image.sh [--deb FILE] [--tag IMAGE] [--cache DIR]
#                               [--base IMAGE] [--refresh-base] [--env-file FILE]
#   --deb FILE       the package (default: build/deb/mailroom_*_<arch>.deb, the
#                    newest if there are several)
#   --tag IMAGE      the image's name (default localhost/mailroom:<version>); the
#                    image it named before is removed unless another name or a
#                    container still uses it
#   --cache DIR      where the Debian root of the base image is kept, with the
#                    build context (default build/container); a second run
#                    reuses the root and the imported base image
#   --base IMAGE     build on IMAGE instead (e.g. docker.io/library/debian:bookworm-slim
#                    where a registry is reachable; pulled if missing)
#   --refresh-base   make the root and the base image again (a fresh debootstrap)
#   --env-file FILE  also write the result as shell assignments: IMAGE,
#                    IMAGE_ID, IMAGE_SIZE (bytes), VERSION, BASE, PODMAN (the
#                    podman command with the global options that work here)
#                    and RUN_OPTS (the options `podman run` needs here)
#
# Before building, a container of the base image runs /bin/true to find what
# this machine needs: podman's default OCI runtime (crun) or runc, and the
# default resource limits or explicit ones (podman asks for nofile 1048576 and
# nproc 4194304, which fails where the process may not raise its limits, i.e.
# lacks CAP_SYS_RESOURCE). The first combination that works is used and
# printed; see deploy/container/README.md.
#
# Exit status: 0 built (the image's size is printed); 1 failed; 2 usage;
# 3 podman cannot run containers on this machine (every attempt's error on
# stderr). Run as root (rootful podman).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEB="" TAG="" CACHE="$ROOT/build/container" BASE="" REFRESH=0 ENV_FILE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --deb) shift; DEB="${1:?--deb needs a file}" ;;
    --tag) shift; TAG="${1:?--tag needs an image name}" ;;
    --cache) shift; CACHE="${1:?--cache needs a directory}" ;;
    --base) shift; BASE="${1:?--base needs an image}" ;;
    --refresh-base) REFRESH=1 ;;
    --env-file) shift; ENV_FILE="${1:?--env-file needs a file}" ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-image: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

die() { echo "build-image: $*" >&2; exit 1; }
say() { echo "build-image: $*"; }
now() { date +%s.%N; }
took() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }

[ "$(id -u)" = 0 ] || die "run as root (rootful podman; debootstrap)"
command -v podman >/dev/null || die "podman is missing (apt-get install podman runc uidmap)"
case "$CACHE" in /*) ;; *) CACHE="$PWD/$CACHE" ;; esac
T0="$(now)"

# -- the package --------------------------------------------------------------
ARCH="$(dpkg --print-architecture)"
if [ -z "$DEB" ]; then
  # shellcheck disable=SC2012  # the names are mailroom_<version>_<arch>.deb
  DEB="$(ls -t "$ROOT"/build/deb/mailroom_*_"$ARCH".deb 2>/dev/null | head -n 1)" || true
  [ -n "$DEB" ] || die "no build/deb/mailroom_*_$ARCH.deb: run scripts/build-deb.sh first (or pass --deb)"
fi
[ -f "$DEB" ] || die "no such package: $DEB"
DEB="$(realpath "$DEB")"
[ "$(dpkg-deb -f "$DEB" Package)" = mailroom ] || die "$DEB is not the mailroom package"
VERSION="$(dpkg-deb -f "$DEB" Version)"
[ -n "$TAG" ] || TAG="localhost/mailroom:$VERSION"
say "package $DEB (version $VERSION)"

# -- the base image -----------------------------------------------------------
# Like debian:bookworm-slim: no apt lists or caches, no manual pages, info
# pages, translations or changelogs, and a dpkg configuration that keeps the
# packages installed later from adding them (the copyright files stay).
make_base() {
  local root="$CACHE/debian-bookworm" overlay="$CACHE/base-overlay" t
  t="$(now)"
  "$ROOT/scripts/debian-root.sh" "$root"
  mkdir -p "$overlay/etc/dpkg/dpkg.cfg.d"
  cat > "$overlay/etc/dpkg/dpkg.cfg.d/slim" <<'EOF'
# Like debian:bookworm-slim: no documentation, manual pages or translations.
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
  podman image rm -f "$BASE_TAG" >/dev/null 2>&1 || true
  tar -c -f - --numeric-owner --one-file-system \
      --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' --exclude='./run/*' \
      --exclude='./tmp/*' --exclude='./var/tmp/*' \
      --exclude='./var/lib/apt/lists/*' --exclude='./var/cache/apt/*.bin' \
      --exclude='./var/cache/apt/archives/*.deb' --exclude='./var/cache/debconf/*-old' \
      --exclude='./var/log/*.log' --exclude='./var/log/apt/*' \
      --exclude='./usr/share/man/*' --exclude='./usr/share/info/*' --exclude='./usr/share/groff/*' \
      --exclude='./usr/share/locale/*/*' --exclude='./usr/share/doc/*/changelog*' \
      --exclude='./usr/share/doc/*/NEWS*' --exclude='./etc/hostname' \
      -C "$root" . -C "$overlay" ./etc/dpkg/dpkg.cfg.d/slim |
    podman import --quiet \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'CMD ["bash"]' \
      --message "debootstrap --variant=minbase bookworm ($(cat "$root/etc/debian_version")), slimmed" \
      - "$BASE_TAG" >/dev/null
  say "base image $BASE_TAG made from $root in $(took "$t")"
}

if [ -n "$BASE" ]; then
  PULL=missing
else
  BASE_TAG="localhost/mailroom-base/debian:bookworm-slim"
  BASE="$BASE_TAG" PULL=never
  if [ "$REFRESH" = 1 ]; then
    rm -rf --one-file-system "$CACHE/debian-bookworm"
    make_base
  elif podman image exists "$BASE_TAG"; then
    say "base image $BASE_TAG (made $(podman image inspect -f '{{.Created}}' "$BASE_TAG" | cut -d. -f1); --refresh-base makes it again)"
  else
    make_base
  fi
fi
if [ "$PULL" = missing ] && ! podman image exists "$BASE"; then
  podman pull "$BASE" >/dev/null || die "cannot pull $BASE"
fi

# -- what podman needs on this machine ----------------------------------------
# Podman lowers its own nproc limit to 32768 and keeps its nofile limit at most
# 1048576; a container can be given those without CAP_SYS_RESOURCE.
hard_nofile="$(ulimit -Hn)" hard_nproc="$(ulimit -Hu)"
[ "$hard_nofile" != unlimited ] && [ "$hard_nofile" -lt 1048576 ] || hard_nofile=1048576
[ "$hard_nproc" != unlimited ] && [ "$hard_nproc" -lt 32768 ] || hard_nproc=32768
LIMITS="--ulimit nofile=$hard_nofile:$hard_nofile --ulimit nproc=$hard_nproc:$hard_nproc"
PODMAN="" RUN_OPTS="" tried=()
for runtime in "" runc crun; do
  [ -z "$runtime" ] || command -v "$runtime" >/dev/null || continue
  for limits in "" "$LIMITS"; do
    cmd="podman${runtime:+ --runtime $runtime}"
    # shellcheck disable=SC2086  # word splitting of the option strings is intended
    if out="$($cmd run --rm --network none $limits "$BASE" /bin/true 2>&1)"; then
      PODMAN="$cmd" RUN_OPTS="$limits"
      break 2
    fi
    tried+=("  $cmd run ${limits:+$limits }... : $(tail -n 1 <<<"$out")")
  done
done
if [ -z "$PODMAN" ]; then
  {
    echo "build-image: podman cannot run containers on this machine; tried:"
    printf '%s\n' "${tried[@]}"
  } >&2
  exit 3
fi
for t in "${tried[@]}"; do say "does not work here:${t#  }"; done
say "works here: $PODMAN run ${RUN_OPTS:+$RUN_OPTS }..."

# -- the image ----------------------------------------------------------------
# A context of its own: the one package, and the files the Dockerfile's
# runtime stages use.
CTX="$CACHE/context"
rm -rf "$CTX"
mkdir -p "$CTX/build/deb" "$CTX/deploy/container"
cp "$DEB" "$CTX/build/deb/"
cp "$ROOT/deploy/container/install-deb.sh" "$ROOT/deploy/container/healthcheck" "$CTX/deploy/container/"
OLD_ID="$(podman image inspect -f '{{.Id}}' "$TAG" 2>/dev/null)" || OLD_ID=""
t="$(now)"
say "$PODMAN build --target runtime-from-deb --pull=$PULL --network host --build-arg BASE=$BASE -t $TAG"
# shellcheck disable=SC2086
$PODMAN build --quiet --target runtime-from-deb --pull="$PULL" --network host \
  --build-arg BASE="$BASE" --build-arg VERSION="$VERSION" \
  -f "$ROOT/Dockerfile" -t "$TAG" "$CTX" >/dev/null ||
  die "podman build failed"
say "built $TAG in $(took "$t")"
IMAGE_ID="$(podman image inspect -f '{{.Id}}' "$TAG")"
# The image this tag named before: removed if nothing names it now and no
# container uses it.
if [ -n "$OLD_ID" ] && [ "$OLD_ID" != "$IMAGE_ID" ] &&
   [ "$(podman image inspect -f '{{len .RepoTags}}' "$OLD_ID" 2>/dev/null)" = 0 ]; then
  podman image rm "$OLD_ID" >/dev/null 2>&1 || true
fi

# It starts, as the image's user, with the image's entry point.
# shellcheck disable=SC2086
got="$($PODMAN run --rm --network none $RUN_OPTS "$TAG" --version)" ||
  die "$TAG does not run: $got"
grep -q "$VERSION" <<<"$got" || die "$TAG --version says '$got', the package is $VERSION"

IMAGE_SIZE="$(podman image inspect -f '{{.Size}}' "$TAG")"
BASE_SIZE="$(podman image inspect -f '{{.Size}}' "$BASE")"
say "$TAG: $(awk -v s="$IMAGE_SIZE" 'BEGIN { printf "%.1f MB", s / 1e6 }') ($IMAGE_SIZE bytes;" \
    "base $BASE $(awk -v s="$BASE_SIZE" 'BEGIN { printf "%.1f MB", s / 1e6 }')), id ${IMAGE_ID:0:12}," \
    "$(took "$T0") in all"

if [ -n "$ENV_FILE" ]; then
  {
    printf 'IMAGE=%q\n' "$TAG"
    printf 'IMAGE_ID=%q\n' "$IMAGE_ID"
    printf 'IMAGE_SIZE=%q\n' "$IMAGE_SIZE"
    printf 'VERSION=%q\n' "$VERSION"
    printf 'BASE=%q\n' "$BASE"
    printf 'PODMAN=%q\n' "$PODMAN"
    printf 'RUN_OPTS=%q\n' "$RUN_OPTS"
  } > "$ENV_FILE"
fi
