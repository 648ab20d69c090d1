#!/usr/bin/env bash
# GPU throughput benchmark: DALI decode + segmentation on the GPU, torch CUDA fp16 inference, against the
# naive per-image baseline (eager torch fp32) on the same GPU. Needs the gpu extra (nvidia-dali, cupy)
# and a CUDA build of torch. LIMIT should be a multiple of every batch size, so that no batch shape is
# first seen (and autotuned by cuDNN) inside a timed pass.
#
# Environment: PYTHON, MODEL, SRC (required unless the dataset is beside the checkout: the 8 demo images
# would make a "2048-image" run one batch of 8), LIMIT (default 2048), BATCH_SIZES (default 64,128,256),
# LARGE_DIR, LARGE_LIMIT (default 256), MACHINE (default: the GPU's name), RESULTS (where the JSON and
# plots go; default benchmarks/results, or $OUT on a lent GPU machine, the folder that comes back).
#
# This is the full sweep: about 20 fresh worker processes and two per-image baselines, an estimated 12-20
# minutes on an H100, more than one device call (10 min) allows. For a first, short check on a lent machine
# use benchmarks/gpu_verify.sh; run this one when a machine is lent for longer.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr '[:upper:]' '[:lower:]' | tr -cs 'a-z0-9' '-' | sed 's/-$//')
MACHINE=${MACHINE:-$gpu}
STAMP=$(date -u +%Y%m%d)
RESULTS=${RESULTS:-${OUT:-benchmarks/results}}  # never assign OUT: on the GPU machine it is the returned folder
mkdir -p "$RESULTS"
LARGE_DIR=${LARGE_DIR:-/tmp/allbatch-large}
model_args=()
if [[ -n "${MODEL:-}" ]]; then model_args=(--model "$MODEL"); fi
if [[ -z "${SRC:-}" ]]; then
    if [[ -d ../shared/data/all-kaggle/Original ]]; then SRC=../shared/data/all-kaggle/Original
    else echo "set SRC to the development images (Original/): the demo fallback has only 8 images" >&2; exit 2; fi
fi
src_args=("$SRC")
common=(--backend torch --decoder dali --precision fp16 --batch-sizes "${BATCH_SIZES:-64,128,256}" --repeats 3 --warmup 1)

"$PY" -m allbatch bench "${src_args[@]}" "${common[@]}" --limit "${LIMIT:-2048}" "${model_args[@]}" \
    --json "$RESULTS/$MACHINE-$STAMP.json"
"$PY" benchmarks/report.py "$RESULTS/$MACHINE-$STAMP.json"  # targets and plots
if [[ ! -d "$LARGE_DIR" ]]; then
    "$PY" benchmarks/make_large_fields.py --out "$LARGE_DIR" --count 256
fi
"$PY" -m allbatch bench "$LARGE_DIR" "${common[@]}" --limit "${LARGE_LIMIT:-256}" "${model_args[@]}" \
    --json "$RESULTS/$MACHINE-$STAMP-large.json"
"$PY" benchmarks/report.py "$RESULTS/$MACHINE-$STAMP-large.json"
