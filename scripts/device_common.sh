# Shared by the scripts that run on a lent GPU machine (benchmarks/gpu_verify.sh, factory/scripts/gpu_train.sh): sourced,
# from the project's root.

# device_mode SCRIPT [ARG]: set `mode` to gpu (no argument) or dry-run (--dry-run, the same steps on this CPU);
# any other argument prints SCRIPT's header comment and exits 2.
device_mode() {
    mode=gpu
    case "${2:-}" in
        --dry-run) mode=dry-run ;;
        "") ;;
        *) sed -n '2,/^$/p' "$1"; exit 2 ;;
    esac
}

# unzip_wheels PYTHON DIR DEST: unzip every wheel in DIR into DEST and put DEST first on PYTHONPATH. The GPU machine
# has no pip step and no registry; pure-Python wheels and manylinux ones (their libraries vendored inside) work
# unzipped alike. Nothing happens when DIR holds no wheel.
unzip_wheels() {
    local python=$1 dir=$2 dest=$3 wheel
    compgen -G "$dir/*.whl" > /dev/null || return 0
    for wheel in "$dir"/*.whl; do "$python" -m zipfile -e "$wheel" "$dest"; done
    export PYTHONPATH="$dest:$PYTHONPATH"
}
