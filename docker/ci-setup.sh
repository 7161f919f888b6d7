#!/usr/bin/env bash
# Make a Docker engine usable on a CI machine (Debian 12, root): idempotent.
#   - installs docker.io, docker-compose (v1.29) and debootstrap if missing;
#   - starts dockerd in the background if no engine answers, and waits for it.
# Logs of a dockerd started here go to ${DOCKERD_LOG:-/var/log/dockerd.log}.
set -euo pipefail

need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
if ((${#need[@]})); then
  echo "ci-setup: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Debian's client speaks to the engine it ships with; /usr/local/bin/docker (28.x) may be older-API-incompatible.
DOCKER=/usr/bin/docker
[[ -x $DOCKER ]] || DOCKER=$(command -v docker)

if ! "$DOCKER" info >/dev/null 2>&1; then
  echo "ci-setup: starting dockerd"
  log=${DOCKERD_LOG:-/var/log/dockerd.log}
  # setsid: the daemon must outlive the shell (and the process group) that started it.
  setsid dockerd >"$log" 2>&1 < /dev/null &
  for _ in $(seq 1 60); do
    "$DOCKER" info >/dev/null 2>&1 && break
    sleep 1
  done
  "$DOCKER" info >/dev/null 2>&1 || { echo "ci-setup: dockerd did not come up; see $log" >&2; tail -20 "$log" >&2; exit 1; }
fi
echo "ci-setup: docker $("$DOCKER" version --format '{{.Server.Version}}'), $(docker-compose version --short 2>/dev/null || echo 'no docker-compose')"
