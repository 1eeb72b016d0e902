#!/usr/bin/env bash
# The demo from nothing: creates the Python environment, then runs `metrogate demo`
# (simulated instruments, embedded broker, gateway, verifying receiver, live view).
# Extra arguments go to `metrogate demo` (see `metrogate demo --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$py" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[demo]'
exec .venv/bin/metrogate demo "$@"
