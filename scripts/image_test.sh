#!/usr/bin/env bash
# The Spaces image built and run for real without a Docker engine or a registry: buildah and podman from Debian, and a
# Debian bookworm base with Python 3.11 bootstrapped from Debian's packages (no registry image can be pulled here).
#
#   1. base:  debootstrap bookworm + python3.11/venv -> localhost/bookworm-python:3.11 (once; kept for later runs)
#   2. model: `python -m pipeline build-model --source offline` on the host, as a scratch image standing in for the
#             Dockerfile's build stage (that stage needs torch), or with IMAGE_FULL=1 the Dockerfile's own build stage
#   3. image: the Dockerfile's runtime stage, unchanged except for its FROM lines (a generated Containerfile, which
#             also declares as ARGs the PIP_* variables set here, so pip in the build uses this machine's index)
#   4. run:   podman run -p 127.0.0.1:PORT:7860 with a writable /data (Spaces' persistent storage), uid 1000
#   5. query: gradio_client /match_text from the host; the query must go through Triton inside the container
#   6. stop:  podman stop (SIGTERM) -> exit 0 within the timeout
# Exits non-zero on the first failure. Needs root (rootful podman) and, once, apt-get + the Debian mirror.
#
# Settings (environment): PYTHON (host venv with gradio_client, default .venv/bin/python); IMAGE_TAG
# (default localhost/product-matcher:test); IMAGE_BASE (localhost/bookworm-python:3.11); IMAGE_REBUILD_BASE=1;
# IMAGE_FULL=1 (build the Dockerfile's build stage too, MODEL_SOURCE=offline, torch from this machine's wheel folder);
# IMAGE_SHM_SIZE (default 64m, Docker's and podman's default /dev/shm, which is what Spaces offers too: Triton fits its
# shared memory to it; with the former fixed 2 x 32 MiB it failed there and the app fell back to in-process inference);
# IMAGE_DEBIAN_MIRROR (default: the first URI of this machine's apt sources, else http://deb.debian.org/debian);
# IMAGE_RUNTIME (runc: crun refuses this machine's hybrid cgroups); IMAGE_STORAGE_DRIVER (vfs).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PY="${PYTHON:-$ROOT/.venv/bin/python}"
TAG="${IMAGE_TAG:-localhost/product-matcher:test}"
BASE="${IMAGE_BASE:-localhost/bookworm-python:3.11}"
MODEL_IMAGE="localhost/product-matcher-model:offline"
SHM="${IMAGE_SHM_SIZE:-64m}"
RUNTIME="${IMAGE_RUNTIME:-runc}"
DRIVER="${IMAGE_STORAGE_DRIVER:-vfs}"
ULIMITS=(--ulimit nofile=20000:20000 --ulimit nproc=4096:4096)  # podman's default 1048576 exceeds the hard limit here
PODMAN=(podman --storage-driver "$DRIVER")
BUILDAH=(buildah --storage-driver "$DRIVER")
WORK="$(mktemp -d /tmp/image-test.XXXXXX)"
NAME="pm-image-test-$$"
T_START=$(date +%s)

