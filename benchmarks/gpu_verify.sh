#!/usr/bin/env bash
# One-shot verification of the GPU path on a lent H100/H200, in at most BUDGET_S (450 s) of steps (one device
# call of at most 8 minutes with the summary; docs/gpu.md has the lease plan):
#
#   1. env      nvidia-smi, versions, `allbatch info --json`                           -> $OUT/env.txt
#   2. tests    the GPU-marked tests (pytest -m gpu)                                    -> $OUT/gpu-tests.xml
#   3. images   COUNT (1024) development images copied out;  fields: the large-field set
#               (benchmarks/make_large_fields.py: FIELDS 3-MP and FIELDS_12MP 12-MP mosaics)
#   4. parity   `allbatch run` over the COUNT images, DALI mixed + CuPy + torch CUDA fp16, and the CPU
#               path (Pillow/NumPy + ONNX Runtime) over the same images, compared label for label
#                                                                                       -> $OUT/parity.json
#   5. speed    issue 22 in one process (gpu_verify.py speed): start-up paid once; each GpuTuning switch
#               (prefetch depth, overlap, CUDA graphs, fancy upsampling, and torch.compile last) against the
#               defaults on the images repeated to REPEAT_TO (4,096) at BATCH, as ratios within rounds; parity
#               with and without fancy upsampling; damaged files planted among them; the large fields with
#               the stage timer; device memory; JSON rewritten after every measurement  -> $OUT/speed.json
#   6. bench    `allbatch bench` at one batch size (BATCH, 256) on BENCH_COUNT images: end to end and infer-only
#               against the naive per-image loop on the same GPU, with device memory  -> $OUT/bench.json
#   7. summary  every step's status and the figures above, plus the peak GPU memory sampled by nvidia-smi
#                                                                                       -> $OUT/summary.json
# plus $OUT/steps.log (every step's output): 7 files. Large files (results.h5, the image copies) stay in a
# temporary folder.
#
# Fault-tolerant by design: no `set -e`; each step runs under `timeout` (its cap, and never past the budget),
# its exit status is recorded, and the next step runs whatever happened. Exit status 0 only if every step
# passed.
#
#   benchmarks/gpu_verify.sh             on the GPU machine (its $OUT is the folder that comes back)
#   benchmarks/gpu_verify.sh --dry-run   the same steps on this CPU: DALI's CPU operators and ONNX Runtime
#                                        instead of the mixed decoder and torch CUDA, 16 images, batch 8
#
# Environment: OUT (default: a new /tmp folder), PYTHON (default python3; .venv/bin/python for --dry-run
# when it exists), SRC (images; default /opt/stage/verify/all-kaggle/Original on the GPU, the development
# images beside the checkout or else the demo images for --dry-run), COUNT, BATCH, BENCH_COUNT (images in
# the benchmark, the COUNT images repeated: 4,096 / 8), BASELINE_COUNT (of them, timed in the naive loop: 512 / 8), MODEL (default: the shipped model), BUDGET_S (450 s x CAP_SCALE), REPEAT_TO (images the speed step times, the COUNT images repeated: 4,096 / 16), ROUNDS (its alternating rounds: 2 / 1), FIELDS, FIELDS_12MP (large fields: 64 + 8 / 2 + 0), CAP_SCALE (every
# step's time cap multiplied: 1, or 3 for --dry-run), DATASET_ROOT (the folder holding
# Original/, for the GPU tests that read real images), WHEELS (wheels to unzip onto the path, default
# /opt/stage/verify/wheels: onnxscript and onnx-ir for the tests' model export, simplejpeg for the JPEG check).
# How the images and wheels get to the GPU machine: see "GPU verification" in README.md.

cd "$(dirname "$0")/.." || exit 2
source scripts/device_common.sh
device_mode "$0" "$@"

