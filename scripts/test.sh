#!/usr/bin/env bash
# The one test command (README and .ci/run call it):  bash scripts/test.sh [PYTEST ARGS...]
#
# Installs the test extras into the active Python, a Chromium for the browser
# tests when none is found (Debian's, without its Recommends), then runs pytest.
#
# Environment:
#   PYTHON                  interpreter to install into and test with (default: python3,
#                           whichever is active: a venv's, pyenv's, the system's)
#   PYTEST_WORKERS          pytest-xdist workers (default 2; 0 runs the tests in one process)
#   APT_LOCK_TIMEOUT_S      how long apt waits for another apt/dpkg to let go of its lock
#                           (unattended-upgrades on a fresh VM), default 300; then apt fails
#   CHAOSSTREAM_CHROMIUM    the browser to use; nothing is installed then
#   PIP_BREAK_SYSTEM_PACKAGES=1
#                           pip's own switch to install into an externally-managed system
#                           Python (PEP 668) anyway, e.g. in a throwaway CI container
set -euo pipefail

PYTHON=${PYTHON:-python3}
PYTEST_WORKERS=${PYTEST_WORKERS:-2}
APT_LOCK_TIMEOUT_S=${APT_LOCK_TIMEOUT_S:-300}
# Without Recommends Debian's chromium is 25 packages, not 115 (479 MB installed, with
# avahi, samba, cups, perl); fonts-liberation is the one Recommends worth keeping: the
# metric-compatible Arial/Times/Courier that pages name.
CHROMIUM_PACKAGES=(chromium fonts-liberation)

say() { echo "scripts/test.sh: $*" >&2; }

apt_get() {
    local sudo=()
    [ "$(id -u)" = 0 ] || sudo=(sudo)
    ${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive \
        apt-get -q -o DPkg::Lock::Timeout="$APT_LOCK_TIMEOUT_S" "$@"
}

# `apt-get update` holds the lists lock, which DPkg::Lock::Timeout does not cover (apt
# 2.6 fails at once): wait for it here, as long as apt waits for the dpkg lock.
apt_update() {
    local deadline=$((SECONDS + APT_LOCK_TIMEOUT_S)) out
    until out=$(apt_get update 2>&1); do
        if ! grep -q "Could not get lock" <<<"$out" || [ "$SECONDS" -ge "$deadline" ]; then
            printf '%s\n' "$out" >&2
            return 1
        fi
        sleep 2
    done
    printf '%s\n' "$out"
}

install_chromium() {
    if ! command -v apt-get >/dev/null 2>&1; then
        say "no Chromium found and no apt-get to install one: install Chrome or Chromium," \
            "run '$PYTHON -m playwright install chromium', or set CHAOSSTREAM_CHROMIUM"
        return 1
    fi
    apt_update
    apt_get install -y --no-install-recommends "${CHROMIUM_PACKAGES[@]}"
}

# pip into an externally-managed system Python (PEP 668) fails, and --user would hide
# the install in ~/.local: say how to proceed instead of working around it silently.
check_python() {
    "$PYTHON" - <<'EOF'
import os
import sys
import sysconfig

venv = sys.prefix != sys.base_prefix
marker = os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")
if not venv and os.path.exists(marker) and not os.environ.get("PIP_BREAK_SYSTEM_PACKAGES"):
    print(
        f"scripts/test.sh: {sys.executable} is an externally-managed system Python (PEP 668); "
        "use a venv (python3 -m venv .venv && . .venv/bin/activate && bash scripts/test.sh) "
        "or set PIP_BREAK_SYSTEM_PACKAGES=1 to install into it anyway",
        file=sys.stderr,
    )
    sys.exit(2)
print(f"scripts/test.sh: installing into {sys.executable} ({sys.prefix})", file=sys.stderr)
EOF
}

# The browser tests find their browser as `chaosstream check --browser` does.
find_browser() {
    "$PYTHON" - <<'EOF'
import asyncio

import sys

from chaosstream.clients.browser import PageDriver
from chaosstream.yamlfile import InputError


async def main() -> None:
    driver = PageDriver()
    await driver.start()
    print(driver.executable)
    await driver.close()


try:
    asyncio.run(main())
except InputError as e:
    sys.exit(f"scripts/test.sh: {e}")
EOF
}

# The JavaScript clients the tests drive (tests/node: the `ai` package's own UI message
# stream reader), exactly as pinned in its package-lock.json.
install_node_clients() {
    if ! command -v npm >/dev/null 2>&1; then
        say "npm not found: the Vercel AI SDK tests need Node.js 20+ and npm (apt-get install nodejs npm)"
        return 1
    fi
    npm ci --prefix tests/node --no-audit --no-fund --loglevel=error
}

main() {
    cd "$(dirname "${BASH_SOURCE[0]}")/.."
    check_python
    "$PYTHON" -m pip install -q -e '.[test]'
    install_node_clients
    local browser
    if ! browser=$(find_browser 2>/dev/null); then
        say "no browser for the browser tests yet: installing Debian's chromium"
        install_chromium
        browser=$(find_browser)
    fi
    say "browser tests use $browser"
    # Two workers, a test file each at a time (its module fixtures are built once): most
    # tests wait on sockets, subprocesses and a browser, so one process left a core idle.
    # pytest-benchmark, where some other package installed it, warns that xdist turns it
    # off, and the suite makes warnings errors: it is not ours, so it is left out.
    "$PYTHON" -m pytest -p no:benchmark -n "$PYTEST_WORKERS" --dist loadfile "$@"
}

# Sourcing the file (tests do) defines the functions without running anything.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    main "$@"
fi
