"""Every example config is a test case: it must load without errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config.loader import load_config

EXAMPLES = Path(__file__).resolve().parents[2] / "config" / "examples"
# ingest.yaml configures the platform ingest service, not a gateway
CONFIGS = sorted(p for p in EXAMPLES.glob("*.yaml") if p.name != "ingest.yaml")


def test_there_are_examples() -> None:
    assert {"demo.yaml", "modbus-tcp.yaml"} <= {p.name for p in CONFIGS}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_example_loads(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the examples' own ${NAME:-default} defaults apply, not this machine's environment
    monkeypatch.delenv("METROGATE_PROFILES", raising=False)
    for name in ("MQTT_USER", "MQTT_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    loaded = load_config(path)
    assert loaded.config.gateway.id
    for device in loaded.config.devices:
        assert device.id


def test_modbus_tcp_example_covers_what_it_shows() -> None:
    cfg = load_config(EXAMPLES / "modbus-tcp.yaml").config
    analyser, feeder = cfg.devices
    specs = {s.id: s for s in analyser.specs()}
    assert specs["voltage_l1"].table.value == "holding" and specs["voltage_l1"].address == 0
    assert specs["voltage_l1"].order.value == "CDAB"
    assert specs["energy_import"].order.value == "ABCD"
    assert {s.type.value for s in specs.values()} >= {
        "int16",
        "uint32",
        "float32",
        "string",
        "bool",
    }
    assert analyser.holes
    # the profile's points come first, then the device's own
    assert feeder.points[0].id == "voltage_l1_n" and feeder.points[-1].id == "meter_status"
    assert feeder.order.value == "CDAB" and feeder.poll == 2.0
