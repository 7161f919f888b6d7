#!/usr/bin/env bash
# Copy Fashion-MNIST (the four idx .gz files of the Debian package dataset-fashion-mnist) into
# the fedssl-datasets volume, through the serverapp pod that mounts it: the ServerApp's kNN
# probes and the demo SuperNodes' shards read it there (FEDSSL_FASHION_MNIST_DIR). Once per
# cluster; the volume outlives pods and re-applies. Needs only `kubectl exec` (no tar in images).
#
# Usage: k8s/load-datasets.sh [--namespace fedssl] [--from /usr/share/datasets/fashion-mnist]
set -euo pipefail

NAMESPACE=fedssl
FROM=/usr/share/datasets/fashion-mnist
FILES=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz)
die() { echo "load-datasets: $*" >&2; exit 2; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --namespace) NAMESPACE="${2:?}"; shift 2 ;;
    --from) FROM="${2:?}"; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
for f in "${FILES[@]}"; do
  [[ -f "$FROM/$f" ]] || die "$FROM/$f is missing (apt-get install dataset-fashion-mnist, or pass --from)"
done

pod=(--namespace "$NAMESPACE" deploy/serverapp -c superexec)
kubectl rollout status --namespace "$NAMESPACE" deploy/serverapp --timeout=300s >/dev/null
kubectl exec "${pod[@]}" -- mkdir -p /datasets/fashion-mnist
for f in "${FILES[@]}"; do
  kubectl exec -i "${pod[@]}" -- sh -c "cat > /datasets/fashion-mnist/$f.part && mv /datasets/fashion-mnist/$f.part /datasets/fashion-mnist/$f" < "$FROM/$f"
  echo "load-datasets: $f"
done
