"""The poller hands identity and tamper counters to the audit trail only when they change."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

from drivers.base import utc_now_us
from gateway.acquisition.build import build_drivers
from gateway.acquisition.poller import DevicePoller
from gateway.config.loader import load_config
from gateway.metrology.pipeline import DeviceMetrology
from simulators.pty import SimLine
from simulators.serial_instruments import Dlt645Sim

METER = "123456789012"
ENERGY, COVER_OPEN = 0x00010000, 0x03300D00


async def test_callbacks_fire_on_change_only(tmp_path: Path) -> None:
    meter = Dlt645Sim({METER: {ENERGY: 100, COVER_OPEN: 3}})
    identities: list[tuple[str, dict[str, str]]] = []
    tampers: list[tuple[str, dict[str, int]]] = []
    with SimLine(meter) as line:
        path = tmp_path / "gateway.yaml"
        path.write_text(
            f"gateway: {{id: gw1, site: s, state_dir: {tmp_path / 'state'}}}\n"
            "mqtt: {url: 'mqtt://127.0.0.1:1'}\n"
            f"buses: [{{id: meters, port: {line.path}, parity: N, timeout: 300ms}}]\n"
            "devices:\n"
            f'  - id: kwh-1\n    driver: dlt645\n    bus: meters\n    address: "{METER}"\n'
            "    points:\n"
            '      - {id: energy_import, di: "00010000", unit: kWh}\n'
            '      - {id: cover_open_count, di: "03300D00"}\n'
        )
        loaded = load_config(path)
        dev = loaded.config.devices[0]
        async with AsyncExitStack() as stack:
            driver = (await build_drivers(loaded, stack))["kwh-1"]
            points = [(str(p.id), p, getattr(p, "unit", None)) for p in dev.points]
            poller = DevicePoller(
                dev,
                driver,
                DeviceMetrology(dev.id, points, dev, {}, utc_now_us),
                lambda kind, records: None,
                on_identity=lambda d, i: identities.append((d, i)),
                on_tamper=lambda d, c: tampers.append((d, c)),
            )
            for _ in range(3):
                await poller.poll_once()
            assert identities == [("kwh-1", {"address": METER})]
            assert tampers == [("kwh-1", {"cover_open_count": 3})]

            del meter.values[METER][COVER_OPEN]  # the meter refuses that DI now
            readings = await poller.poll_once()
            assert {r.point: r.quality.value for r in readings} == {
                "energy_import": "good",
                "cover_open_count": "bad",
            }
            assert len(tampers) == 1, "a counter not read this poll is no change"

            meter.values[METER][COVER_OPEN] = 4
            for _ in range(2):
                await poller.poll_once()
    assert tampers == [("kwh-1", {"cover_open_count": 3}), ("kwh-1", {"cover_open_count": 4})]
    assert len(identities) == 1


async def test_a_cjt188_tamper_bit_is_evidence_and_flags_every_reading(tmp_path: Path) -> None:
    from simulators.cjt188 import Cjt188Sim, SimMeter

    address = "00000012345678"
    meter = SimMeter(0x10, {"cumulative_flow": 12.5})
    tampers: list[tuple[str, dict[str, int]]] = []
    identities: list[tuple[str, dict[str, str]]] = []
    with SimLine(Cjt188Sim({address: meter})) as line:
        path = tmp_path / "gateway.yaml"
        path.write_text(
            f"gateway: {{id: gw1, site: s, state_dir: {tmp_path / 'state'}}}\n"
            f"buses: [{{id: water, port: {line.path}, timeout: 300ms}}]\n"
            "devices:\n"
            f"  - id: w-1\n    driver: cjt188\n    bus: water\n    address: '{address}'\n"
            "    meter_type: cold_water\n"
            "    status_bits: [{bit: 5, name: magnet, tamper: true}]\n"
            "    points:\n"
            "      - {id: volume, field: cumulative_flow}\n"
            "      - {id: magnet, field: magnet}\n"
        )
        loaded = load_config(path)
        dev = loaded.config.devices[0]
        async with AsyncExitStack() as stack:
            driver = (await build_drivers(loaded, stack))["w-1"]
            points = [(str(p.id), p, getattr(p, "unit", None)) for p in dev.points]
            poller = DevicePoller(
                dev,
                driver,
                DeviceMetrology(dev.id, points, dev, {}, utc_now_us),
                lambda kind, records: None,
                on_identity=lambda d, i: identities.append((d, i)),
                on_tamper=lambda d, c: tampers.append((d, c)),
            )
            for _ in range(2):
                readings = await poller.poll_once()
            assert [r.flags for r in readings] == [[], []]
            meter.status = 1 << 5  # someone holds a magnet to the meter
            for _ in range(2):
                readings = await poller.poll_once()
            assert {r.point: (r.value, r.flags) for r in readings} == {
                "volume": (12.5, ["status:magnet"]),
                "magnet": (True, ["status:magnet"]),
            }
    assert tampers == [("w-1", {"magnet": 0}), ("w-1", {"magnet": 1})]
    assert identities == [("w-1", {"address": address, "meter_type": "10"})]


async def test_an_opcua_servers_identity_is_evidence(tmp_path: Path) -> None:
    """Product, manufacturer, software and build of the server (and its certificate on a
    secured channel) reach the audit trail at first connect, as an instrument's do."""
    from simulators.opcua_server import OpcUaSim, SimPoint

    identities: list[tuple[str, dict[str, str]]] = []
    async with OpcUaSim([SimPoint("t", "Line1/T", value=2.5)]) as sim:
        path = tmp_path / "gateway.yaml"
        path.write_text(
            f"gateway: {{id: gw1, site: s, state_dir: {tmp_path / 'state'}}}\n"
            f"devices:\n  - id: plc\n    driver: opcua\n    url: {sim.url}\n"
            "    points: [{id: t, node: 'ns=2;s=Line1.T'}]\n"
        )
        loaded = load_config(path)
        dev = loaded.config.devices[0]
        async with AsyncExitStack() as stack:
            driver = (await build_drivers(loaded, stack))["plc"]
            points = [(str(p.id), p, getattr(p, "unit", None)) for p in dev.points]
            poller = DevicePoller(
                dev,
                driver,
                DeviceMetrology(dev.id, points, dev, {}, utc_now_us),
                lambda kind, records: None,
                on_identity=lambda d, i: identities.append((d, i)),
            )
            for _ in range(2):
                readings = await poller.poll_once()
    assert [(r.point, r.value) for r in readings] == [("t", 2.5)]
    assert readings[0].server_ts_us is not None  # the server's time travels with it
    assert len(identities) == 1
    device, identity = identities[0]
    assert device == "plc"
    assert identity["product"] == "metrogate OPC UA simulator"
    assert identity["manufacturer"] == "metrogate" and identity["software"] == "0.1"
