#!/usr/bin/env bash
# Debian packages the tests and the demo need, installed only when missing:
#   ffmpeg (ffmpeg + ffprobe: session audio in any container/rate -> 16 kHz mono for ASR)
#   espeak-ng (speech for generated session fixtures and the ASR bench)
#   libreoffice-writer-nogui (soffice: the built document's LibreOffice conversion check)
#   poppler-utils (pdftoppm: a rendered page of the demo document)
#   chromium (/usr/bin/chromium: tests/ui drive the Dagster UI in it through Playwright, which downloads no browser)
set -euo pipefail
need=()
command -v ffmpeg >/dev/null 2>&1 && command -v ffprobe >/dev/null 2>&1 || need+=(ffmpeg)
command -v espeak-ng >/dev/null 2>&1 || need+=(espeak-ng)
command -v soffice >/dev/null 2>&1 || need+=(libreoffice-writer-nogui)
command -v pdftoppm >/dev/null 2>&1 || need+=(poppler-utils)
[ -x /usr/bin/chromium ] || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null 2>&1; then
  echo "system-deps: please install: ${need[*]} (apt-get install ${need[*]})" >&2
  exit 1
fi
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
echo "system-deps: installing ${need[*]}" >&2
$SUDO apt-get install -y -q "${need[@]}" >/dev/null 2>&1 || {
  $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q "${need[@]}" >/dev/null
}
