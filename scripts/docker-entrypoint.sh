#!/usr/bin/env bash
# Container entry (Hugging Face Spaces): tritonserver on loopback serves the model repository, the app talks to it.
# If Triton cannot start, the app still serves with in-process inference (TRITON_FALLBACK=local) and says so.
# Runs as is on any machine with the venvs in place, which is how the tests exercise it.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
TRITON_HTTP_PORT="${TRITON_HTTP_PORT:-8000}"
TRITON_GRPC_PORT="${TRITON_GRPC_PORT:-8001}"
TRITON_METRICS_PORT="${TRITON_METRICS_PORT:-8002}"
DEMO_CATALOG="${DEMO_CATALOG:-assets/demo_catalog/catalog.jsonl}"
# Hugging Face Spaces mounts its persistent storage at /data: the catalogue lives there when it is writable, so it
# survives a restart; else under the home folder (lost with the container), and the page says which.
PERSISTENT_DIR="${PERSISTENT_DIR:-/data}"
if [[ -d "$PERSISTENT_DIR" && -w "$PERSISTENT_DIR" ]]; then
    export DATA_DIR="$PERSISTENT_DIR/product-matcher" DATA_PERSISTENT=1
else
    export DATA_PERSISTENT=0
fi

triton_pid=""
app_pid=""
stop() {
    trap - TERM INT
    [[ -n "$app_pid" ]] && kill -TERM "$app_pid" 2>/dev/null && wait "$app_pid" 2>/dev/null
    [[ -n "$triton_pid" ]] && kill -TERM "$triton_pid" 2>/dev/null && wait "$triton_pid" 2>/dev/null
    exit 0
}
trap stop TERM INT

"$PY" -m pipeline triton --http-port "$TRITON_HTTP_PORT" --grpc-port "$TRITON_GRPC_PORT" \
    --metrics-port "$TRITON_METRICS_PORT" &
triton_pid=$!
export TRITON_URL="http://127.0.0.1:${TRITON_HTTP_PORT}"
export TRITON_FALLBACK="${TRITON_FALLBACK:-local}"
for _ in $(seq 1 240); do
    if "$PY" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)" \
        "$TRITON_URL/v2/health/ready" 2>/dev/null; then
        break
    fi
    if ! kill -0 "$triton_pid" 2>/dev/null; then
        echo "entrypoint: Triton did not start; serving with in-process inference instead." >&2
        triton_pid=""
        unset TRITON_URL
        break
    fi
    sleep 0.5
done

"$PY" -m pipeline ingest "$DEMO_CATALOG" --if-empty
"$PY" -m app &
app_pid=$!
wait "$app_pid"
stop