step() { echo "== [$(($(date +%s) - T_START)) s] $*"; }
fail() { echo "image-test: FAILED: $*" >&2; exit 1; }
cleanup() {
    "${PODMAN[@]}" rm -f "$NAME" >/dev/null 2>&1 || true
    if mountpoint -q "$WORK/rootfs/proc" 2>/dev/null; then umount "$WORK/rootfs/proc" || return; fi
    [[ "${IMAGE_KEEP_WORK:-0}" == 1 ]] && echo "image-test: work folder kept: $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT

# --- tools --------------------------------------------------------------------------------------------------------
[[ "$(id -u)" == 0 ]] || fail "needs root (rootful podman/buildah and debootstrap)"
missing=()
for tool in buildah podman debootstrap runc; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if ((${#missing[@]})); then
    step "installing ${missing[*]} from Debian"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah podman debootstrap runc >/dev/null \
        || { DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq buildah podman debootstrap runc >/dev/null; } \
        || fail "apt-get install buildah podman debootstrap runc"
fi
[[ -x "$PY" ]] && "$PY" -c 'import gradio_client' || fail "$PY cannot import gradio_client (make venv)"

# Package downloads inside the build use this machine's pip configuration (index, extra indexes, find-links,
# constraints) and CA bundle, mounted read-only into every RUN step and never into the image.
MOUNTS=()
for path in /etc/ssl/certs /etc/pip.conf /etc/xdg/pip /opt/pypi /opt/pypi-more /opt/wheels; do
    [[ -e "$path" ]] && MOUNTS+=(-v "$path:$path:ro")
done
# pip settings in this environment reach the RUN steps as build args, declared in the generated Containerfile.
PIP_VARS=()
ENVS=()
for var in PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_FIND_LINKS PIP_CERT PIP_DEFAULT_TIMEOUT PIP_CONSTRAINT; do
    if [[ -n "${!var:-}" ]]; then
        PIP_VARS+=("$var")
        ENVS+=(--build-arg "$var=${!var}")
    fi
done

# --- 1. base image ------------------------------------------------------------------------------------------------
if [[ "${IMAGE_REBUILD_BASE:-0}" == 1 ]] || ! "${PODMAN[@]}" image exists "$BASE"; then
    MIRROR="${IMAGE_DEBIAN_MIRROR:-}"
    if [[ -z "$MIRROR" ]]; then
        MIRROR="$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\/debian\)$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null \
            | head -1)"
        MIRROR="${MIRROR:-http://deb.debian.org/debian}"
    fi
    step "debootstrap bookworm from $MIRROR"
    ROOTFS="$WORK/rootfs"
    # debootstrap does not resolve virtual packages (python3.11-venv needs python3.11-distutils, which only
    # python3-distutils provides), so every package of the set is named.
    debootstrap --variant=minbase \
        --include=python3,python3-venv,python3-distutils,python3-lib2to3,libpython3.11,ca-certificates \
        bookworm "$ROOTFS" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
        || { tail -20 "$WORK/debootstrap.log" "$ROOTFS/debootstrap/debootstrap.log" 2>/dev/null; fail "debootstrap"; }
    SECURITY="${MIRROR%/debian}/debian-security"
    cat >"$ROOTFS/etc/apt/sources.list" <<EOF
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb $SECURITY bookworm-security main
EOF
    step "base: bookworm updates, python link, clean-up"
    mount -t proc proc "$ROOTFS/proc"
    chroot "$ROOTFS" /bin/sh -ec 'export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq; apt-get upgrade -y -qq >/dev/null
        apt-get clean; rm -rf /var/lib/apt/lists/*
        ln -sf /usr/bin/python3 /usr/local/bin/python   # the official python image has python on PATH
        python -m venv /tmp/venv-check && /tmp/venv-check/bin/pip --version && rm -rf /tmp/venv-check' \
        || { umount "$ROOTFS/proc"; fail "base image set-up in the chroot"; }
    umount "$ROOTFS/proc"
    rm -rf "$ROOTFS/debootstrap"
    : >"$ROOTFS/etc/resolv.conf"
    tar -C "$ROOTFS" -c . | "${PODMAN[@]}" import -q \
        --change 'ENV LANG=C.UTF-8' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["python3"]' - "$BASE" >/dev/null || fail "podman import of the base"
    rm -rf "$ROOTFS"
fi
step "base $BASE: $("${PODMAN[@]}" run --rm --runtime "$RUNTIME" "${ULIMITS[@]}" "$BASE" python --version)"

# --- 2./3. the image ----------------------------------------------------------------------------------------------
CONTAINERFILE="$WORK/Containerfile"
BUILD_ARGS=()
if [[ "${IMAGE_FULL:-0}" == 1 ]]; then
    # The whole Dockerfile, both stages, each FROM on the bootstrapped base.
    sed "s|^FROM python:3.11-slim-bookworm|FROM $BASE|" Dockerfile >"$CONTAINERFILE"
    BUILD_ARGS+=(--build-arg MODEL_SOURCE=offline)
else
    step "model repository: build-model --source offline (on the host, in place of the build stage)"
    rm -rf "$WORK/model"
    "$PY" -m pipeline build-model --source offline --out "$WORK/model" >"$WORK/build-model.log" 2>&1 \
        || { tail -20 "$WORK/build-model.log"; fail "build-model"; }
    ctr="$("${BUILDAH[@]}" from scratch)"
    "${BUILDAH[@]}" copy "$ctr" "$WORK/model" /src/model_repository >/dev/null
    "${BUILDAH[@]}" commit -q --rm "$ctr" "$MODEL_IMAGE" >/dev/null || fail "model image"
    # The Dockerfile's runtime stage as it is, its FROM replaced by the base, the build stage by the model image.
    grep -c '^FROM ' Dockerfile | grep -qx 2 || fail "the Dockerfile no longer has exactly two stages"
    {
        echo "FROM $MODEL_IMAGE AS build"
        awk -v base="$BASE" '/^FROM /{n++; if (n == 2) {print "FROM " base; next}} n >= 2 {print}' Dockerfile
    } >"$CONTAINERFILE"
fi
if ((${#PIP_VARS[@]})); then
    args="$(printf 'ARG %s\n' "${PIP_VARS[@]}")"  # one a line: buildah reads only the first name of `ARG A B`
    awk -v args="$args" '{print} /^FROM /{print args}' "$CONTAINERFILE" >"$CONTAINERFILE.args"
    mv "$CONTAINERFILE.args" "$CONTAINERFILE"
fi
step "buildah bud $TAG"
"${BUILDAH[@]}" bud --runtime "$RUNTIME" --network host "${ULIMITS[@]}" "${MOUNTS[@]}" "${ENVS[@]}" \
    "${BUILD_ARGS[@]}" --pull=never --format docker -f "$CONTAINERFILE" -t "$TAG" "$ROOT" \
    >"$WORK/bud.log" 2>&1 || { tail -40 "$WORK/bud.log"; fail "buildah bud"; }
# No --layers: with the vfs driver every committed layer is a full copy of the tree (1.4 GB a step), so the
# intermediate images would cost ~15 GB and more time than the pip installs they would save. The previous build's
# image, now untagged, goes too.
"${PODMAN[@]}" image prune -f >/dev/null || true
step "image $TAG: $("${PODMAN[@]}" image inspect "$TAG" --format '{{.Size}}' | awk '{printf "%.0f MB", $1 / 1e6}')"

# What `COPY . .` took from the host: the source only (.dockerignore), never its venvs, data, caches or git.
"${PODMAN[@]}" run --rm --runtime "$RUNTIME" "${ULIMITS[@]}" --health-interval disable "$TAG" bash -c '
    test "$(id -u)" = 1000 || { echo "runs as $(id -u), not 1000"; exit 1; }
    for p in .git data bench/.cache test-artifacts .pytest_cache; do test ! -e "$p" || { echo "$p was copied"; exit 1; }; done
    test -f model_repository/model_card.json && test -x .venv/bin/python && test -x .venv-triton/bin/python' \
    || fail "image contents"

# --- 4. run -------------------------------------------------------------------------------------------------------
PORT="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
mkdir -p "$WORK/data" && chown 1000 "$WORK/data"  # stands for Spaces' persistent /data
step "podman run on 127.0.0.1:$PORT (shm $SHM)"
# --health-interval disable: no systemd here to time the HEALTHCHECK; it is run once below instead.
"${PODMAN[@]}" run -d --name "$NAME" --runtime "$RUNTIME" "${ULIMITS[@]}" --shm-size "$SHM" --health-interval disable \
    -p "127.0.0.1:$PORT:7860" -v "$WORK/data:/data" "$TAG" >/dev/null || fail "podman run"
URL="http://127.0.0.1:$PORT/"
for _ in $(seq 1 180); do
    "$PY" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$URL" 2>/dev/null && break
    [[ "$("${PODMAN[@]}" inspect "$NAME" --format '{{.State.Running}}')" == true ]] \
        || { "${PODMAN[@]}" logs "$NAME" 2>&1 | tail -30; fail "the container exited before serving"; }
    sleep 1
done
"$PY" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)' "$URL" \
    || { "${PODMAN[@]}" logs "$NAME" 2>&1 | tail -30; fail "no page at $URL after 180 s"; }
step "serving at $URL"

# --- 5. query -----------------------------------------------------------------------------------------------------
"$PY" - "$URL" <<'PY' || { "${PODMAN[@]}" logs "$NAME" 2>&1 | tail -30; fail "query"; }
import sys

from gradio_client import Client

_, result = Client(sys.argv[1], verbose=False).predict("red t-shirt", api_name="/match_text")
matches = result["matches"]
assert matches, result
assert matches[0]["category"] == "T-shirts", matches[0]
print(f"query 'red t-shirt': {len(matches)} matches, top {matches[0]['name']!r} ({matches[0]['category']})")
PY
"${PODMAN[@]}" exec "$NAME" python -c '
import json, urllib.request
stats = json.load(urllib.request.urlopen("http://127.0.0.1:8000/v2/models/clip_text/stats", timeout=5))
count = stats["model_stats"][0]["inference_count"]
assert count > 0, "the query did not go through Triton"
print(f"Triton in the container: clip_text inference_count {count}")' \
    || { "${PODMAN[@]}" logs "$NAME" 2>&1 | tail -30; fail "the query did not go through Triton in the container"; }
[[ -d "$WORK/data/product-matcher/vectors" ]] || fail "the catalogue is not in the persistent /data"
"${PODMAN[@]}" healthcheck run "$NAME" || fail "the image's HEALTHCHECK reports the container unhealthy"
step "healthcheck passed"

# --- 6. stop ------------------------------------------------------------------------------------------------------
step "podman stop"
"${PODMAN[@]}" stop -t 60 "$NAME" >/dev/null || fail "podman stop"
code="$("${PODMAN[@]}" inspect "$NAME" --format '{{.State.ExitCode}}')"
"${PODMAN[@]}" logs "$NAME" >"$WORK/container.log" 2>&1 || true
[[ "$code" == 0 ]] || { tail -30 "$WORK/container.log"; fail "the container exited with $code on SIGTERM"; }
grep -q "Stopping Triton" "$WORK/container.log" || { tail -30 "$WORK/container.log"; fail "Triton was not stopped"; }
step "image test passed: built, run, queried through Triton, stopped with exit 0"
