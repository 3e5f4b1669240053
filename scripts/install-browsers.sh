#!/bin/sh
# Install the headless browsers callagent's browser targets and tests use:
# Debian chromium (CDP) and firefox-esr (WebDriver BiDi, no geckodriver).
# Idempotent: prints the versions when both are there already.
# Debian/Ubuntu, run as root (CI) or with sudo available.
#   scripts/install-browsers.sh
# Browser tests are only skipped when CALLAGENT_SKIP_BROWSER=1 is set explicitly.
set -eu

here=$(dirname "$0")
sh "$here/install-chromium.sh"

FIREFOX=/usr/bin/firefox-esr
if [ ! -x "$FIREFOX" ]; then
    if [ "$(id -u)" -eq 0 ]; then
        SUDO=
    elif command -v sudo >/dev/null 2>&1; then
        SUDO=sudo
    else
        echo "install-browsers.sh: need root (or sudo) to apt-get install firefox-esr" >&2
        exit 1
    fi
    echo "install-browsers.sh: installing firefox-esr with apt-get" >&2
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update
    $SUDO env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends firefox-esr
fi
if [ ! -x "$FIREFOX" ]; then
    echo "install-browsers.sh: $FIREFOX still missing after install" >&2
    exit 1
fi
# Firefox gathers no ICE candidates without a default route (issue 13).
if ! ip route show default 2>/dev/null | grep -q default; then
    echo "install-browsers.sh: warning: no default route; Firefox will gather no" \
        "ICE candidates (browser:firefox calls cannot connect)" >&2
fi
"$FIREFOX" --version
