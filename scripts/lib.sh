# Sourced by scripts/setup, scripts/serve and scripts/test (bash 3.2 compatible: macOS's /bin/bash).
# Sets ROOT (the repository root) and VENV, and exports ORT_DYLIB_PATH when the ONNX Runtime
# library of the venv's `onnxruntime` wheel can be found (unless the caller already set it).

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"

# Prints the path of the ONNX Runtime shared library shipped in the venv's onnxruntime package:
# libonnxruntime.so.<version> on Linux, libonnxruntime.<version>.dylib on macOS.
ort_dylib() {
    local f
    for f in "$VENV"/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* \
             "$VENV"/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.*.dylib; do
        if [ -f "$f" ]; then
            echo "$f"
            return 0
        fi
    done
    return 1
}

if [ -z "${ORT_DYLIB_PATH:-}" ]; then
    if ORT_DYLIB_PATH=$(ort_dylib); then
        export ORT_DYLIB_PATH
    else
        unset ORT_DYLIB_PATH
    fi
fi
