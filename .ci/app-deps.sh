#!/usr/bin/env bash
# App test dependencies, called by .ci/run after `pip install -e ".[dev]"`. Idempotent.
# The browser test drives Debian's /usr/bin/chromium through Playwright's Python client;
# `playwright install` (a browser download) is never needed.
set -euo pipefail

if [ ! -x /usr/bin/chromium ]; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-liberation
fi
python3 -c "import playwright" 2>/dev/null || python3 -m pip install -q "playwright>=1.45"
/usr/bin/chromium --version 2>/dev/null