if [[ $mode == dry-run ]]; then
    default_py=python3; [[ -x .venv/bin/python ]] && default_py=.venv/bin/python
    PY=${PYTHON:-$default_py}
    DECODER=dali-cpu BACKEND=onnxruntime
    COUNT=${COUNT:-16} BATCH=${BATCH:-8} BENCH_COUNT=${BENCH_COUNT:-8} BASELINE_COUNT=${BASELINE_COUNT:-8}
    REPEAT_TO=${REPEAT_TO:-16} FIELDS=${FIELDS:-2} FIELDS_12MP=${FIELDS_12MP:-0} FIELD_SIZE=1024x768 ROUNDS=${ROUNDS:-1}
    CAP_SCALE=${CAP_SCALE:-3}  # the 2-core development machine (often shared) runs the shipped model slowly
    if [[ -z "${SRC:-}" ]]; then
        SRC=allbatch/demo
        for root in "${ALLBATCH_DATASET_ROOT:-}" ../shared/data/all-kaggle; do
            if [[ -n "$root" && -d "$root/Original" ]]; then SRC=$root/Original; break; fi
        done
    fi
else
    PY=${PYTHON:-python3}
    DECODER=dali BACKEND=torch
    # The H200 lease of 2026-11-29 benched 768 images (3 DALI runs a round): start-up dominated. 4,096 repeats the
    # COUNT images; the naive loop (32 images/s there) is timed on 512 of them.
    COUNT=${COUNT:-1024} BATCH=${BATCH:-256} BENCH_COUNT=${BENCH_COUNT:-4096} BASELINE_COUNT=${BASELINE_COUNT:-512}
    REPEAT_TO=${REPEAT_TO:-4096} FIELDS=${FIELDS:-64} FIELDS_12MP=${FIELDS_12MP:-8} FIELD_SIZE=2048x1536 ROUNDS=${ROUNDS:-2}
    SRC=${SRC:-/opt/stage/verify/all-kaggle/Original}
    DATASET_ROOT=${DATASET_ROOT:-$(dirname "$SRC")}
fi
CAP_SCALE=${CAP_SCALE:-1}
BUDGET_S=${BUDGET_S:-$((450 * CAP_SCALE))}
OUT=${OUT:-$(mktemp -d /tmp/allbatch-verify-out.XXXXXX)}
WORK=$(mktemp -d /tmp/allbatch-verify-work.XXXXXX)
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
[[ -n "${DATASET_ROOT:-}" ]] && export ALLBATCH_DATASET_ROOT=$DATASET_ROOT
model_args=()
[[ -n "${MODEL:-}" ]] && model_args=(--model "$MODEL")
echo "$mode" > "$WORK/mode"
log=$OUT/steps.log
started=$SECONDS

# step NAME CAP_S COMMAND...: run under `timeout` (CAP_S, or what is left of the budget), append its output
# to steps.log and "NAME<TAB>rc<TAB>seconds" to steps.tsv. A step with under 5 s left is skipped (rc 125).
step() {
    local name=$1 cap=$(($2 * CAP_SCALE)); shift 2
    local left=$((BUDGET_S - (SECONDS - started))) t0=$SECONDS rc
    local limit=$((cap < left ? cap : left))
    printf '\n== %s (limit %ss, %s) ==\n' "$name" "$limit" "$(date -u +%H:%M:%S)" >> "$log"
    if ((limit < 5)); then
        echo "skipped: the ${BUDGET_S}s budget is spent" >> "$log"; rc=125
    else
        timeout -k 10 "$limit" "$@" >> "$log" 2>&1; rc=$?
    fi
    printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" >> "$WORK/steps.tsv"
    printf '%-8s rc=%-3s %4ss\n' "$name" "$rc" "$((SECONDS - t0))"
}

env_report() {
    date -u
    if command -v nvidia-smi > /dev/null; then
        nvidia-smi
        nvidia-smi --query-gpu=name --format=csv,noheader | head -1 > "$WORK/device"
    else
        echo "nvidia-smi: not available (no NVIDIA driver here)"
        echo "cpu: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), $(nproc) cores" > "$WORK/device"
    fi
    echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "mode $mode: decoder $DECODER, backend $BACKEND, $COUNT images from $SRC, batch $BATCH"
    "$PY" -c 'import sys, numpy; print("python", sys.version.split()[0], "numpy", numpy.__version__)'
    echo "PYTHONPATH=$PYTHONPATH"
    if [[ -d "$WORK/pydeps" ]]; then echo "unpacked wheels: $(ls "$WORK/pydeps" | tr '\n' ' ')"; fi
    "$PY" -m allbatch info --json
}

