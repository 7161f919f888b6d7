#!/usr/bin/env bash
# Make Prometheus and promtool available to tests/test_monitoring.py: idempotent, no system service.
#   - uses `prometheus`/`promtool` from PATH when both are there (Debian package `prometheus`);
#   - else unpacks Debian's package (apt-get download + dpkg -x) into
#     ${FEDSSL_PROMETHEUS_DIR:-$HOME/.cache/fedssl/prometheus}, once.
# Prints the path of the prometheus binary (promtool lies beside it) on its last line.
set -euo pipefail

if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
  command -v prometheus
  exit 0
fi

dir=${FEDSSL_PROMETHEUS_DIR:-$HOME/.cache/fedssl/prometheus}
if [[ ! -x $dir/usr/bin/prometheus || ! -x $dir/usr/bin/promtool ]]; then
  echo "ci-setup: unpacking Debian's prometheus into $dir" >&2
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  chmod 755 "$work"  # apt's _apt user downloads into it
  (cd "$work" && { apt-get download -qq prometheus 2>/dev/null || { apt-get update -qq && apt-get download -qq prometheus; }; })
  mkdir -p "$dir"
  dpkg -x "$work"/prometheus_*.deb "$dir"
fi
"$dir/usr/bin/prometheus" --version >/dev/null
echo "$dir/usr/bin/prometheus"
