#!/usr/bin/env bash
# Generates the committed test clips served by `camrec fake-cameras` (node/src/fake/), which
# embeds them with include_bytes!. Synthetic only (testsrc2 + sine), no third-party footage.
#   node/clips/h264_aac.mp4  H.264 Main, 640x360 25 fps, 10.24 s, closed 1 s GOP, no B-frames, AAC 48 kHz mono
#   node/clips/h265_aac.mp4  H.265 Main, same timing, parameter sets repeated before each IRAP
# Closed GOPs and no B-frames keep RTP timestamps monotonic in sending order and give the recorder
# a key frame every second; ~10 s at low bitrate keeps each file well under 600 KB.
# 10.24 s = 256 video frames = 480 AAC frames of 1024 samples at 48 kHz: a whole number of frames in
# both clocks, so the fake cameras loop seamlessly (the encoder's priming frame is trimmed via the
# edit list when the clip is loaded).
# Usage: scripts/make-clips.sh [OUTDIR] [SECONDS]   (needs Debian's ffmpeg with libx264/libx265)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$here/node/clips}; secs=${2:-10.24}
mkdir -p "$out"
src=(-f lavfi -i "testsrc2=size=640x360:rate=25" -f lavfi -i "sine=frequency=440:sample_rate=48000")
aud=(-c:a aac -b:a 32k -ac 1 -ar 48000)
common=(-nostdin -v error -y -fflags +bitexact)
ffmpeg "${common[@]}" "${src[@]}" -t "$secs" -c:v libx264 -profile:v main -bf 0 -g 25 -keyint_min 25 \
  -sc_threshold 0 -flags +cgop -b:v 300k -maxrate 300k -bufsize 600k -pix_fmt yuv420p \
  "${aud[@]}" -map_metadata -1 -movflags +faststart "$out/h264_aac.mp4"
ffmpeg "${common[@]}" "${src[@]}" -t "$secs" -c:v libx265 \
  -x265-params "keyint=25:min-keyint=25:scenecut=0:bframes=0:open-gop=0:repeat-headers=1:log-level=error" \
  -b:v 300k -pix_fmt yuv420p -tag:v hvc1 "${aud[@]}" -map_metadata -1 -movflags +faststart "$out/h265_aac.mp4"
ls -l "$out"
