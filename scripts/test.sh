#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need (Debian packages for
# ffmpeg/ffprobe and GStreamer's RTSP server; moto_server from PyPI as the S3 test server),
# then runs fmt, clippy and every test. Heavy tests start their own servers on 127.0.0.1.
#
# CARGO_TARGET_DIR defaults to a cache outside the clone so reruns (and CI) build incrementally.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/camrec-target}"
export CARGO_TERM_COLOR=never
mkdir -p "$CARGO_TARGET_DIR"

need_apt=()
command -v ffprobe >/dev/null || need_apt+=(ffmpeg)
/usr/bin/python3 -c 'import gi; gi.require_version("GstRtspServer", "1.0")' 2>/dev/null \
  || need_apt+=(python3-gi python3-gst-1.0 gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp)
dpkg -s gstreamer1.0-plugins-bad >/dev/null 2>&1 \
  || need_apt+=(gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-libav)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "test.sh: installing ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
if ! command -v moto_server >/dev/null; then
  echo "test.sh: installing moto[server]"
  python3 -m pip install -q 'moto[server]'
  hash -r
fi


cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo build --workspace --bins --locked
export CAMREC_BIN="$CARGO_TARGET_DIR/debug/camrec"
cargo test --workspace --locked -- --test-threads 2
