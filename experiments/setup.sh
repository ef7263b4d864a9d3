#!/usr/bin/env bash
# Set up the project on a fresh machine; safe to run again (a second run takes seconds).
#   1. Fashion-MNIST from Debian's package dataset-fashion-mnist, where apt-get is available
#      (elsewhere torchvision downloads it on the first run);
#   2. a virtual environment .venv with torch 2.14.1 / torchvision 0.29.1 (the tested versions;
#      pyproject.toml allows torch 2.4-2.14), the other dependencies (pyproject.toml) and the
#      project installed in editable mode.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1; then
    sudo=""
    if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then sudo="sudo"; fi
    { $sudo apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 ||
      { $sudo apt-get update -q >/dev/null 2>&1 && $sudo apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; }; } ||
      echo "setup: could not install dataset-fashion-mnist; torchvision will download Fashion-MNIST" >&2
fi

python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
# the tested versions exactly (pyproject.toml allows a range, for GPU users with other CUDA builds)
.venv/bin/python -m pip install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1 -e '.[dev,tensorboard]'
