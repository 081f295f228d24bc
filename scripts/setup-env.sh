#!/usr/bin/env bash
# Set up everything napari-twinvae needs on a fresh Debian/Ubuntu machine, in ./.venv:
# the Debian packages napari's canvas needs headless, CPU torch first, then the package with its
# test extra. Safe to run again: what is already there is kept.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pkg in xvfb libxcb-icccm4 libxcb-keysyms1; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if ((${#need[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing Debian packages: ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($python --version)"
  "$python" -m venv .venv
fi
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
# torch first: a bare torch requirement resolved later pulls a multi-GB CUDA build.
"${pip[@]}" "torch==2.13.0" 2> >(grep -v "is ignored" >&2)
"${pip[@]}" -e ".[testing]" 2> >(grep -v "is ignored" >&2)
echo "setup: ready ($(.venv/bin/napari-twinvae --version))"
