"""Helpers for end-to-end tests: a config on real ports, a verifying MQTT collector."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import paho.mqtt.client as mqtt
from referencing import Registry, Resource

from gateway.acquisition.clock import ClockMonitor, SyncState
from gateway.config.loader import LoadedConfig, load_config
from gateway.wire.keys import PUBLIC_KEY_NAME, load_public_keys
from gateway.wire.signing import verify_payload

REPO = Path(__file__).resolve().parents[2]
BATCH_SCHEMA = json.loads((REPO / "gateway" / "wire" / "schema" / "batch.schema.json").read_text())
ALARM_SET_SCHEMA = json.loads(
    (REPO / "gateway" / "wire" / "schema" / "alarm-set.schema.json").read_text()
)
SCHEMAS: Registry = Registry().with_resource(  # type: ignore[call-arg]
    "https://metrogate.example/schema/v1/batch.schema.json",
    Resource.from_contents(BATCH_SCHEMA),
)


def synced_clock() -> ClockMonitor:
    """A clock monitor that sees a synchronised clock (CI containers run without NTP)."""
    return ClockMonitor(probe=lambda: SyncState.SYNCHRONISED)


def line_config(
    tmp: Path,
    broker_port: int,
    sim_port: int,
    *,
    poll: str = "100ms",
    units: int = 2,
    points: int = 10,
    extra: str = "",
) -> LoadedConfig:
    """A production line: ``units`` Modbus TCP devices behind one simulated port."""
    devices = []
    for u in range(1, units + 1):
        pts = "\n".join(
            f"      - {{id: p{i}, table: holding, address: {2 * i}, type: float32, unit: bar,"
            f" sim: {{kind: ramp, start: {u * 100}, rate: 1, min: 0, max: 100000}}}}"
            for i in range(points)
        )
        devices.append(
            f"  - id: dev{u}\n    driver: modbus_tcp\n    host: 127.0.0.1\n    port: {sim_port}\n"
            f"    unit: {u}\n    poll: {poll}\n    timeout: 50ms\n    points:\n{pts}\n"
        )
    text = (
        f"gateway: {{id: gw1, site: test-site, state_dir: {tmp / 'state'}}}\n"
        f"mqtt: {{url: 'mqtt://127.0.0.1:{broker_port}', publish_timeout: 3s, backoff_max: 1s}}\n"
        "ops: {listen: '127.0.0.1:0'}\n"
        f"{extra}"
        "devices:\n" + "".join(devices)
    )
    path = tmp / "gateway.yaml"
    path.write_text(text)
    return load_config(path)


@dataclass
class Collector:
    """Subscribes to a gateway's topics with a persistent session; verifies everything."""

    url_port: int
    base: str
    keys_dir: Path
    bodies: dict[int, dict[str, Any]] = field(default_factory=dict)
    payloads: dict[int, bytes] = field(default_factory=dict)  # as first received, by seq
    deliveries: int = 0
    redeliveries: int = 0
    status: list[dict[str, Any]] = field(default_factory=list)
    status_payloads: list[bytes] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)
    alarm_sets: list[dict[str, Any]] = field(default_factory=list)

    def readings(self, device: str | None = None) -> list[dict[str, Any]]:
        out = []
        for seq in sorted(self.bodies):
            body = self.bodies[seq]
            for r in body.get("readings", []):
                if device is None or r["device"] == device:
                    out.append(r)
        return out

    async def run(self) -> None:
        """Collect until cancelled; paho reconnects by itself while the broker is down.

        paho, not aiomqtt: paho acknowledges a QoS 1 message only after ``on_message``
        returned, so a message acknowledged to the broker has always been counted.
        """
        loop = asyncio.get_running_loop()
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id="test-collector", clean_session=False
        )
        client.reconnect_delay_set(1, 2)

        def on_connect(c: mqtt.Client, u: object, f: object, rc: object, p: object) -> None:
            c.subscribe(f"{self.base}/#", qos=1)

        def on_subscribe(c: mqtt.Client, u: object, mid: int, rc: object, p: object) -> None:
            loop.call_soon_threadsafe(self.subscribed.set)

        def on_message(c: mqtt.Client, u: object, msg: mqtt.MQTTMessage) -> None:
            self._take(msg.topic, msg.payload)

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_message = on_message
        client.connect("127.0.0.1", self.url_port, keepalive=5)
        client.loop_start()
        try:
            await asyncio.Event().wait()
        finally:
            client.disconnect()
            client.loop_stop()

    def _take(self, topic: str, payload: bytes) -> None:
        """One message, in paho's thread: what is wrong goes to ``errors``, for the test
        to assert on in its own thread (an assertion here would never reach it)."""
        kind = topic.rsplit("/", 1)[-1]
        if topic.startswith(f"{self.base}/cmd/"):
            return  # commands to the gateway (sent by the tests themselves)
        if kind == "status":
            self.status_payloads.append(payload)
            self.status.append(json.loads(payload))
            return
        if kind == "alarms":
            keys = load_public_keys([self.keys_dir / PUBLIC_KEY_NAME])
            body_bytes, _ = verify_payload(payload, keys)
            alarm_set = json.loads(body_bytes)
            try:
                jsonschema.validate(alarm_set, ALARM_SET_SCHEMA, registry=SCHEMAS)
            except Exception as exc:  # collected and asserted on by the tests
                self.errors.append(f"{topic}: {exc}")
            self.alarm_sets.append(alarm_set)
            return
        keys = load_public_keys([self.keys_dir / PUBLIC_KEY_NAME])
        try:
            body_bytes, _ = verify_payload(payload, keys)
            body = json.loads(body_bytes)
            jsonschema.validate(body, BATCH_SCHEMA)
        except Exception as exc:  # collected and asserted on by the tests
            self.errors.append(f"{topic}: {exc}")
            return
        if body["type"] != kind:
            self.errors.append(f"{topic}: a batch of type {body['type']!r}")
        self.deliveries += 1
        seq = body["seq"]
        if seq in self.payloads:
            self.redeliveries += 1
            if payload != self.payloads[seq]:
                self.errors.append(f"{topic}: redelivery of seq {seq} is not byte-identical")
            return
        self.payloads[seq] = payload
        self.bodies[seq] = body
