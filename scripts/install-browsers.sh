#!/bin/sh
# Install the headless browsers callagent's browser targets and tests use:
# Debian chromium (CDP) and firefox-esr (WebDriver BiDi, no geckodriver).
# Idempotent: prints the versions when both are there already.
# Debian/Ubuntu, run as root (CI) or with sudo available.
#   scripts/install-browsers.sh
# Browser tests are only skipped when CALLAGENT_SKIP_BROWSER=1 is set explicitly.
set -eu
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

sh "$(dirname "$0")/install-chromium.sh"

FIREFOX=/usr/bin/firefox-esr
[ -x "$FIREFOX" ] || apt_install firefox-esr
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
