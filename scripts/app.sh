#!/usr/bin/env bash
# Set up (once) and run the app on the bundled weights: http://127.0.0.1:7860
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
install_requirements requirements.txt
fetch_web_runtime
exec .venv/bin/python app.py "$@"