# Wheels the GPU machine lacks (onnxscript, onnx-ir, simplejpeg), unzipped onto the path.
unzip_wheels "$PY" "${WHEELS:-/opt/stage/verify/wheels}" "$WORK/pydeps"

# GPU memory of the whole device (DALI's pool included) every 0.5 s while the steps run.
sampler=""
if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 500 > "$WORK/gpu-memory.csv" 2> /dev/null &
    sampler=$!
fi

# to_file FILE COMMAND...: COMMAND's stdout (and stderr) into FILE, as one command that `timeout` can run.
to_file=(bash -c 'out=$1; shift; "$@" > "$out" 2>> "$LOG"' to_file)
export LOG=$log PY WORK mode DECODER BACKEND COUNT SRC BATCH PYTHONPATH

step env 45 bash -c "$(declare -f env_report); env_report > '$OUT/env.txt' 2>&1"
step tests 100 "$PY" -m pytest -q -m gpu -p no:cacheprovider --junitxml="$OUT/gpu-tests.xml" tests
step images 20 "$PY" benchmarks/gpu_verify.py images "$SRC" "$WORK/images" --count "$COUNT"
make_fields() {  # the large-field set: 3-MP camera fields and a few 12-MP ones (2-12 MP, issue 22 point 6)
    "$PY" benchmarks/make_large_fields.py --src "$SRC" --out "$WORK/large" --count "$FIELDS" --size "$FIELD_SIZE" || return
    if ((FIELDS_12MP > 0)); then
        "$PY" benchmarks/make_large_fields.py --src "$SRC" --out "$WORK/large/12mp" --count "$FIELDS_12MP" --size 4000x3000 --seed 1
    fi
}
export FIELDS FIELDS_12MP FIELD_SIZE
step fields 30 bash -c "$(declare -f make_fields); make_fields"
step run-gpu 45 "${to_file[@]}" "$WORK/run-gpu.json" "$PY" -m allbatch run "$WORK/images" --out "$WORK/gpu.h5" \
    --decoder "$DECODER" --backend "$BACKEND" --batch-size "$BATCH" "${model_args[@]}" --quiet --json
step run-cpu 90 "${to_file[@]}" "$WORK/run-cpu.json" "$PY" -m allbatch run "$WORK/images" --out "$WORK/cpu.h5" \
    --decoder cpu --backend onnxruntime --batch-size 64 "${model_args[@]}" --quiet --json
step parity 20 "$PY" benchmarks/gpu_verify.py compare "$WORK/gpu.h5" "$WORK/cpu.h5" --json "$OUT/parity.json"
threads=$(nproc); ((threads > 16)) && threads=16  # what `allbatch run` gives the decoder (auto_decode_threads)
step speed 200 "$PY" benchmarks/gpu_verify.py speed "$WORK/images" --json "$OUT/speed.json" --decoder "$DECODER" --backend "$BACKEND" \
    --batch "$BATCH" --threads "$threads" --repeat-to "$REPEAT_TO" --rounds "$ROUNDS" --cpu-h5 "$WORK/cpu.h5" --large "$WORK/large" \
    "${model_args[@]}"
step bench 90 "$PY" -m allbatch bench "$WORK/images" --backend "$BACKEND" --decoder "$DECODER" --batch-sizes "$BATCH" \
    --repeats 2 --warmup 1 --limit "$BENCH_COUNT" --baseline-limit "$BASELINE_COUNT" --decode-threads "$threads" "${model_args[@]}" --quiet \
    --json "$OUT/bench.json"

if [[ -n "$sampler" ]]; then kill "$sampler" 2> /dev/null; wait "$sampler" 2> /dev/null; fi
BUDGET_S=$((SECONDS - started + 30))  # the summary always gets its 30 s
step summary 30 "$PY" benchmarks/gpu_verify.py summary "$WORK" "$OUT"
echo "results in $OUT ($(find "$OUT" -type f | wc -l) files)"
grep -q '"all_ok": true' "$OUT/summary.json" 2> /dev/null
rc=$?
rm -rf "$WORK"
exit "$rc"
