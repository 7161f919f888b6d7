#!/usr/bin/env bash
# The second README command (and what CI runs): install the project with its test extras,
# lint with ruff, set up the real services the tests start (Docker engine, Prometheus), then run
# pytest. Arguments go to pytest, e.g. scripts/test.sh -m "not docker".
#   scripts/test.sh --fast [PYTEST ARGS]   the edit-test loop: ruff, then every test that starts no
#                                          Flower process and no container (-m "not docker and not
#                                          federation"), without the Docker set-up; a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
fast=0
if [ "${1:-}" = "--fast" ]; then fast=1; shift; fi
bash scripts/install.sh test
echo "==> ruff check"
.venv/bin/ruff check .
# Debian tools the tests drive for real: kubectl (kustomize), openssl and ssh-keygen (TLS and
# SuperNode keys).
missing=()
command -v kubectl >/dev/null || missing+=(kubectl)
command -v openssl >/dev/null || missing+=(openssl)
command -v ssh-keygen >/dev/null || missing+=(openssh-client)
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
# `flwr run` with a local connection launches `flower-superlink` from PATH.
export PATH="$PWD/.venv/bin:$PATH"
export FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1 FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
if [ "$fast" -eq 1 ]; then
  exec .venv/bin/python -m pytest -m "not docker and not federation" "$@"
fi
for setup in docker/ci-setup.sh docker/monitoring/ci-setup.sh; do
  if [ -f "$setup" ]; then echo "==> $setup"; bash "$setup"; fi
done
exec .venv/bin/python -m pytest "$@"
