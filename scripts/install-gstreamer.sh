#!/usr/bin/env bash
# Install what the `gstreamer` target needs from Debian: GStreamer 1.22 with
# webrtcbin (plugins-bad), libnice's ICE element, Opus and RTP (base, good),
# and PyGObject for the system Python that runs agent/targets/gstreamer_child.py.
# Idempotent; needs root (or sudo).
#   scripts/install-gstreamer.sh
set -euo pipefail
PKGS=(python3-gi gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0
      gir1.2-gst-plugins-bad-1.0 gstreamer1.0-plugins-base
      gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-nice)
missing=()
for pkg in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "install-gstreamer.sh: need root (or sudo) to apt-get install ${missing[*]}" >&2; exit 1; }
    SUDO=sudo
  fi
  echo "install-gstreamer.sh: installing ${missing[*]}" >&2
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
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
