"""Alarms end to end: raised on a real limit, retained as a set, acknowledged over MQTT
with a signed `metrogate alarm` command, recorded in the audit trail, still active after
a restart; unsigned, forged and replayed commands are refused and summarised."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.cli.app import main
from gateway.config.loader import LoadedConfig, load_config
from gateway.wire.commands import build_command
from gateway.wire.keys import generate_keypair, load_signer
from gateway.wire.signing import Signer
from simulators.modbus_device import ModbusTcpSimulator
from tests.eventually import eventually
from tests.integration.gwtest import line_config
from tests.integration.test_gateway_e2e import collecting, running, sim_units
from tests.integration.test_ops_gateway import scrape
from tests.services import Mosquitto

pytestmark = pytest.mark.services

ALARM = "dev1/p0/high"


def alarm_config(tmp: Path, broker: int, sim: int) -> LoadedConfig:
    """One device whose p0 alarm is active at once; operator ``inspector`` may ack."""
    generate_keypair(tmp / "ops", name="inspector")
    extra = (
        "operators:\n  - {id: inspector, public_key: ops/inspector.pub, roles: [ack]}\n"
        "commands: {refusal_summary: 1s}\n"
    )
    loaded = line_config(tmp, broker, sim, units=1, points=2, extra=extra)
    # unit 1's ramp starts at 100: a high limit at 50 is active from the first poll
    text = loaded.path.read_text().replace(
        "      - {id: p0,", "      - {rules: [{kind: high, limit: 50, severity: high}], id: p0,", 1
    )
    loaded.path.write_text(text)
    return load_config(loaded.path)


def states(records: list[dict[str, object]]) -> list[object]:
    return [r["state"] for r in records if r["alarm"] == ALARM]


async def test_alarm_raised_acknowledged_and_kept_across_restart(
    mosquitto: Mosquitto, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with ModbusTcpSimulator(sim_units(1, 2)) as sim:
        loaded = alarm_config(tmp_path, mosquitto.port, sim.port)

        def alarm_records() -> list[dict[str, object]]:
            return [a for b in col.bodies.values() for a in b.get("alarms", [])]

        async with collecting(mosquitto, loaded) as col:
            async with running(loaded):
                await eventually(
                    lambda: "active_unacknowledged" in states(alarm_records()),
                    "alarm raised",
                    within=15,
                )
                await eventually(
                    lambda: any(a["alarm"] == ALARM for s in col.alarm_sets for a in s["alarms"]),
                    "retained alarm set",
                    within=10,
                )
                code = await asyncio.to_thread(main, ["alarm", "list", "-c", str(loaded.path)])
                assert code == 0 and ALARM in capsys.readouterr().out
                base = col.base
                async with aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
                    unsigned = json.dumps({"alarm": ALARM, "user": "inspector"}).encode()
                    await client.publish(f"{base}/cmd/ack", unsigned, qos=1)
                    forged = Signer.from_private_key(Ed25519PrivateKey.generate())
                    fake = build_command(
                        forged, action="ack", gateway="gw1", site="test-site", alarm=ALARM,
                        operator="inspector", ts_us=time.time_ns() // 1000,
                    )  # fmt: skip
                    await client.publish(f"{base}/cmd/ack", fake, qos=1)
                await eventually(lambda: refused_entries(tmp_path), "refusal summary", within=10)
                assert "active_unacknowledged" in states(alarm_records())
                assert "active_acknowledged" not in states(alarm_records())
                code = await asyncio.to_thread(
                    main,
                    [
                        "alarm", "ack", ALARM, "--operator", "inspector",
                        "--key", str(tmp_path / "ops" / "inspector.key"), "-c", str(loaded.path),
                    ],
                )  # fmt: skip
                assert code == 0
                await eventually(
                    lambda: "active_acknowledged" in states(alarm_records()),
                    "acknowledged",
                    within=10,
                )
            seen = len(col.alarm_sets)
            async with running(loaded):
                await eventually(lambda: len(col.alarm_sets) > seen, "set after restart", within=10)
                restored = col.alarm_sets[-1]["alarms"]
    ack = next(r for r in alarm_records() if r["state"] == "active_acknowledged")
    assert ack["user"] == "inspector" and ack["severity"] == "high"
    assert [a["state"] for a in restored if a["alarm"] == ALARM] == ["active_acknowledged"]
    assert not col.errors
    acks = [e for e in log_entries(tmp_path) if e["type"] == "alarm_ack"]
    assert [(e["source"], e["data"]["operator"]) for e in acks] == [("inspector", "inspector")]
    counts: dict[str, int] = {}
    for e in refused_entries(tmp_path):
        for kind, n in e["data"]["counts"].items():
            counts[kind] = counts.get(kind, 0) + n
    assert counts == {"unsigned": 1, "unknown_operator": 1}


def log_entries(tmp: Path) -> list[dict[str, Any]]:
    path = tmp / "state" / "events.log"
    lines = path.read_bytes().splitlines() if path.exists() else []
    return [json.loads(line.split(b"\t", 1)[0]) for line in lines]


def refused_entries(tmp: Path) -> list[dict[str, Any]]:
    return [e for e in log_entries(tmp) if e["type"] == "commands_refused"]


async def test_a_captured_command_replayed_is_refused(mosquitto: Mosquitto, tmp_path: Path) -> None:
    async with ModbusTcpSimulator(sim_units(1, 2)) as sim:
        loaded = alarm_config(tmp_path, mosquitto.port, sim.port)
        signer = load_signer(tmp_path / "ops" / "inspector.key")
        async with collecting(mosquitto, loaded) as col, running(loaded) as gateway:
            await eventually(
                lambda: any(a["alarm"] == ALARM for s in col.alarm_sets for a in s["alarms"]),
                "alarm raised",
                within=15,
            )
            payload = build_command(
                signer, action="ack", gateway="gw1", site="test-site", alarm=ALARM,
                operator="inspector", ts_us=time.time_ns() // 1000,
            )  # fmt: skip
            async with aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
                await client.publish(f"{col.base}/cmd/ack", payload, qos=1)
                await eventually(
                    lambda: any(e["type"] == "alarm_ack" for e in log_entries(tmp_path)),
                    "ack recorded",
                    within=10,
                )
                await client.publish(f"{col.base}/cmd/ack", payload, qos=1)
            await eventually(lambda: refused_entries(tmp_path), "replay refused", within=10)
            assert gateway.ops is not None
            metrics = await scrape(f"http://127.0.0.1:{gateway.ops.port}")
    assert metrics[("metrogate_commands_total", (("outcome", "accepted"),))] == 1
    assert metrics[("metrogate_commands_total", (("outcome", "replayed"),))] == 1
    (summary,) = refused_entries(tmp_path)
    assert summary["data"]["counts"] == {"replayed": 1} and summary["source"] == "operator"
    assert [e["type"] for e in log_entries(tmp_path)].count("alarm_ack") == 1
