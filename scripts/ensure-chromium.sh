#!/usr/bin/env bash
# Make sure a headless Chromium and its WebDriver are installed: the transcript browser's
# end-to-end tests (tests/web/ui/test_browser.py) drive Debian's chromium through
# chromium-driver (Selenium). Installs the Debian packages when either is missing.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "installing chromium and chromium-driver (Debian packages)..." >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium chromium-driver >/dev/null
    exit 0
fi
echo "chromium and chromedriver are not installed and apt-get is not available: install" >&2
echo "Chromium and its WebDriver (chromedriver) so both are on PATH, then run 'make test' again." >&2
exit 1
