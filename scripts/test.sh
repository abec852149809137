#!/usr/bin/env bash
# Set up (once) and run every test: unit tests, training tests, the API and the real-browser test.
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
install_requirements requirements.txt
install_requirements requirements-train.txt
install_requirements requirements-dev.txt
# The browser test drives Debian's Chromium (Playwright never downloads a browser here); npm fetches
# ONNX Runtime Web for the in-browser renderer, node runs the JS twins in tests.
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
# the app's ✏️ and 🎲: without a colour emoji font, headless Chromium draws them as empty boxes
dpkg -s fonts-noto-color-emoji >/dev/null 2>&1 || missing+=(fonts-noto-color-emoji)
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
fetch_web_runtime
exec .venv/bin/python -m pytest "$@"
