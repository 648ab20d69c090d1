#!/usr/bin/env bash
# GPU throughput benchmark: DALI decode + segmentation on the GPU, torch CUDA fp16 inference, against the
# naive per-image baseline (eager torch fp32) on the same GPU. Needs the gpu extra (nvidia-dali, cupy)
# and a CUDA build of torch. LIMIT should be a multiple of every batch size, so that no batch shape is
# first seen (and autotuned by cuDNN) inside a timed pass.
#
# Environment: PYTHON, MODEL, SRC, LIMIT (default 2048), BATCH_SIZES (default 64,128,256), LARGE_DIR,
# LARGE_LIMIT (default 256), MACHINE (default: the GPU's name).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr '[:upper:]' '[:lower:]' | tr -cs 'a-z0-9' '-' | sed 's/-$//')
MACHINE=${MACHINE:-$gpu}
STAMP=$(date -u +%Y%m%d)
OUT=benchmarks/results
LARGE_DIR=${LARGE_DIR:-/tmp/allbatch-large}
model_args=()
if [[ -n "${MODEL:-}" ]]; then model_args=(--model "$MODEL"); fi
src_args=()
if [[ -n "${SRC:-}" ]]; then src_args=("$SRC"); fi
common=(--backend torch --decoder dali --precision fp16 --batch-sizes "${BATCH_SIZES:-64,128,256}" --repeats 3 --warmup 1)

"$PY" -m allbatch bench "${src_args[@]}" "${common[@]}" --limit "${LIMIT:-2048}" "${model_args[@]}" \
    --json "$OUT/$MACHINE-$STAMP.json"
"$PY" benchmarks/report.py "$OUT/$MACHINE-$STAMP.json"  # targets and plots
if [[ ! -d "$LARGE_DIR" ]]; then
    "$PY" benchmarks/make_large_fields.py --out "$LARGE_DIR" --count 256
fi
"$PY" -m allbatch bench "$LARGE_DIR" "${common[@]}" --limit "${LARGE_LIMIT:-256}" "${model_args[@]}" \
    --json "$OUT/$MACHINE-$STAMP-large.json"
"$PY" benchmarks/report.py "$OUT/$MACHINE-$STAMP-large.json"
