#!/usr/bin/env bash
# Debian packages the tests and the demo need, installed only when missing:
#   ffmpeg (ffmpeg + ffprobe: session audio in any container/rate -> 16 kHz mono for ASR)
#   espeak-ng (speech for generated session fixtures and the ASR bench)
#   libreoffice-writer-nogui (soffice: the built document's LibreOffice conversion check)
#   poppler-utils (pdftoppm: a rendered page of the demo document)
# and, where it can be installed, chromium (/usr/bin/chromium: tests/ui drive the Dagster UI in it through
# Playwright, which downloads no browser). Without it those tests skip, saying why; the others are required.
set -euo pipefail
need=()
command -v ffmpeg >/dev/null 2>&1 && command -v ffprobe >/dev/null 2>&1 || need+=(ffmpeg)
command -v espeak-ng >/dev/null 2>&1 || need+=(espeak-ng)
command -v soffice >/dev/null 2>&1 || need+=(libreoffice-writer-nogui)
command -v pdftoppm >/dev/null 2>&1 || need+=(poppler-utils)
want=()
[ -x /usr/bin/chromium ] || want+=(chromium)
[ ${#need[@]} -eq 0 ] && [ ${#want[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null 2>&1; then
  [ ${#want[@]} -gt 0 ] && echo "system-deps: cannot install ${want[*]}: the browser tests (tests/ui) will skip" >&2
  [ ${#need[@]} -eq 0 ] && exit 0
  echo "system-deps: please install: ${need[*]} (apt-get install ${need[*]})" >&2
  exit 1
fi
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
install() {
  $SUDO apt-get install -y -q "$@" >/dev/null 2>&1 || {
    $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q "$@" >/dev/null
  }
}
if [ ${#need[@]} -gt 0 ]; then
  echo "system-deps: installing ${need[*]}" >&2
  install "${need[@]}"
fi
if [ ${#want[@]} -gt 0 ]; then
  echo "system-deps: installing ${want[*]}" >&2
  install "${want[@]}" || echo "system-deps: could not install ${want[*]}: the browser tests (tests/ui) will skip" >&2
fi
exit 0
