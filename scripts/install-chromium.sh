#!/bin/sh
# Install headless Chromium for the browser interop tests (tests/browser).
# Idempotent: does nothing but print the version if Chromium is already there.
# Debian/Ubuntu, run as root (CI) or with sudo available.
#   scripts/install-chromium.sh
# Browser tests are only skipped when CALLAGENT_SKIP_BROWSER=1 is set explicitly.
set -eu
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

CHROMIUM=/usr/bin/chromium

# The binary, not the package, decides: a Chromium put there by other means is used.
[ -x "$CHROMIUM" ] || apt_install chromium

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
