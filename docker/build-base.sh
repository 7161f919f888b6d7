#!/usr/bin/env bash
# Air-gapped base image: Debian bookworm + Python 3.11 made with debootstrap and `docker import`,
# for machines that reach a Debian mirror but no container registry. The images are then built
# FROM it exactly as FROM python:3.11-slim (docker/build.sh --base-image ...).
#
# Usage: docker/build-base.sh [IMAGE]        (default fedssl/base:bookworm-py311)
#   DEBIAN_MIRROR  mirror to bootstrap from (default: the first of /etc/apt's sources, else deb.debian.org)
#   FORCE=1        rebuild even if IMAGE exists
# Needs root, debootstrap and a Docker engine (docker/ci-setup.sh installs both).
set -euo pipefail

IMAGE=${1:-fedssl/base:bookworm-py311}
DOCKER=${DOCKER:-docker}

if [[ ${FORCE:-0} != 1 ]] && "$DOCKER" image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "build-base: $IMAGE exists (FORCE=1 to rebuild)"
  exit 0
fi

mirror=${DEBIAN_MIRROR:-}
if [[ -z $mirror ]]; then  # the mirror apt already uses: deb822 "URIs:" or one-line "deb URL bookworm"
  mirror=$(grep -hsE '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list \
           | grep -E 'debian/?$|debian/? bookworm' | grep -v security | head -1 \
           | sed -E 's/^URIs: *//; s/^deb (\[[^]]*\] )?//; s/ .*//') || true
  mirror=${mirror:-http://deb.debian.org/debian}
fi

root=$(mktemp -d /tmp/fedssl-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "build-base: debootstrap bookworm from $mirror"
# python3-venv: the images install into /opt/venv; ca-certificates: HTTPS to package indexes;
# libgomp1: OpenMP runtime of CPU PyTorch.
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,libgomp1 \
  bookworm "$root" "$mirror" >/tmp/fedssl-debootstrap.log 2>&1 \
  || { tail -30 /tmp/fedssl-debootstrap.log >&2; exit 1; }
# Slim it the way Debian's own slim images are: no apt lists, caches, docs or man pages.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
       "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/log/*.log
echo "deb $mirror bookworm main" > "$root/etc/apt/sources.list"

tar -C "$root" --numeric-owner -c . | "$DOCKER" import \
  --change 'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["python3"]' \
  --message "fedssl base: debootstrap bookworm minbase + python3 ($mirror)" - "$IMAGE" >/dev/null
echo "build-base: $IMAGE ($("$DOCKER" image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%d MB", $1/1e6}'))"
