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
fetch_web_runtime() {
  # ONNX Runtime Web for rendering in the browser (npm pack, integrity-checked; cached, so later runs
  # return at once). Without it everything still works: drawings render on the server.
  .venv/bin/python -m p2p_demo fetch-web-runtime || echo "warning: rendering in the browser is off" >&2
}
