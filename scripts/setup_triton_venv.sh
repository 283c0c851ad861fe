#!/usr/bin/env bash
# Create (or bring up to date) the separate venv that runs tritonserver and its Python backend.
# Why a separate venv: nvidia-pytriton 0.7.0 pins numpy<2, the app needs numpy>=2; Triton is a separate process anyway.
# Idempotent: re-running with the venv already matching requirements-triton.txt only checks it (a second or two).
# Usage: scripts/setup_triton_venv.sh [VENV_DIR]   (default: $TRITON_VENV or <repo>/.venv-triton)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-${TRITON_VENV:-$ROOT/.venv-triton}}"
REQ="$ROOT/requirements-triton.txt"
PYTHON="${PYTHON:-python3}"
STAMP="$VENV/.requirements-triton.sha256"

want="$(sha256sum "$REQ" | cut -d' ' -f1)"
if [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
    echo "Triton venv $VENV is up to date."
    exit 0
fi

# The wheel's Python-backend stubs exist for CPython 3.8-3.13; the venv's interpreter must match one (3.11 is what we test).
ver="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
case "$ver" in
    3.8|3.9|3.10|3.11|3.12|3.13) ;;
    *) echo "error: $PYTHON is Python $ver; nvidia-pytriton has Python-backend stubs for 3.8-3.13 only (set PYTHON=python3.11)." >&2
       exit 1 ;;
esac

if [[ ! -x "$VENV/bin/python" ]]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/pip" install --disable-pip-version-check -q -r "$REQ"
"$VENV/bin/python" - <<'PY'
import pathlib, sys, sysconfig
import numpy, onnxruntime, pytriton
server = pathlib.Path(pytriton.__file__).parent / "tritonserver"
binary = server / "bin" / "tritonserver"
stub = server / "python_backend_stubs" / ("%d.%d" % sys.version_info[:2]) / "triton_python_backend_stub"
for path in (binary, stub):
    assert path.is_file(), f"missing in the nvidia-pytriton wheel: {path}"
assert sysconfig.get_config_var("Py_ENABLE_SHARED"), "this Python has no shared libpython; the Triton stub needs one"
print(f"tritonserver: {binary}\nnumpy {numpy.__version__}, onnxruntime {onnxruntime.__version__}")
PY
echo "$want" > "$STAMP"
echo "Triton venv ready: $VENV"
