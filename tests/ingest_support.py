"""Helpers for ingest tests: signed batches built per docs/wire.md, a QoS 1 publisher."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from paho.mqtt.enums import CallbackAPIVersion

from gateway.wire.signing import Signer

PREFIX = "metrogate"
T0_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z


def new_signer() -> Signer:
    return Signer.from_private_key(Ed25519PrivateKey.generate())


def register(keys_dir: Path, gateway: str, signer: Signer) -> None:
    keys_dir.mkdir(parents=True, exist_ok=True)
    pem = signer.private_key.public_key().public_bytes(
        Encoding.PEM, PublicFormat.SubjectPublicKeyInfo
    )
    (keys_dir / f"{gateway}.pub").write_bytes(pem)


def reading(ts_us: int, device: str, point: str, value: Any, **extra: Any) -> dict[str, Any]:
    return {
        "ts": ts_us,
        "device": device,
        "point": point,
        "value": value,
        "quality": "good",
    } | extra


def data_body(
    gateway: str,
    seq: int,
    readings: list[dict[str, Any]],
    site: str = "site1",
    sealed: int | None = None,
) -> bytes:
    doc = {
        "v": 1,
        "type": "data",
        "gateway": gateway,
        "site": site,
        "seq": seq,
        "sealed": T0_US + seq * 1000 if sealed is None else sealed,
        "readings": readings,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def data_batch(signer: Signer, gateway: str, seq: int, n: int, site: str = "site1") -> bytes:
    """A signed data batch of ``n`` readings, 10 points × devices, unique timestamps per seq."""
    rs = [
        reading(
            T0_US + seq * 1_000_000 + i,
            f"dev{i % 5}",
            f"p{i % 10}",
            20.0 + (i % 7) * 0.01,
            unit="°C",
            raw=2000 + i,
            U=0.05,
            k=2,
            instrument=f"TI-{i % 5}",
            flags=["out_of_tolerance"] if i % 25 == 0 else [],
        )
        for i in range(n)
    ]
    return signer.sign_payload(data_body(gateway, seq, rs, site))


def topic(gateway: str, kind: str = "data", site: str = "site1") -> str:
    return f"{PREFIX}/v1/{site}/{gateway}/{kind}"


class Publisher:
    """A paho publisher that waits for every PUBACK (QoS 1) or send (QoS 0)."""

    def __init__(self, port: int) -> None:
        self.c = paho.Client(CallbackAPIVersion.VERSION2, client_id="", protocol=paho.MQTTv311)
        self.c.max_inflight_messages_set(200)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def publish(
        self,
        items: Iterable[tuple[str, bytes]],
        timeout: float = 60.0,
        *,
        qos: int = 1,
        retain: bool = False,
    ) -> int:
        infos = [self.c.publish(t, p, qos=qos, retain=retain) for t, p in items]
        deadline = time.monotonic() + timeout
        for info in infos:
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))
            assert info.is_published(), "publish not acknowledged in time"
        return len(infos)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


class Collector:
    """Subscribes to a topic and keeps every payload received (thread-safe list)."""

    def __init__(self, port: int, topic_filter: str) -> None:
        self.messages: list[bytes] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.c = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
        self.c.on_message = self._on_message
        self.c.on_subscribe = lambda *a: self._subscribed.set()
        self.c.connect("127.0.0.1", port)
        self.c.subscribe(topic_filter, qos=1)
        self.c.loop_start()
        assert self._subscribed.wait(10), "subscription not acknowledged"

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(bytes(msg.payload))

    def json(self) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(m) for m in self.messages]

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


# -- real gateway payloads: the gateway's own sealer, reading model, alarms and event log --


class RealGateway:
    """Seals batches exactly as a gateway does (``gateway.wire.encoding.make_sealer``).

    ``data`` takes :class:`gateway.wire.reading.Reading` objects and sends them through
    ``to_wire``; ``alarm`` takes records of :class:`gateway.metrology.alarms.Alarm`; ``event``
    appends to a real :class:`gateway.audit.eventlog.EventLog` and sends its entries.
    """

    def __init__(self, signer: Signer, gateway: str, site: str, state_dir: Path) -> None:
        from gateway.audit.eventlog import EventLog
        from gateway.wire.encoding import make_sealer

        self.gateway, self.site = gateway, site
        self.seal = make_sealer(gateway, site, signer)
        self.seq = 0
        self.log = EventLog(state_dir / "events.log", signer, software_id="test-sw")

    def _next(self, kind: str, records: list[dict[str, Any]], sealed_us: int) -> tuple[str, bytes]:
        self.seq += 1
        return topic(self.gateway, kind, self.site), self.seal(kind, self.seq, sealed_us, records)

    def data(self, readings: Iterable[Any], sealed_us: int) -> tuple[str, bytes]:
        from gateway.wire.reading import to_wire

        return self._next("data", [to_wire(r) for r in readings], sealed_us)

    def alarm(self, records: list[dict[str, Any]], sealed_us: int) -> tuple[str, bytes]:
        return self._next("alarm", records, sealed_us)

    def event(
        self, entries: list[tuple[str, dict[str, Any], str]], sealed_us: int
    ) -> tuple[str, bytes]:
        """``entries``: (type, data, source) appended to the event log, then sent."""
        out = [self.log.append(t, d, source=s) for t, d, s in entries]
        return self._next("event", out, sealed_us)

    def close(self) -> None:
        self.log.close()


def make_reading(ts_us: int, device: str, point: str, value: Any, **kw: Any) -> Any:
    """A :class:`gateway.wire.reading.Reading` (quality good unless given)."""
    from drivers.base import Quality
    from gateway.wire.reading import Reading

    kw.setdefault("quality", Quality.GOOD)
    kw.setdefault("unit", "degC")
    kw.setdefault("raw", value)
    return Reading(ts_us=ts_us, device=device, point=point, value=value, **kw)
