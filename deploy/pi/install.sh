#!/bin/sh
# Install metrogate as a systemd service on a Raspberry Pi (Raspberry Pi OS / Debian 12).
#
#   sudo deploy/pi/install.sh [--source DIR_OR_WHEEL] [--config FILE] [--no-start]
#
# Creates the system user `metrogate` (group dialout for serial ports), a venv under
# /opt/metrogate/venv, /etc/metrogate/gateway.yaml (kept if it exists), the systemd
# unit and the udev rule for stable serial adapter names. Safe to run again to
# upgrade: the configuration, keys and outbox in /var/lib/metrogate are kept.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
SOURCE=$(cd "$HERE/../.." && pwd)
CONFIG=""
START=1
PREFIX=/opt/metrogate

while [ $# -gt 0 ]; do
    case "$1" in
        --source) SOURCE=$2; shift 2 ;;
        --config) CONFIG=$2; shift 2 ;;
        --no-start) START=0; shift ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "unknown option: $1" >&2; exit 2 ;;
    esac
done

if [ "$(id -u)" -ne 0 ]; then
    echo "run as root (sudo $0)" >&2
    exit 1
fi

echo "== packages"
# python3-venv only: every dependency comes as a binary wheel (piwheels on Raspberry Pi OS
# for 32-bit arm), so no compiler is needed
apt-get install -y --no-install-recommends python3 python3-venv

echo "== user metrogate"
if ! id metrogate >/dev/null 2>&1; then
    useradd --system --user-group --groups dialout --home-dir /var/lib/metrogate \
        --no-create-home --shell /usr/sbin/nologin metrogate
else
    usermod -a -G dialout metrogate
fi

echo "== venv $PREFIX/venv from $SOURCE"
install -d -m 0755 "$PREFIX"
[ -x "$PREFIX/venv/bin/python" ] || python3 -m venv "$PREFIX/venv"
PIP="$PREFIX/venv/bin/pip"
# what is installed is a wheel, as from a release: a source tree is built into one
# first. Profiles, the demo config and the JSON schemas are in it (package data).
case "$SOURCE" in
    *.whl) WHEEL=$SOURCE ;;
    *)
        WHEELS=$(mktemp -d)
        trap 'rm -rf "$WHEELS"' EXIT
        # setuptools builds in the tree's build/ and never removes a stale file there:
        # a module deleted since the last build would end up in the wheel
        rm -rf "$SOURCE/build"
        "$PIP" wheel --disable-pip-version-check --no-deps --wheel-dir "$WHEELS" "$SOURCE"
        WHEEL=$(ls "$WHEELS"/metrogate-*.whl) ;;
esac
"$PIP" install --disable-pip-version-check --upgrade --prefer-binary "$WHEEL"
# an upgrade from a changed tree may carry the same version number: replace the files
"$PIP" install --disable-pip-version-check --force-reinstall --no-deps "$WHEEL"
if [ -d "$SOURCE/docs" ]; then
    install -d -m 0755 "$PREFIX/docs"
    cp -r "$SOURCE/docs/." "$PREFIX/docs/"
fi

echo "== configuration /etc/metrogate"
install -d -o root -g metrogate -m 0750 /etc/metrogate
if [ ! -f /etc/metrogate/gateway.yaml ]; then
    src=${CONFIG:-$SOURCE/config/examples/modbus-tcp.yaml}
    if [ ! -f "$src" ]; then
        echo "no configuration to install: give --config FILE" >&2
        exit 2
    fi
    install -o root -g metrogate -m 0640 "$src" /etc/metrogate/gateway.yaml
    echo "   installed $src as /etc/metrogate/gateway.yaml: edit it, then"
    echo "   metrogate check -c /etc/metrogate/gateway.yaml"
fi
if [ ! -f /etc/metrogate/metrogate.env ]; then
    # secrets for ${NAME} in the config (e.g. MQTT_PASSWORD=...), readable by root only
    install -o root -g root -m 0600 /dev/null /etc/metrogate/metrogate.env
fi
ln -sf "$PREFIX/venv/bin/metrogate" /usr/local/bin/metrogate

echo "== udev rule for serial adapters"
install -m 0644 "$HERE/99-metrogate-serial.rules" /etc/udev/rules.d/99-metrogate-serial.rules
udevadm control --reload-rules
udevadm trigger --subsystem-match=tty --action=add

echo "== systemd units"
install -m 0644 "$HERE/../systemd/metrogate.service" /etc/systemd/system/metrogate.service
install -m 0644 "$HERE/../systemd/metrogate-ingest.service" \
    /etc/systemd/system/metrogate-ingest.service
systemctl daemon-reload

if [ "$START" -eq 1 ]; then
    if "$PREFIX/venv/bin/metrogate" check -c /etc/metrogate/gateway.yaml; then
        systemctl enable --now metrogate.service
        echo "== started; watch it with: journalctl -u metrogate -f   and   metrogate status"
    else
        echo "== the configuration has problems (above); fix it, then: systemctl enable --now metrogate"
        exit 2
    fi
else
    echo "== installed; start with: systemctl enable --now metrogate"
fi
