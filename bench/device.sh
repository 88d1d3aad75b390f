#!/usr/bin/env bash
# The suite on the NVIDIA machine of the `device` tool (bench/README.md). That machine has python3 with
# numpy, onnx, onnxruntime, grpcio, pandas and matplotlib, but no cargo, no apt and no network: the rest
# travels in one gitignored folder, bench/results/tmp/bundle (about 45 MB; a call carries 64 MiB).
#   here:  bench/device.sh bundle               # builds, then fills the bundle
#   there: bench/device.sh run [suite arguments]  # with carry ["bench/results/tmp/bundle"]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B="$ROOT/bench/results/tmp/bundle"
cd "$ROOT"

bundle() {
    scripts/setup
    cargo build --release -q -p nereid-onnxruntime --example ort_inprocess
    rm -rf "$B"
    mkdir -p "$B/bin" "$B/libexec" "$B/lib" "$B/wheels"
    cp target/release/nereid target/release/examples/ort_inprocess "$B/bin/"
    strip "$B/bin/nereid" "$B/bin/ort_inprocess"
    # Debian's wrk and nginx with their libraries beyond glibc, behind wrappers that point at them.
    for tool in wrk nginx; do
        cp "$(PATH="$PATH:/usr/sbin" command -v $tool)" "$B/libexec/"
        printf '#!/bin/sh\nd=$(dirname "$0")/..\nLD_LIBRARY_PATH="$d/lib" exec "$d/libexec/%s" "$@"\n' $tool > "$B/bin/$tool"
        chmod +x "$B/bin/$tool"
    done
    ldd "$B/libexec/wrk" "$B/libexec/nginx" | awk '/=> \// {print $3}' | sort -u |
        grep -v -E '/lib(c|m|pthread|dl|gcc_s)\.so' | xargs -I{} cp -L {} "$B/lib/"
    platforms=""
    for n in 5 17 24 27 28 31 34 35 38; do platforms="$platforms --platform manylinux_2_${n}_x86_64"; done
    platforms="$platforms --platform manylinux2014_x86_64 --platform manylinux1_x86_64"  # older wheels name only these
    python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp $platforms \
        -d "$B/wheels" $(grep -E '^(mlserver|uvloop)==' bench/requirements.txt) perf-analyzer==2.60.0
    # Large and already there (the device README's package list): that machine's own copies serve.
    rm -f "$B"/wheels/{numpy,pandas,grpcio,ml_dtypes,onnxruntime}-*.whl
    du -sh "$B"
}

run() {
    local site=/tmp/bench-site
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$B"/wheels/*.whl
    export PYTHONPATH="$site" PATH="$B/bin:$PATH"
    export NEREID_BIN="$B/bin/nereid" ORT_INPROCESS_BIN="$B/bin/ort_inprocess"
    export PERF_ANALYZER="$site/perf_analyzer/bin/perf_analyzer"
    chmod +x "$PERF_ANALYZER"
    # Nereid and MLServer both run that machine's onnxruntime.
    ORT_DYLIB_PATH=$(python3 -c 'import glob, os, onnxruntime as o; print(glob.glob(os.path.dirname(o.__file__) + "/capi/libonnxruntime.so.*")[0])')
    export ORT_DYLIB_PATH
    mkdir -p /var/lib/nginx /var/log/nginx  # paths compiled into Debian's nginx
    python3 examples/make_models.py
    exec python3 bench/suite.py "$@"
}

case "${1:-}" in
    bundle) bundle ;;
    run) shift; run "$@" ;;
    *) echo "usage: bench/device.sh bundle | run [suite arguments]" >&2; exit 2 ;;
esac
