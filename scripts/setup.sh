#!/usr/bin/env bash
# Installs everything MemoCMT Live needs on a fresh Debian/Ubuntu machine into the active Python:
# system packages (speech synthesis for the synthetic corpus, PortAudio/PulseAudio for live audio,
# Chromium for the browser page's tests),
# then PyTorch and the project with its extras. Run it inside a virtual environment.
#   MEMOCMT_EXTRAS  extras to install (default "all,cpu"; use "all,gpu" on a CUDA machine)
set -euo pipefail
cd "$(dirname "$0")/.."

SYSTEM_PACKAGES="espeak-ng sox libsndfile1 libportaudio2 pulseaudio pulseaudio-utils libasound2-plugins chromium"
if command -v apt-get >/dev/null; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  missing=$(for p in $SYSTEM_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
  if [ -n "$missing" ]; then
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $missing
  fi
else
  echo "No apt-get here: install these system packages yourself: $SYSTEM_PACKAGES" >&2
fi

python -m pip install -q --upgrade pip
# A pinned torch that a CPU-only machine has locally; a bare `torch` would pull a multi-GB CUDA build.
python -c "import torch" 2>/dev/null || python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[${MEMOCMT_EXTRAS:-all,cpu}]"
echo "MemoCMT Live is installed; run the tests with: python -m pytest -q"
