#!/usr/bin/env bash
# Install everything the test suite needs (Python test extras, Debian's Chromium
# for the browser checks) and run the whole suite. README and CI both call this.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium
fi

python3 -m pip install -q -e '.[test]'
python3 -m pytest "$@"
