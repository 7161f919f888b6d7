#!/usr/bin/env bash
# Copy the Grafana dashboard into the kustomize base. kustomize refuses files outside a
# kustomization's root, so k8s/base/monitoring/fedssl.json is a copy of the one source,
# docker/monitoring/grafana/dashboards/fedssl.json; tests/test_k8s_config.py fails when they differ.
#   k8s/sync-dashboard.sh           copy
#   k8s/sync-dashboard.sh --check   exit 1 if the copy is stale (copies nothing)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
src="$root/docker/monitoring/grafana/dashboards/fedssl.json"
dst="$root/k8s/base/monitoring/fedssl.json"
case "${1:-}" in
  ""|--check) ;;
  *) echo "sync-dashboard: unknown argument '$1' (only --check)" >&2; exit 2 ;;
esac
[[ -f "$src" ]] || { echo "sync-dashboard: no $src" >&2; exit 2; }
if [[ "${1:-}" == "--check" ]]; then
  cmp -s "$src" "$dst" || { echo "sync-dashboard: $dst is stale; run k8s/sync-dashboard.sh" >&2; exit 1; }
  exit 0
fi
mkdir -p "$(dirname "$dst")"
cp "$src" "$dst"
echo "sync-dashboard: $dst updated"
