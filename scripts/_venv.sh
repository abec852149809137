# Sourced by app.sh and test.sh: make .venv (once) and install a requirements file into it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
fi
install_requirements() {
  # Reinstall only when the requirements file changed since the last install.
  local req=$1 stamp=.venv/.installed-$(basename "$1")
  if [ ! -f "$stamp" ] || ! cmp -s "$req" "$stamp"; then
    .venv/bin/python -m pip install --quiet -r "$req"
    cp "$req" "$stamp"
  fi
}
export GRADIO_ANALYTICS_ENABLED=False
