#!/usr/bin/env bash
# Set up callagent on a fresh Debian machine (Python 3.11, root): a virtualenv in
# .venv with the pinned dependencies. `--dev` adds the test tools and the Debian
# packages the tests need (headless Chromium and Firefox ESR as remote peers,
# Janus and GStreamer's webrtcbin as remote far ends, iproute2/nftables/conntrack
# for the network lab, tcpdump for the lab's capture tests and
# benchmarks/wirecheck.py). Idempotent: re-running is cheap.
set -euo pipefail
lib_name=setup
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."

usage="usage: scripts/setup.sh [--dev]"
dev=0
case "${1:-}" in
  "") ;;
  --dev) dev=1 ;;
  -h|--help) echo "$usage"; exit 0 ;;
  *) echo "setup: unknown argument ${1} ($usage)" >&2; exit 2 ;;
esac

PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
  echo "setup: callagent needs Python >= 3.11 (found $("$PY" --version 2>&1))" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  if ! "$PY" -m venv .venv 2>/dev/null; then
    rm -rf .venv
    apt_install python3-venv
    "$PY" -m venv .venv
  fi
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
if [ $dev -eq 1 ]; then
  # The ray extra too: CI runs the fleet test against a real local Ray cluster.
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev,ray]"
  # janus: the Janus target's tests launch it in a kernel-lab namespace.
  apt_install iproute2 nftables conntrack tcpdump janus
  bash scripts/install-browsers.sh
  # The gstreamer target's tests: webrtcbin through the system Python.
  bash scripts/install-gstreamer.sh
else
  .venv/bin/python -m pip install -q --disable-pip-version-check -e .
  # The built-in suite's firewall_overflow runs in the kernel lab.
  apt_install iproute2 nftables conntrack
fi
echo "setup: ready ($(.venv/bin/callagent --version))"
