#!/usr/bin/env bash
# Install what the `gstreamer` target needs from Debian: GStreamer 1.22 with
# webrtcbin (plugins-bad), libnice's ICE element, Opus and RTP (base, good),
# and PyGObject for the system Python that runs agent/targets/gstreamer_child.py.
# Idempotent; needs root (or sudo).
#   scripts/install-gstreamer.sh
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
PKGS=(python3-gi gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0
      gir1.2-gst-plugins-bad-1.0 gstreamer1.0-plugins-base
      gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-nice)
apt_install "${PKGS[@]}"
/usr/bin/python3 - <<'PY'
import gi
gi.require_version("Gst", "1.0")
from gi.repository import Gst
Gst.init(None)
missing = [e for e in ("webrtcbin", "nicesrc", "opusenc", "rtpopuspay") if Gst.ElementFactory.find(e) is None]
if missing:
    raise SystemExit(f"install-gstreamer.sh: GStreamer lacks {', '.join(missing)}")
print(f"install-gstreamer.sh: {Gst.version_string()} with webrtcbin")
PY
