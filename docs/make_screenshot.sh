#!/usr/bin/env bash
# `make screenshot`: a backend with a hazard package (storm 140 + aqueduct 379 + admin-1, from the
# offline sample mirror unless CCGAUTOPKG_SOURCE_MIRROR names one), a real QGIS under Xvfb with the
# plugin enabled in a fresh profile, the package loaded through the plugin's panel at QGIS's
# default dock width (298 px); writes docs/screenshot.png.
set -euo pipefail
cd "$(dirname "$0")/.."
BOUNDARY=${BOUNDARY:-tanzania}
PROCESSORS=${PROCESSORS:-storm.global_mosaics_version_1 wri_aqueduct.version_2 natural_earth_admin1.version_1}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

port=$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port"
export CCGAUTOPKG_DATA_DIR="$work/data"
if [ -z "${CCGAUTOPKG_SOURCE_MIRROR:-}" ]; then
    .venv/bin/python -m processors.samples "$work/sources" > /dev/null
    export CCGAUTOPKG_SOURCE_MIRROR="$work/sources"
fi
.venv/bin/autopkg serve --port "$port" > "$work/serve.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 600); do curl -sf "$url/v1/readiness" > /dev/null && break; sleep 0.2; done
curl -sf "$url/v1/readiness" > /dev/null || { cat "$work/serve.log"; exit 1; }
args=(); for p in $PROCESSORS; do args+=(--processor "$p"); done
.venv/bin/autopkg jobs submit --url "$url" --boundary "$BOUNDARY" "${args[@]}" --wait

profile="$work/profiles/default"
make -s plugin-dev-install QGIS_PROFILE="$profile"
QT_QPA_PLATFORM=offscreen /usr/bin/python3 -c "
from PyQt5.QtCore import QSettings
s = QSettings('$profile/QGIS/QGIS3.ini', QSettings.IniFormat)
s.setValue('ccg_autopkg/backend_url', '$url')
s.setValue('ccg_autopkg/cache_dir', '$work/cache')
s.sync()"

display=:$((90 + RANDOM % 100))
Xvfb "$display" -screen 0 1600x1000x24 > /dev/null 2>&1 &
pids+=($!)
sleep 1
DISPLAY=$display QT_QPA_PLATFORM=xcb CCGAUTOPKG_SCREENSHOT_BOUNDARY="$BOUNDARY" CCGAUTOPKG_SCREENSHOT_OUT="$PWD/docs/screenshot.png" \
    timeout 300 qgis --nologo --noversioncheck --profiles-path "$work" --code docs/screenshot_qgis.py
test -s docs/screenshot.png
echo "docs/screenshot.png"
