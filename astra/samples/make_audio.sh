#!/usr/bin/env bash
# How session_audio.wav was made (kept in the repo: a fresh machine may lack espeak-ng).
set -euo pipefail
cd "$(dirname "$0")"
text="$(cat session_transcript.txt)"
espeak-ng -v en-us -s 150 -w /tmp/astra-session-22k.wav "$text"
sox /tmp/astra-session-22k.wav -r 16000 -c 1 -b 16 session_audio.wav
rm -f /tmp/astra-session-22k.wav
