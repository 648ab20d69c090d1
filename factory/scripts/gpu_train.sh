#!/usr/bin/env bash
# Fine-tune the shipped model on a lent H100/H200 within a wall-clock budget and send back the artifact and
# what its validation here needs (issue 10: "when a GPU machine is lent, train there"). One device call, about MINUTES + 1.5 min:
#
#   1. train     python -m factory.training.train from the shipped weights (--init-onnx), stage 2 only, at the
#                model size, re-planned after its second epoch to fit MINUTES (the cosine schedule still ends at
#                zero), the best of raw/EMA weights exported with fp16 weights         -> $OUT/train.log
#   2. pack      the ONNX in 15 MiB parts (files back are at most 16 MiB each) and its manifest (history)
#                                           -> $OUT/model.onnx.part00.., $OUT/allbatch-densenet201.json, $OUT/sha256.txt
#   3. reference factory/scripts/fp32_reference.py: the fp32 logits of best.pt (too large to bring back) on the
#                validation part, on the GPU; here, factory/scripts/validate_model.py --fp32-logits turns them into
#                the fp16-weights agreement                                            -> $OUT/fp32_logits.npz
#                (VALIDATE_S > 0 also runs validate_model.py there; that machine's CPUs run ONNX Runtime at
#                about 16 images/s, so 150 s were not enough for it on the H200)      -> $OUT/validate.log
#
# Reassemble here: cat model.onnx.part* > allbatch-densenet201.onnx && sha256sum -c sha256.txt (in that folder),
# then: factory/scripts/validate_model.py --model <it> --fp32-logits fp32_logits.npz --write.
# No `set -e`: each step's status is logged and the packing runs whatever happened before it.
#
#   factory/scripts/gpu_train.sh             on the GPU machine (its $OUT is the folder that comes back)
#   factory/scripts/gpu_train.sh --dry-run   on this CPU: the tiny network from random weights, one epoch, in a minute
#
# Environment: OUT, PYTHON (python3), DATA (default /opt/stage/verify/all-kaggle/Original, as
# benchmarks/gpu_verify.sh stages it), MINUTES (3), VALIDATE_S (0), LR (3e-4), BATCH (64), EMA (0.995), WORKERS (cores - 2),
# WHEELS (wheels to unzip: onnxscript and onnx-ir for the ONNX export, simplejpeg for the JPEG check), TRAIN_ARGS (more
# arguments for the training, e.g. --val-fraction 0.4 for a handful of images).

cd "$(dirname "$0")/../.." || exit 2
source scripts/device_common.sh
device_mode "$0" "$@"

OUT=${OUT:-$(mktemp -d /tmp/allbatch-train-out.XXXXXX)}
WORK=$(mktemp -d /tmp/allbatch-train-work.XXXXXX)
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
cores=$(nproc)
args=(--stage1-epochs 0 --checkpoint-dir "$WORK/run" --out "$WORK/model/allbatch-densenet201.onnx")
if [[ $mode == dry-run ]]; then
    default_py=python3; [[ -x .venv/bin/python ]] && default_py=.venv/bin/python
    PY=${PYTHON:-$default_py}
    DATA=${DATA:-../shared/data/all-kaggle/Original}
    args+=(--arch tiny --stage2-epochs 1 --batch-size 8 --workers 1 --data-root "$DATA")
else
    PY=${PYTHON:-python3}
    DATA=${DATA:-/opt/stage/verify/all-kaggle/Original}
    args+=(--init-onnx allbatch/engines/allbatch-densenet201.onnx --data-root "$DATA" --stage2-epochs 300
           --stage2-minutes "${MINUTES:-3}" --stage2-lr "${LR:-3e-4}" --batch-size "${BATCH:-64}"
           --ema-decay "${EMA:-0.995}" --workers "${WORKERS:-$((cores > 3 ? cores - 2 : 1))}")
fi
read -r -a extra <<< "${TRAIN_ARGS:-}"
args+=("${extra[@]}")
model=$WORK/model/allbatch-densenet201.onnx
unzip_wheels "$PY" "${WHEELS:-/opt/stage/verify/wheels}" "$WORK/pydeps"

{ date -u; command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  echo "cores $cores; $PY ${args[*]}"; } > "$OUT/train.log"
"$PY" -m factory.training.train "${args[@]}" >> "$OUT/train.log" 2>&1
echo "train rc=$? at $(date -u +%T)" | tee -a "$OUT/train.log"
if [[ -f "$model" ]]; then
    # packed first: the validation below only adds figures to the manifest, and may run out of its time
    (cd "$WORK/model" && split -b 15M -d allbatch-densenet201.onnx "$OUT/model.onnx.part" \
        && sha256sum allbatch-densenet201.onnx > "$OUT/sha256.txt")
    cp "$WORK/model/allbatch-densenet201.json" "$OUT/"
    timeout -k 10 120 "$PY" -m factory.scripts.fp32_reference --model "$model" --checkpoint "$WORK/run/best.pt" --data "$DATA" \
        --out "$OUT/fp32_logits.npz" >> "$OUT/train.log" 2>&1
    echo "reference rc=$? at $(date -u +%T)" | tee -a "$OUT/train.log"
    if (( ${VALIDATE_S:-0} > 0 )); then
        timeout -k 10 "$VALIDATE_S" "$PY" -m factory.scripts.validate_model --model "$model" --checkpoint "$WORK/run/best.pt" \
            --data "$DATA" --write > "$OUT/validate.log" 2>&1
        echo "validate rc=$? at $(date -u +%T)" | tee -a "$OUT/validate.log"
        cp "$WORK/model/allbatch-densenet201.json" "$OUT/"
    fi
fi
cp "$WORK/run/history.json" "$OUT/" 2> /dev/null
ls -la "$OUT"
rm -rf "$WORK"
[[ -f "$OUT/sha256.txt" ]]
