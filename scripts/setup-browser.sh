#!/usr/bin/env bash
# Install what the browser test (tests/test_browser_search.py) needs: Debian's `chromium` (apt) and the
# Playwright Python package (pip, in the `test` extra). Playwright drives the system Chromium through
# `executable_path`, so `playwright install` (which downloads browsers) is never run.
# Idempotent and quiet: does nothing when both are present. Run by scripts/setup.sh.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x "$PY" ] || PY="${PYTHON:-python3}"

have_chromium() {
    [ -x "${HYBRIDTOWER_CHROMIUM:-/usr/bin/chromium}" ] || command -v chromium >/dev/null 2>&1
}

if ! have_chromium; then
    if command -v apt-get >/dev/null 2>&1; then
        SUDO=""
        if [ "$(id -u)" -ne 0 ]; then
            if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; fi
        fi
        if [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; then
            echo "setup-browser: installing chromium with apt-get" >&2
            export DEBIAN_FRONTEND=noninteractive
            $SUDO apt-get update -qq >/dev/null 2>&1 || true
            $SUDO apt-get install -y -qq chromium >/dev/null 2>&1 \
                || echo "setup-browser: apt-get install chromium failed" >&2
        fi
    fi
    if ! have_chromium; then
        echo "setup-browser: chromium is not installed and could not be installed here (needs apt and root)." >&2
        echo "  Install it (apt-get install chromium), or point HYBRIDTOWER_CHROMIUM at a Chromium binary;" >&2
        echo "  without it tests/test_browser_search.py FAILS unless HYBRIDTOWER_SKIP_BROWSER_TEST=1." >&2
    fi
fi

if ! "$PY" -c "import playwright.sync_api" >/dev/null 2>&1; then
    echo "setup-browser: installing playwright (pip)" >&2
    if [ -f constraints.txt ]; then
        "$PY" -m pip install -q -c constraints.txt playwright >/dev/null 2>&1 \
            || echo "setup-browser: pip install playwright failed" >&2
    else
        "$PY" -m pip install -q playwright >/dev/null 2>&1 || echo "setup-browser: pip install playwright failed" >&2
    fi
fi
exit 0
