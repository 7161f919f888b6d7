#!/usr/bin/env bash
# Build the fedssl images, one at a time (tags: docker/flags.yaml `images`).
#
# Usage: docker/build.sh [ROLE...]     ROLE: superlink, supernode (default: both), prometheus
#   --base-image IMAGE   FROM of both stages (default python:3.11-slim; air-gapped: docker/build-base.sh's)
#   --torch-index URL    extra pip index for torch ("" = PyPI/wheels only; default PyTorch's CPU index)
#   --torch-packages S   e.g. "torch==2.13.0 torchvision==0.28.0" (default); "" = the base image's torch
#   --wheels DIR         copy DIR/*.whl into docker/build-inputs/wheels (e.g. /opt/wheels: a local CPU torch)
#   --ca-cert FILE       CA bundle pip must trust behind an HTTPS-intercepting proxy (build stage only)
#   --tag-suffix S       e.g. -cuda, -jetson (fedssl/supernode:0.1.0-cuda)
#   --platform P         e.g. linux/arm64 (uses `docker buildx build --load`)
# Environment: DOCKER (client, default docker), VERSION (default 0.1.0).
set -euo pipefail
cd "$(dirname "$0")/.."

DOCKER=${DOCKER:-docker}
VERSION=${VERSION:-0.1.0}
base="" torch_index="__default__" torch_packages="__default__" wheels="" ca="" suffix="" platform=""
roles=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --base-image) base=$2; shift 2 ;;
    --torch-index) torch_index=$2; shift 2 ;;
    --torch-packages) torch_packages=$2; shift 2 ;;
    --wheels) wheels=$2; shift 2 ;;
    --ca-cert) ca=$2; shift 2 ;;
    --tag-suffix) suffix=$2; shift 2 ;;
    --platform) platform=$2; shift 2 ;;
    superlink|supernode|prometheus) roles+=("$1"); shift ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[[ ${#roles[@]} -gt 0 ]] || roles=(superlink supernode)

# Build inputs: replaced on every call, so an old wheel or CA never lingers.
inputs=docker/build-inputs
find "$inputs" -mindepth 1 ! -name .gitignore ! -name README.md -exec rm -rf {} +
if [[ -n $wheels ]]; then mkdir -p "$inputs/wheels" && cp "$wheels"/*.whl "$inputs/wheels/"; fi
if [[ -n $ca ]]; then cp "$ca" "$inputs/ca.crt"; fi

args=()
[[ -z $base ]] || args+=(--build-arg "BASE_IMAGE=$base")
[[ $torch_index == __default__ ]] || args+=(--build-arg "TORCH_INDEX_URL=$torch_index")
[[ $torch_packages == __default__ ]] || args+=(--build-arg "TORCH_PACKAGES=$torch_packages")
build=("$DOCKER" build)
[[ -z $platform ]] || build=("$DOCKER" buildx build --load --platform "$platform")

for role in "${roles[@]}"; do
  tag="fedssl/$role:$VERSION$suffix"
  start=$SECONDS
  if [[ $role == prometheus ]]; then  # Debian's package on the base image: no torch, no project
    "${build[@]}" ${base:+--build-arg "BASE_IMAGE=$base"} -t "$tag" docker/monitoring/prometheus
  else
    "${build[@]}" "${args[@]}" -f "docker/$role/Dockerfile" -t "$tag" .
  fi
  echo "build.sh: $tag in $((SECONDS - start)) s, $("$DOCKER" image inspect -f '{{.Size}}' "$tag" | awk '{printf "%d MB", $1/1e6}')"
done
