# shellcheck shell=sh
# Shared by the scripts in scripts/: install the Debian packages that are missing.
# POSIX sh, so the /bin/sh installers can source it as well as the bash ones:
#   . "$(dirname "$0")/lib.sh"     # $0 is the running script, so any cwd works
# Messages start with $lib_name (default: the running script's file name).
lib_name=${lib_name:-$(basename "$0")}

# Print the packages among "$@" that dpkg does not list as installed.
apt_missing() {
    _missing=
    for _pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$_pkg" 2>/dev/null | grep -q "install ok installed" \
            || _missing="$_missing${_missing:+ }$_pkg"
    done
    printf '%s' "$_missing"
}

# apt-get install the packages among "$@" that are missing; a no-op when none is.
# Needs root or sudo; without either: one line on stderr and exit 1. The update
# first, because a fresh Debian (a CI image) has no package lists cached.
apt_install() {
    _missing=$(apt_missing "$@")
    [ -n "$_missing" ] || return 0
    if [ "$(id -u)" -eq 0 ]; then
        _sudo=
    elif command -v sudo >/dev/null 2>&1; then
        _sudo=sudo
    else
        echo "$lib_name: need root (or sudo) to apt-get install $_missing" >&2
        exit 1
    fi
    echo "$lib_name: installing $_missing with apt-get" >&2
    # Unquoted on purpose: $_sudo may be empty, $_missing is a list of names.
    # shellcheck disable=SC2086
    $_sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    # shellcheck disable=SC2086
    $_sudo env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends $_missing >/dev/null
}
