"""Instrument identity and tamper counters reach the audit trail, end to end.

A real gateway run polls a simulated DL/T 645 meter and a simulated MT-SICS balance
over pseudo-terminals; what the instruments report as evidence must appear in the
signed event log (``events.log`` in the state directory) and on ``…/event`` at a
real Mosquitto.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from gateway.audit.verify import verify_event_log
from gateway.config.loader import load_config
from gateway.wire.keys import PUBLIC_KEY_NAME, load_public_keys
from simulators.pty import SimLine
from simulators.serial_instruments import Dlt645Sim, MtSicsSim
from tests.eventually import eventually
from tests.integration.test_gateway_e2e import collecting, running
from tests.integration.test_gateway_trust import entries
from tests.services import Mosquitto

pytestmark = pytest.mark.services

METER = "123456789012"
ENERGY, COVER_OPEN = 0x00010000, 0x03300D00


def write_config(tmp: Path, broker_port: int, meter_tty: str, balance_tty: str) -> Path:
    path = tmp / "gateway.yaml"
    path.write_text(
        f"gateway: {{id: gw1, site: test-site, state_dir: {tmp / 'state'}}}\n"
        f"mqtt: {{url: 'mqtt://127.0.0.1:{broker_port}', publish_timeout: 3s, backoff_max: 1s}}\n"
        "ops: {listen: '127.0.0.1:0'}\n"
        # parity N: a pseudo-terminal refuses to be reopened (second run) with parity E
        "buses:\n"
        f"  - {{id: meters, port: {meter_tty}, baudrate: 9600, parity: N, timeout: 300ms}}\n"
        f"  - {{id: lab, port: {balance_tty}, baudrate: 9600, parity: N, timeout: 300ms}}\n"
        "devices:\n"
        f'  - id: kwh-1\n    driver: dlt645\n    bus: meters\n    address: "{METER}"\n'
        "    poll: 200ms\n    points:\n"
        '      - {id: energy_import, di: "00010000", unit: kWh}\n'
        '      - {id: cover_open_count, di: "03300D00"}\n'
        "  - id: balance-1\n    driver: mtsics\n    bus: lab\n    poll: 200ms\n"
        "    points: [{id: mass, unit: g}]\n"
    )
    return path


def events_of(state: Path, type_: str) -> list[dict[str, Any]]:
    return [cast(dict[str, Any], e["data"]) for e in entries(state) if e["type"] == type_]


def published(bodies: dict[int, dict[str, Any]], type_: str) -> list[dict[str, Any]]:
    return [
        e["data"]
        for seq in sorted(bodies)
        if bodies[seq]["type"] == "event"
        for e in bodies[seq]["events"]
        if e["type"] == type_
    ]


async def test_tamper_counters_and_identity_changes_reach_log_and_broker(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    meter = Dlt645Sim({METER: {ENERGY: 12345678, COVER_OPEN: 3}})
    balance = MtSicsSim(serial_number="B000111")
    state = tmp_path / "state"
    with SimLine(meter) as meter_line, SimLine(balance) as balance_line:
        loaded = load_config(
            write_config(tmp_path, mosquitto.port, meter_line.path, balance_line.path)
        )
        async with collecting(mosquitto, loaded) as col:
            # first run: the counters as found, then a cover opened while running
            async with running(loaded) as gw:
                await eventually(
                    lambda: gw.pollers["kwh-1"].health.polls >= 2, "the meter polled", within=10
                )
                await eventually(
                    lambda: events_of(state, "tamper_counter"), "first counters", within=10
                )
                meter.values[METER][COVER_OPEN] = 4
                await eventually(
                    lambda: len(events_of(state, "tamper_counter")) >= 2,
                    "a changed counter",
                    within=10,
                )
                await eventually(
                    lambda: len(published(col.bodies, "tamper_counter")) >= 2,
                    "tamper_counter on …/event",
                    within=10,
                )
            # the balance was swapped between runs: a new serial number at connect
            balance.serial_number = "B000222"
            async with running(loaded) as gw:
                await eventually(
                    lambda: events_of(state, "instrument_identity_changed"),
                    "identity change",
                    within=10,
                )
                await eventually(
                    lambda: published(col.bodies, "instrument_identity_changed"),
                    "instrument_identity_changed on …/event",
                    within=10,
                )
                polls = gw.pollers["kwh-1"].health.polls
                await eventually(
                    lambda: gw.pollers["kwh-1"].health.polls >= polls + 5, "more polls", within=10
                )
    assert not col.errors

    tamper = events_of(state, "tamper_counter")
    assert tamper == [
        {"device": "kwh-1", "counters": {"cover_open_count": 3}, "previous": None},
        {
            "device": "kwh-1",
            "counters": {"cover_open_count": 4},
            "previous": {"cover_open_count": 3},
        },
    ]  # unchanged counters in later polls and in the second run are not logged again
    assert published(col.bodies, "tamper_counter") == tamper

    identities = events_of(state, "instrument_identity")
    assert {"device": "kwh-1", "identity": {"address": METER}} in identities
    first = next(i for i in identities if i["device"] == "balance-1")
    assert first["identity"]["serial_number"] == "B000111"
    (changed,) = events_of(state, "instrument_identity_changed")
    assert changed["device"] == "balance-1"
    assert changed["identity"]["serial_number"] == "B000222"
    assert changed["previous"]["serial_number"] == "B000111"
    assert published(col.bodies, "instrument_identity_changed") == [changed]

    keys = load_public_keys([state / PUBLIC_KEY_NAME])
    report = verify_event_log(state / "events.log", keys)
    assert report.ok, report.problems
