#!/usr/bin/env bash
# CPU benchmarks as recorded in benchmarks/results/ (README "CPU figures"):
#   1. the OpenVINO bf16 agreement gate on 256 real development images (stored in the compile cache);
#   2. `allbatch bench` with the backend `auto` picks on a CPU (OpenVINO, bf16 where native) against the naive
#      per-image loop, paired rounds; benchmarks/report.py adds targets and plots;
#   3. the paired OpenVINO vs ONNX Runtime comparison on one real batch.
# Environment: PYTHON (default .venv/bin/python), SRC (default: the dataset's Original folder, else the demo
# images), LIMIT (bench images, default 64), BATCH_SIZES (default 16), ROUNDS (default 3), MACHINE (label in the
# file names). The reports record the load average: say so when it was high.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1 | tr '[:upper:]' '[:lower:]' | tr -cs 'a-z0-9' '-' | sed 's/-$//')
MACHINE=${MACHINE:-cpu$(nproc)-${cpu_model:-unknown}}
STAMP=$(date -u +%Y%m%d)
OUT=benchmarks/results
SRC=${SRC:-$("$PY" -c "from allbatch.bench.runner import default_source; print(default_source())")}

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
"$PY" - "$SRC" <<'PYEOF'
import json, sys
from pathlib import Path
from allbatch.backends.openvino_backend import OpenVinoBackend
from allbatch.model.manifest import load_model_artifact
with OpenVinoBackend(load_model_artifact(None), precision="auto", check_images=Path(sys.argv[1])) as backend:
    print(json.dumps(backend.describe().get("bf16_agreement", {"precision": backend.precision}), indent=1))
PYEOF
"$PY" -m allbatch bench "$SRC" --backend auto --decoder auto --batch-sizes "${BATCH_SIZES:-16}" \
    --repeats "${ROUNDS:-3}" --warmup 1 --limit "${LIMIT:-64}" --json "$OUT/$MACHINE-$STAMP.json"
"$PY" benchmarks/report.py "$OUT/$MACHINE-$STAMP.json"
"$PY" benchmarks/openvino_vs_onnxruntime.py "$SRC" --batch 16 --rounds 5 --out "$OUT/$MACHINE-$STAMP-openvino-vs-onnxruntime.json"
