#!/usr/bin/env bash
# The first README command: install, then run a local federation with Flower's simulation
# runtime (`flwr run .`): 10 clients on Fashion-MNIST (Dirichlet alpha 0.5), the run config
# defaults from pyproject.toml. Extra arguments are passed on as run-config overrides,
# e.g. scripts/demo.sh "num-rounds=8 ssl.method='byol'".
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# `flwr run` with the local connection launches `flower-superlink` from PATH.
export PATH="$PWD/.venv/bin:$PATH"
export FLWR_HOME="${FLWR_HOME:-$PWD/.flwr}" FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 \
       FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1 PYTHONUNBUFFERED=1
mkdir -p "$FLWR_HOME" outputs
NODES="${FEDSSL_NODES:-10}"
started="$(date +%s)"
before="$(pgrep -f flower-superlink || true)"
.venv/bin/flwr run . --stream \
  --run-config "outputs-dir='$PWD/outputs' ${1:-}" \
  --federation-config "num-supernodes=${NODES} client-resources-num-cpus=1"
# `flwr run .` leaves its local simulation SuperLink running; stop the one it started.
for pid in $(pgrep -f flower-superlink || true); do
  grep -qw "$pid" <<<"$before" || kill "$pid" 2>/dev/null || true
done
# The local-only baseline (every client training alone, same steps) needs the simulated shards,
# so it runs here, after the federation, and is written into the same run's metrics.json and plot.
if [ "${FEDSSL_LOCAL_ONLY:-1}" = "1" ]; then
  .venv/bin/python -m fedssl.local_only outputs --since "$started" --workers "${FEDSSL_LOCAL_ONLY_WORKERS:-2}" || true
fi
# `flwr run --stream` exits 0 even when the ServerApp fails: judge by metrics.json.
exec .venv/bin/python -m fedssl.summary outputs --since "$started"
