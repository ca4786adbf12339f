#!/usr/bin/env bash
# One-time setup: Debian packages for the demo and the browser test, a venv in .venv, the project installed editable.
# Safe to re-run; it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: espeak-ng (the demo's speech), chromium + chromium-driver (the headless browser
# that tests `factory report`'s page). Only what is missing is installed.
MISSING=()
command -v espeak-ng >/dev/null 2>&1 || MISSING+=(espeak-ng)
command -v chromium >/dev/null 2>&1 || MISSING+=(chromium)
command -v chromedriver >/dev/null 2>&1 || MISSING+=(chromium-driver)
if [ ${#MISSING[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${MISSING[@]}" >/dev/null
fi

PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
STAMP=.venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)
if [ ! -f "$STAMP" ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e ".[dev]"
  # sam2 1.1.0 is source-only; an isolated build would pull a CUDA torch into the build env
  SAM2_BUILD_CUDA=0 .venv/bin/pip install -q --no-deps --no-build-isolation sam2==1.1.0
  touch "$STAMP"
fi
