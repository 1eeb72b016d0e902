#!/usr/bin/env bash
# The whole test suite from nothing: installs the real services the tests start
# (Mosquitto, InfluxDB 1.x, VictoriaMetrics), Chromium for the browser tests, and the
# Python environment, then runs
# lint (ruff), types (mypy), the import rules (import-linter) and pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
[ -x /usr/sbin/mosquitto ] || command -v mosquitto >/dev/null || missing+=(mosquitto)
[ -x /usr/bin/influxd ] || command -v influxd >/dev/null || missing+=(influxdb)
[ -x /usr/bin/victoria-metrics ] || command -v victoria-metrics >/dev/null || missing+=(victoria-metrics)
# the console's browser tests drive Debian's Chromium through Playwright (no browser download)
# (and the Chinese pages need a CJK font to be read on their screenshots)
[ -x /usr/bin/chromium ] || missing+=(chromium)
dpkg -s fonts-noto-cjk >/dev/null 2>&1 || missing+=(fonts-noto-cjk)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "installing ${missing[*]} (the tests start their own instances on free loopback ports)"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

py=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$py" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/lint-imports --no-cache
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
