"""Refused is not delivered: a real Mosquitto whose ACL denies the data topic (MQTT 5)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.config.loader import load_config
from gateway.ops.health import gateway_health
from simulators.modbus_device import ModbusTcpSimulator
from tests.eventually import eventually
from tests.integration.gwtest import line_config
from tests.integration.test_gateway_e2e import assert_complete, collecting, running, sim_units
from tests.services import Mosquitto, free_port

pytestmark = pytest.mark.services

BASE = "metrogate/v1/test-site/gw1"
# the gateway (anonymous, on its listener) may write every one of its topics but data
DENY_DATA = (
    f"topic read {BASE}/cmd/#\n"
    f"topic write {BASE}/status\ntopic write {BASE}/event\n"
    f"topic write {BASE}/alarm\ntopic write {BASE}/alarms\n"
)
ALLOW_ALL = "topic readwrite metrogate/#\n"


def event_log_types(state: Path) -> list[str]:
    lines = (state / "events.log").read_bytes().splitlines()
    return [json.loads(line.split(b"\t", 1)[0])["type"] for line in lines]


async def test_refused_batches_stay_counted_reported_once_and_go_out_once_allowed(
    tmp_path: Path,
) -> None:
    acl = tmp_path / "acl"
    acl.write_text(DENY_DATA)
    gw_port = free_port()
    # the gateway on a listener of its own with the ACL, the test's collector on the
    # plain one (an ACL also filters the queue of a persistent session restored after
    # a restart, which would hide from the collector what the broker did accept)
    broker = Mosquitto(
        tmp_path / "mosquitto",
        extra=f"listener {gw_port} 127.0.0.1\nallow_anonymous true\nacl_file {acl}\n",
    )
    # Measured with Mosquitto 2.0.11: with "max_queued_messages 0" (no limit) it closes
    # the connection right after the PUBACK 0x87 of a denied QoS 1 publish; with a
    # limit it keeps it, as a production broker is configured
    conf = broker.conf.read_text().replace(
        "max_queued_messages 0\n", "max_queued_messages 100000\n"
    )
    broker.conf.write_text(conf)
    broker.start()
    try:
        async with ModbusTcpSimulator(sim_units()) as sim:
            loaded = line_config(tmp_path, gw_port, sim.port)
            text = loaded.path.read_text().replace(
                "backoff_max: 1s}", "backoff_max: 1s, protocol: '5'}"
            )
            loaded.path.write_text(text)
            loaded = load_config(loaded.path)
            state = loaded.config.gateway.state_dir
            async with collecting(broker, loaded) as col, running(loaded) as gw:
                assert gw.publisher is not None and gw.outbox is not None
                pub, outbox = gw.publisher, gw.outbox

                def stored_data() -> list[int]:
                    return [b.seq for b in outbox.take(100_000) if b.kind == "data"]

                # a refused batch is offered again after the back-off, so refusals count
                # retries too: wait for twenty of them and twenty distinct batches kept
                await eventually(
                    lambda: (
                        pub.stats.refused.get(("data", "not_authorized"), 0) >= 20
                        and len(stored_data()) >= 20
                    ),
                    "twenty refusals and twenty data batches kept",
                    within=30,
                )
                # nothing refused was deleted: every data batch sealed is still there
                data_seqs = stored_data()
                assert outbox.stats().dropped_batches == 0
                assert "data" not in {b["type"] for b in col.bodies.values()}
                # events are not refused, and the episode is reported once, not per batch
                assert event_log_types(state).count("publish_refused") == 1
                await eventually(
                    lambda: any(
                        e["type"] == "publish_refused"
                        for b in col.bodies.values()
                        for e in b.get("events", [])
                    ),
                    "the refusal published as an event",
                    within=10,
                )
                health = gateway_health(gw)
                assert health["status"] == "degraded"
                assert any(
                    "refuses data batches: Not authorized (0x87)" in p for p in health["problems"]
                ), health["problems"]

                acl.write_text(ALLOW_ALL)  # the operator fixes the ACL
                broker.restart()
                target = outbox.stats().next_seq + 10
                await eventually(
                    lambda: max(col.bodies, default=0) >= target,
                    "backlog drained and live",
                    within=40,
                )
                await eventually(lambda: not pub.stats.refusing, "the episode over", within=10)
                last = max(col.bodies)
                assert not any("refuses" in p for p in gateway_health(gw)["problems"])
        assert set(data_seqs) <= set(col.bodies)  # each refused batch arrived in the end
        assert_complete(col, last)
        assert event_log_types(state).count("publish_refused") == 1
    finally:
        broker.stop()
