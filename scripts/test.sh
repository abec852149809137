#!/usr/bin/env bash
# Set up (once) and run every test: unit tests, training tests, the API and the real-browser test.
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
install_requirements requirements.txt
install_requirements requirements-dev.txt
if [ ! -x /usr/bin/chromium ]; then
  # The browser test drives Debian's Chromium; Playwright never downloads a browser here.
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null
fi
exec .venv/bin/python -m pytest "$@"
