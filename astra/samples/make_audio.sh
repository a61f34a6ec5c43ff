#!/usr/bin/env bash
# How session_audio.wav was made (kept in the repo: a fresh machine may lack espeak-ng).
# One sentence at a time with 0.7 s of silence after each, as a speaker pauses between sentences
# (spoken as one stream, espeak-ng runs sentences together and the recognizer's VAD cannot cut them).
set -euo pipefail
cd "$(dirname "$0")"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
inputs=() filters="" n=0
while IFS= read -r sentence; do
  [ -n "$sentence" ] || continue
  espeak-ng -v en-us+f2 -s 140 -w "$tmp/$n.wav" "$sentence"
  inputs+=(-i "$tmp/$n.wav")
  filters+="[$n]apad=pad_dur=0.7[s$n];"
  n=$((n + 1))
done < <(sed 's/\. /.\n/g' session_transcript.txt)
concat=""
for i in $(seq 0 $((n - 1))); do concat+="[s$i]"; done
ffmpeg -y -loglevel error "${inputs[@]}" -filter_complex "${filters}${concat}concat=n=$n:v=0:a=1" \
  -ar 16000 -ac 1 -sample_fmt s16 -bitexact session_audio.wav
