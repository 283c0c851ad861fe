#!/usr/bin/env bash
# Install Debian's chromium (and its driver) for the browser tests, unless it is already there.
# Never a browser download from a test tool: only the distribution's packages are reachable on our machines.
set -euo pipefail
if [[ -x /usr/bin/chromium ]]; then
    exit 0
fi
SUDO=""
if [[ "$(id -u)" != 0 ]]; then
    if command -v sudo >/dev/null; then
        SUDO="sudo"
    else
        echo "chromium is missing and this user cannot apt-get install it; the browser tests will be skipped." >&2
        exit 0
    fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core >/dev/null
/usr/bin/chromium --version
