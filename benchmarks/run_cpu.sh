#!/usr/bin/env bash
# CPU throughput benchmark (ONNX Runtime + Pillow/NumPy preparer), as recorded in benchmarks/results/.
#
# Two runs, each against the naive per-image baseline on the same images and model:
#   1. the development images (224x224): LIMIT images (default 256), batch sizes 8 and 32;
#   2. synthetic 2048x1536 field images (made by make_large_fields.py): LARGE_LIMIT images (default 48).
# Writes benchmarks/results/<machine>-<date>.json and -large.json, each with two PNG plots beside it.
#
# Environment: PYTHON (default .venv/bin/python), MODEL (default: the shipped model, else an untrained
# DenseNet201 export), SRC (default: the dataset's Original folder, else the demo images), LIMIT,
# LARGE_DIR (default /tmp/allbatch-large), LARGE_LIMIT, MACHINE (label in the file names).
# Run it on an otherwise idle machine: the report records the load average and busy processes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1 | tr '[:upper:]' '[:lower:]' | tr -cs 'a-z0-9' '-' | sed 's/-$//')
MACHINE=${MACHINE:-cpu$(nproc)-${cpu_model:-unknown}}
STAMP=$(date -u +%Y%m%d)
OUT=benchmarks/results
LARGE_DIR=${LARGE_DIR:-/tmp/allbatch-large}
model_args=()
if [[ -n "${MODEL:-}" ]]; then model_args=(--model "$MODEL"); fi
src_args=()
if [[ -n "${SRC:-}" ]]; then src_args=("$SRC"); fi
common=(--backend onnxruntime --decoder cpu --batch-sizes 8,32 --repeats 3 --warmup 1)

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
"$PY" -m allbatch bench "${src_args[@]}" "${common[@]}" --limit "${LIMIT:-256}" "${model_args[@]}" \
    --json "$OUT/$MACHINE-$STAMP.json"

if [[ ! -d "$LARGE_DIR" ]]; then
    "$PY" benchmarks/make_large_fields.py --out "$LARGE_DIR" --count 48
fi
"$PY" -m allbatch bench "$LARGE_DIR" "${common[@]}" --limit "${LARGE_LIMIT:-48}" "${model_args[@]}" \
    --json "$OUT/$MACHINE-$STAMP-large.json"
