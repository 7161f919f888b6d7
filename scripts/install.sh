#!/usr/bin/env bash
# Install everything fedssl needs on a fresh Debian/Ubuntu machine: Debian packages (the
# Fashion-MNIST data set, Python venv, espeak-ng and sox for audio), a virtual environment in .venv with the CPU build of
# PyTorch, and the project itself. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-}"  # e.g. "test"

SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
need_apt=()
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || need_apt+=(dataset-fashion-mnist)
python3 -c "import venv, ensurepip" 2>/dev/null || need_apt+=(python3-venv)
# audio: espeak-ng speaks the words of the generated corpus (scripts/make_audio_corpus.py) and sox (for
# inspecting and converting recordings); the soundfile wheel bundles libsndfile, and the av wheel (PyAV,
# video files) bundles FFmpeg, so video needs no Debian package
command -v espeak-ng >/dev/null || need_apt+=(espeak-ng)
command -v sox >/dev/null || need_apt+=(sox)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "==> apt-get install ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
fi

[ -x .venv/bin/python ] || { echo "==> creating .venv"; python3 -m venv .venv; }
PIP=".venv/bin/pip"
stamp=".venv/.fedssl-installed-$(sha256sum pyproject.toml | cut -c1-16)-${EXTRAS:-none}"
if [ ! -f "$stamp" ]; then
  echo "==> installing Python packages (torch CPU first, so nothing pulls the CUDA build)"
  $PIP install -q --upgrade pip
  # torch 2.13.0: the CPU wheel where one is offered (PyTorch's CPU index for x86 users;
  # on this project's build machines pip's find-links holds it).
  $PIP install -q "torch==2.13.0" || $PIP install -q "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu
  torch_version="$(.venv/bin/python -c 'import torch; print(torch.__version__)')"
  echo "torch==${torch_version}" > .venv/constraints.txt
  target="."; [ -z "$EXTRAS" ] || target=".[${EXTRAS}]"
  $PIP install -q -c .venv/constraints.txt -e "$target"
  touch "$stamp"
fi
echo "==> environment ready: $(.venv/bin/python -c 'import torch, flwr; print("torch", torch.__version__, "| flwr", flwr.__version__)')"
