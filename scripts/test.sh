#!/usr/bin/env bash
# The project's test command (README "Tests"; .ci/run calls exactly this): sets up a virtual
# environment and runs every check that a machine without a GPU can run: ruff, mypy (TensorRT code
# against patched tensorrt-stubs), pytest (GPU-marked tests skip with their reason).
#   VENV=path   virtual environment to create/reuse (default .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip "$@"; }
pip install -q --upgrade pip 2>&1 | grep -v "Location" || true
# torch: pinned, so pip takes the CPU build that lies on this machine's disk; an unpinned torch pulls
# several GB of CUDA packages. On a GPU machine with torch preinstalled this is already satisfied.
"$VENV/bin/python" -c "import torch" 2>/dev/null || pip install -q torch==2.13.0 2>&1 | grep -v "Location" || true
# openvino: a 60 MB wheel, so CI runs the OpenVINO backend's tests too
pip install -q -e ".[train,dev,ray,openvino]" nvidia-dali-cuda130 2>&1 | grep -v "Location" || true
# Headless Chromium for the report's screenshot test (Debian's package); the test skips with its reason where
# neither chromium is installed nor apt-get can install it.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || echo "chromium not installed: the screenshot test will skip"
fi
# TensorRT type stubs (patched) for mypy, once the TensorRT backend is in the tree
if [ -f scripts/install_tensorrt_stubs.sh ]; then VENV="$VENV" bash scripts/install_tensorrt_stubs.sh; fi
echo "== ruff"
"$VENV/bin/ruff" check allbatch factory tests scripts benchmarks
"$VENV/bin/ruff" format --check allbatch factory tests scripts benchmarks
echo "== mypy"
"$VENV/bin/mypy" allbatch factory
echo "== pytest"
OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
