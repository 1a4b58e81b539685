#!/usr/bin/env bash
# System packages some tests need (headless Chromium for the live-page test). Installed from
# Debian's packages when missing and we are root; otherwise those tests skip with a reason.
set -uo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 ||
   (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium chromium-driver >/dev/null 2>&1)) ||
    echo "note: could not install chromium/chromium-driver; the browser test will skip" >&2
fi
exit 0
