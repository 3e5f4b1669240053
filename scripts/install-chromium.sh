#!/bin/sh
# Install headless Chromium for the browser interop tests (tests/browser).
# Idempotent: does nothing but print the version if Chromium is already there.
# Debian/Ubuntu, run as root (CI) or with sudo available.
#   scripts/install-chromium.sh
# Browser tests are only skipped when CALLAGENT_SKIP_BROWSER=1 is set explicitly.
set -eu

CHROMIUM=/usr/bin/chromium

if [ ! -x "$CHROMIUM" ]; then
    if [ "$(id -u)" -eq 0 ]; then
        SUDO=
    elif command -v sudo >/dev/null 2>&1; then
        SUDO=sudo
    else
        echo "install-chromium.sh: need root (or sudo) to apt-get install chromium" >&2
        exit 1
    fi
    echo "install-chromium.sh: installing chromium with apt-get" >&2
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update
    $SUDO env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends chromium
fi

if [ ! -x "$CHROMIUM" ]; then
    echo "install-chromium.sh: $CHROMIUM still missing after install" >&2
    exit 1
fi

# Ask the real binary (the Debian wrapper sources /etc/chromium.d and can be noisy).
if [ -x /usr/lib/chromium/chromium ]; then
    /usr/lib/chromium/chromium --version
else
    "$CHROMIUM" --version
fi
