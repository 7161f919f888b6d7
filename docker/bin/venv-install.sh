#!/bin/sh
# The build stage's two steps (docker/*/Dockerfile), each its own cached layer:
#   venv-install.sh torch VENV                  torch and torchvision from TORCH_PACKAGES via
#                                               TORCH_INDEX_URL and /build-inputs/wheels; empty
#                                               TORCH_PACKAGES keeps the base image's (Jetson)
#   venv-install.sh requirements VENV FILE      the role's pinned requirements, torch pinned to
#                                               what is installed so nothing swaps its build
set -eu
step=$1 venv=$2
if [ -f /build-inputs/ca.crt ]; then export PIP_CERT=/build-inputs/ca.crt; fi  # optional proxy CA
links=""
if [ -d /build-inputs/wheels ]; then links="--find-links /build-inputs/wheels"; fi
pip="$venv/bin/pip --no-cache-dir --disable-pip-version-check"
case "$step" in
  torch)
    python3 -m venv --system-site-packages "$venv"  # system site: a base image's torch stays visible
    if [ -n "${TORCH_PACKAGES:-}" ]; then
      # shellcheck disable=SC2086
      $pip install $links ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} $TORCH_PACKAGES
    fi
    "$venv/bin/python" -c 'import torch; print("venv-install: torch", torch.__version__)' ;;
  requirements)
    "$venv/bin/python" -c 'import torch; print(f"torch=={torch.__version__}")' > /tmp/constraints.txt
    # shellcheck disable=SC2086
    $pip install $links -c /tmp/constraints.txt -r "$3"
    "$venv/bin/python" -c 'import flwr; print("venv-install: flwr", flwr.__version__)' ;;
  *) echo "venv-install.sh: unknown step '$step'" >&2; exit 2 ;;
esac
