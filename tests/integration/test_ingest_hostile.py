"""The ingest against hostile and broken input, over a real Mosquitto and real stores.

Each test names a way one message used to cost more than itself (a dead worker, a
message acknowledged twice, history rewritten, a refusal taken for a delivery,
unbounded memory) and shows it now costs only itself.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.audit.eventlog import EventLog
from gateway.wire.signing import Signer
from supervision.config import IngestConfig, MqttConfig
from supervision.ingest import Ingest, build_sink, subscription_topics
from supervision.keyring import Keyring
from supervision.mqtt import Incoming, MqttSource
from supervision.report import report_influx, report_sqlite
from tests.db_services import InfluxDB1
from tests.eventually import eventually
from tests.ingest_support import (
    T0_US,
    Collector,
    Publisher,
    RealGateway,
    data_batch,
    data_body,
    new_signer,
    reading,
    register,
    topic,
)
from tests.integration.test_ingest import config, in_process
from tests.services import Mosquitto

pytestmark = pytest.mark.services  # the test command installs the servers: never skipped
DB = "mg"
DEEP = 100_000


@pytest.fixture
def signer(tmp_path: Path) -> Signer:
    s = new_signer()
    register(tmp_path / "keys", "gw1", s)
    return s


def sqlite_store(tmp_path: Path) -> dict[str, Any]:
    return {"kind": "sqlite", "path": str(tmp_path / "store.sqlite")}


def rows(path: Path, q: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as db:
        return list(db.execute(q))


def status(gateway: str, **extra: Any) -> bytes:
    doc = {"v": 1, "state": "online", "gateway": gateway, "site": "site1"} | extra
    return json.dumps(doc).encode()


async def test_poison_costs_only_itself_and_a_good_batch_still_lands(
    tmp_path: Path, broker: Mosquitto, signer: Signer
) -> None:
    """Each of these once killed the worker for good (RecursionError, OverflowError, no
    handler), and the broker sent it again after every restart."""
    good = data_batch(signer, "gw1", 1, 5)
    body = good.rpartition(b"\n")[0]
    cases: list[tuple[str, bytes, str | None]] = [
        (topic("gw9", "status"), b"[" * DEEP, None),  # unregistered: dropped, unparsed
        (topic("gw1", "status"), b"[" * DEEP, "schema"),
        (topic("gw1", "status"), status("gw1", since=10**20), "schema"),
        (topic("gw1", "status"), status("gw1", since=-1), "schema"),
        (topic("gw1"), body + b"\n" + b"[" * DEEP, "unsigned"),  # in the signature line
        (topic("gw1"), body + b"\n" + b'{"alg":' * 20_000, "malformed"),
        (topic("gw1"), b"[" * DEEP, "unsigned"),  # an unsigned body
        (topic("gw1"), signer.sign_payload(b"[" * DEEP), "schema"),
        (topic("gw1"), signer.sign_payload(data_body("gw1", 2, [reading(10**20, "d", "p", 1)])),
         "schema"),  # a ts whose nanoseconds overflow 64 bits
        (topic("gw1"), b"\xff" * 300_000, "too_large"),  # above max_payload (256 KiB here)
    ]  # fmt: skip
    dl = Collector(broker.port, "metrogate/deadletter")
    pub = Publisher(broker.port)
    # a plain subscription: shared ones get no retained messages (MQTT 5, 4.8.2)
    cfg = config(tmp_path, broker, sqlite_store(tmp_path), max_payload=262_144, shared=False)
    try:
        # retained poison reaches every worker at every subscription, before anything else
        await asyncio.to_thread(lambda: pub.publish([(t, p) for t, p, _ in cases[:2]], retain=True))
        async with in_process(cfg) as ingest:
            await asyncio.to_thread(
                pub.publish, [(t, p) for t, p, _ in cases[2:]] + [(topic("gw1"), good)]
            )
            expected = [r for _, _, r in cases if r is not None]
            await eventually(
                lambda: len(dl.messages) == len(expected), "dead letters", within=20, thread=True
            )
            await eventually(
                lambda: ingest.counts["acked"] == len(cases) + 1, "acks", within=10, thread=True
            )
            counts = Counter(ingest.counts)
        # and again after a restart: the retained poison is delivered anew, and handled
        async with in_process(cfg) as again:
            await eventually(
                lambda: again.counts["acked"] == 2, "retained again", within=10, thread=True
            )
            assert again.counts["dropped.status_unregistered"] == 1
    finally:
        pub.close()
        dl.close()
    assert sorted(m["reason"] for m in dl.json()[: len(expected)]) == sorted(expected)
    assert counts["dropped.status_unregistered"] == 1 and counts["internal_error"] == 0
    big = next(m for m in dl.json() if m["reason"] == "too_large")
    assert big["size"] == 300_000 and big["truncated"] is True
    assert len(base64.b64decode(big["payload_b64"])) <= 262_144
    assert rows(tmp_path / "store.sqlite", "SELECT count(*) FROM readings") == [(5,)]


class RecordingSource(MqttSource):
    """The real MQTT source, counting what the ingest acknowledges or forgoes."""

    def __init__(self, cfg: MqttConfig, topics: list[str]) -> None:
        super().__init__(cfg, topics)
        self.done: Counter[tuple[int, int]] = Counter()

    def ack(self, m: Incoming) -> bool:
        self.done[m.generation, m.mid] += 1
        return super().ack(m)

    def forgo(self, m: Incoming) -> None:
        self.done[m.generation, m.mid] += 1
        super().forgo(m)


async def run_worker(
    cfg_dict: dict[str, Any],
) -> tuple[Ingest, RecordingSource, Callable[[], Awaitable[None]]]:
    """An Ingest built by hand around a :class:`RecordingSource`; and how to stop it."""
    cfg = IngestConfig.model_validate(cfg_dict)
    sink = build_sink(cfg.store)
    await sink.open()
    topics = subscription_topics(cfg.mqtt.prefix, cfg.mqtt.group, list(cfg.mqtt.kinds))
    source = RecordingSource(cfg.mqtt, topics)
    await source.__aenter__()
    ingest = Ingest(
        source, sink, Keyring.load(cfg.keys_dir), batch=cfg.batch,
        dead_letter_topic=cfg.mqtt.dead_letter_topic, worker=cfg.mqtt.client_id,
        event_gap_grace=cfg.event_gap_grace,
    )  # fmt: skip
    task = asyncio.create_task(ingest.run(), name="ingest-under-test")

    async def close() -> None:
        ingest.stop()
        async with asyncio.timeout(20):
            await task
        await source.__aexit__(None, None, None)
        await sink.aclose()

    async with asyncio.timeout(10):
        await ingest.connected.wait()
    return ingest, source, close


async def test_a_message_the_store_refuses_is_acknowledged_once(
    tmp_path: Path, broker: Mosquitto, influx: InfluxDB1, signer: Signer
) -> None:
    """A field type conflict (InfluxDB 400) isolates the message at fault; it used to be
    acknowledged twice (its entry, then its dead letter's)."""

    def alarm(seq: int, value: Any) -> bytes:
        rec = {"ts": T0_US + seq, "alarm": "d/p/high", "device": "d", "point": "p",
               "rule": "high", "event": "raised", "state": "active_unacknowledged",
               "severity": "high", "value": value}  # fmt: skip
        doc = {"v": 1, "type": "alarm", "gateway": "gw1", "site": "site1", "seq": seq,
               "sealed": T0_US + seq * 1000, "alarms": [rec]}  # fmt: skip
        return signer.sign_payload(json.dumps(doc).encode())

    store = {"kind": "influxdb_v1", "url": influx.url, "database": DB, "create_database": True}
    cfg = config(tmp_path, broker, store)
    dl = Collector(broker.port, "metrogate/deadletter")
    pub = Publisher(broker.port)
    ingest, source, close = await run_worker(cfg)
    try:
        await asyncio.to_thread(pub.publish, [(topic("gw1", "alarm"), alarm(1, 9.5))])
        await eventually(
            lambda: ingest.counts["acked"] == 1, "first alarm stored", within=10, thread=True
        )
        # the same field as a string now: the store refuses it
        await asyncio.to_thread(pub.publish, [(topic("gw1", "alarm"), alarm(2, "hot")),
                                     (topic("gw1"), data_batch(signer, "gw1", 3, 4))])  # fmt: skip
        await eventually(
            lambda: ingest.counts["acked"] == 3, "all acknowledged", within=20, thread=True
        )
        await eventually(lambda: len(dl.messages) == 1, "the dead letter", within=10, thread=True)
    finally:
        await close()
        pub.close()
        dl.close()
    assert dl.json()[0]["reason"] == "store_rejected"
    assert set(source.done.values()) == {1} and len(source.done) == 3, source.done
    assert ingest.counts["received"] == ingest.counts["acked"] == 3
    assert influx.scalar("SELECT count(quality) FROM reading", DB) == 4


ACL = "topic read metrogate/#\ntopic write metrogate/v1/#\n"


async def test_a_refused_dead_letter_leaves_its_message_with_the_broker(
    tmp_path: Path, signer: Signer
) -> None:
    """MQTT 5: the broker's PUBACK with reason 0x87 (not authorized) is not a delivery.
    The message stays unacknowledged, health degrades, and once the broker lets the
    dead letter through, the same message is dead-lettered: nothing lost."""
    acl = tmp_path / "acl"
    acl.write_text(ACL)
    broker = Mosquitto(tmp_path / "mq", extra=f"acl_file {acl}\n")
    # as deploy/mosquitto/mosquitto.conf: with an unlimited queue (0) Mosquitto 2.0.11 also
    # drops the connection after a refusal (the message then comes again at once)
    conf = broker.conf.read_text().replace(
        "max_queued_messages 0\n", "max_queued_messages 100000\n"
    )
    broker.conf.write_text(conf)
    broker.start()
    pub = Publisher(broker.port)
    cfg = config(tmp_path, broker, sqlite_store(tmp_path), client_id="w-acl")
    cfg["ops"] = {"listen": "127.0.0.1:0"}
    try:
        async with in_process(cfg) as ingest:
            sent = [
                (topic("gw1"), b"not signed at all"),
                (topic("gw1"), data_batch(signer, "gw1", 1, 3)),
            ]
            await asyncio.to_thread(pub.publish, sent)
            await eventually(
                lambda: ingest.counts["refused.not_authorized"] == 1,
                "refusal",
                within=10,
                thread=True,
            )
            await eventually(
                lambda: ingest.counts["acked"] == 1, "the good batch", within=10, thread=True
            )
            assert ingest.counts["unacknowledged"] == 1
            assert not ingest.dead_letters_ok
            health = await asyncio.to_thread(_get_json, ingest.ops.port, "/health")
            assert health["status"] == "degraded" and health["dead_letters"] == "refused"
        # the broker kept the message for the session; allowed to publish, the worker
        # now dead-letters it
        pub.close()
        broker.stop()
        acl.write_text(ACL + "topic write metrogate/deadletter\n")
        broker.start()
        pub = Publisher(broker.port)
        dl = Collector(broker.port, "metrogate/deadletter")
        try:
            async with in_process(cfg) as again:
                await eventually(
                    lambda: len(dl.messages) == 1, "the dead letter at last", within=20, thread=True
                )
                await eventually(
                    lambda: again.counts["acked"] == 1, "acknowledged", within=10, thread=True
                )
                assert again.dead_letters_ok
        finally:
            dl.close()
    finally:
        pub.close()
        broker.stop()
    (letter,) = dl.json()
    assert letter["reason"] == "unsigned"
    assert base64.b64decode(letter["payload_b64"]) == b"not signed at all"


def _get_json(port: int, path: str) -> dict[str, Any]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            doc: dict[str, Any] = json.loads(r.read())
    except urllib.error.HTTPError as exc:
        doc = json.loads(exc.read())
    return doc


def _sealed(signer: Signer, seq: int, values: list[float], sealed: int) -> bytes:
    rs = [reading(T0_US + seq * 1_000_000 + i, "d", "p", v) for i, v in enumerate(values)]
    return signer.sign_payload(data_body("gw1", seq, rs, sealed=sealed))


@pytest.mark.parametrize("kind", ["sqlite", "influxdb_v1"])
async def test_history_is_never_rewritten_across_a_worker_restart(
    tmp_path: Path, broker: Mosquitto, signer: Signer, request: pytest.FixtureRequest, kind: str
) -> None:
    """The tracker's memory goes with the worker; the store's batch records (with their
    digests) stay, and the restarted worker asks them before writing a number at or
    below the highest stored."""
    influx: InfluxDB1 | None = None
    if kind == "sqlite":
        store = sqlite_store(tmp_path)
    else:
        influx = request.getfixturevalue("influx")
        store = {"kind": "influxdb_v1", "url": influx.url, "database": DB,
                 "create_database": True}  # fmt: skip
    first = {s: _sealed(signer, s, [1.0, 2.0], T0_US + s * 1000) for s in (1, 2, 3, 4, 5, 8)}
    dl = Collector(broker.port, "metrogate/deadletter")
    pub = Publisher(broker.port)
    cfg = config(tmp_path, broker, store)
    try:
        async with in_process(cfg) as ingest:
            await asyncio.to_thread(pub.publish, [(topic("gw1"), p) for p in first.values()])
            await eventually(
                lambda: ingest.counts["acked"] == 6, "first life stored", within=20, thread=True
            )
        later = T0_US + 10**9  # sealed after everything stored
        sent = [
            first[3],  # a replay of a stored batch: the same bytes
            _sealed(signer, 4, [6.0, 6.0], T0_US + 4 * 1000),  # same number, other bytes
            _sealed(signer, 5, [6.5], T0_US + 4 * 1000 + 500),  # … sealed at another time
            _sealed(signer, 2, [7.0], later),  # the gateway numbers again from low down
            _sealed(signer, 3, [7.5], later + 1),  # … and goes on doing so
            _sealed(signer, 6, [3.0, 3.0], T0_US + 6 * 1000),  # late: never stored
            _sealed(signer, 9, [4.0, 4.0], T0_US + 9 * 1000),  # new
        ]
        async with in_process(cfg) as ingest:
            await asyncio.to_thread(pub.publish, [(topic("gw1"), p) for p in sent])
            await eventually(
                lambda: ingest.counts["acked"] == len(sent), "all handled", within=20, thread=True
            )
            counts = Counter(ingest.counts)
        await eventually(lambda: len(dl.messages) == 4, "dead letters", within=10, thread=True)
    finally:
        pub.close()
        dl.close()
    assert sorted(m["reason"] for m in dl.json()) == [
        "sequence_conflict", "sequence_conflict", "sequence_reset", "sequence_reset"
    ]  # fmt: skip
    assert (counts["replay"], counts["late"], counts["security.conflict"],
            counts["security.reset"], counts["security.replay"]) == (1, 1, 2, 1, 1)  # fmt: skip
    since = T0_US * 1000 - 10**9
    if influx is None:
        path = tmp_path / "store.sqlite"
        got = rows(path, "SELECT seq, value FROM readings WHERE seq IN (2, 4) ORDER BY ts_us")
        assert got == [(2, 1.0), (2, 2.0), (4, 1.0), (4, 2.0)]  # the first life's values
        assert rows(path, "SELECT count(*) FROM readings") == [(16,)]
        rep = report_sqlite(path, since_ns=since)
    else:
        assert influx.scalar("SELECT count(quality) FROM reading", DB) == 16
        assert influx.scalar("SELECT sum(value) FROM reading WHERE seq = 4", DB) == 3.0
        assert influx.scalar("SELECT count(seq) FROM batch WHERE seq = 5", DB) == 1
        rep = report_influx(influx.url, DB, since_ns=since)
    assert sorted((r.kind, r.seq) for r in rep.security) == [
        ("conflict", 4), ("conflict", 5), ("replay", 3), ("reset", 2)
    ]  # fmt: skip


@pytest.mark.parametrize("kind", ["sqlite", "influxdb_v1", "victoria"])
async def test_numbers_beyond_the_workers_memory_are_settled_by_the_store(
    tmp_path: Path, broker: Mosquitto, signer: Signer, request: pytest.FixtureRequest, kind: str
) -> None:
    """A worker whose store answers lookups keeps only its newest numbers (with their
    digests) per gateway; an older number is a replay that the store settles — the same
    bytes are not written again, other bytes are a conflict. A store that cannot be
    asked (VictoriaMetrics) leaves the worker its whole window."""
    if kind == "sqlite":
        store = sqlite_store(tmp_path)
    elif kind == "influxdb_v1":
        influx = request.getfixturevalue("influx")
        store = {"kind": "influxdb_v1", "url": influx.url, "database": DB,
                 "create_database": True}  # fmt: skip
    else:
        vm = request.getfixturevalue("victoria")
        store = {"kind": "influxdb_v2", "url": vm.url, "bucket": DB}
    n = 300  # more than a worker with lookups remembers
    sent = {s: _sealed(signer, s, [1.0], T0_US + s * 1000) for s in range(1, n + 1)}
    dl = Collector(broker.port, "metrogate/deadletter")
    pub = Publisher(broker.port)
    again = [
        sent[10],  # the same bytes, long ago: settled by the store (or the window)
        _sealed(signer, 11, [9.0], T0_US + 11 * 1000),  # other bytes, long ago
        sent[n - 1],  # the same bytes, recent: a duplicate from memory
        _sealed(signer, n - 2, [9.0], T0_US + (n - 2) * 1000),  # other bytes, recent
    ]
    try:
        async with in_process(config(tmp_path, broker, store)) as ingest:
            await asyncio.to_thread(pub.publish, [(topic("gw1"), p) for p in sent.values()])
            await eventually(lambda: ingest.counts["acked"] == n, "all stored", within=30)
            remembered = ingest.tracker.remember
            await asyncio.to_thread(pub.publish, [(topic("gw1"), p) for p in again])
            await eventually(lambda: ingest.counts["acked"] == n + 4, "again", within=30)
            counts = Counter(ingest.counts)
        await eventually(lambda: len(dl.messages) == 2, "dead letters", within=10, thread=True)
    finally:
        pub.close()
        dl.close()
    assert [m["reason"] for m in dl.json()] == ["sequence_conflict"] * 2
    assert counts["security.conflict"] == 2 and counts["readings_written"] == n
    if kind == "victoria":
        assert remembered >= n and (counts["duplicate"], counts["replay"]) == (2, 0)
    else:
        assert remembered < n and (counts["duplicate"], counts["replay"]) == (1, 1)


async def test_event_log_gaps_and_resets_are_security_events_and_reported(
    tmp_path: Path, broker: Mosquitto, signer: Signer
) -> None:
    gw = RealGateway(signer, "gw1", "site1", tmp_path / "gw")
    t = time.time_ns() // 1000
    sent = [gw.event([("startup", {}, "daemon"), ("config_loaded", {}, "daemon")], t)]  # n 1, 2
    gw.log.append("parameter_changed", {"key": "a"}, source="config")  # n 3: never sent
    gw.log.append("parameter_changed", {"key": "b"}, source="config")  # n 4: never sent
    sent.append(gw.event([("shutdown", {}, "daemon")], t + 1))  # n 5
    # the event log lost: a new one numbers from 1 again, the batches go on
    gw.log.close()
    gw.log = EventLog(tmp_path / "gw2" / "events.log", signer, software_id="test-sw")
    sent.append(gw.event([("startup", {}, "daemon")], t + 2))  # n 1, later
    gw.close()
    cfg = config(tmp_path, broker, sqlite_store(tmp_path))
    cfg["event_gap_grace"] = 0.3
    pub = Publisher(broker.port)
    try:
        async with in_process(cfg) as ingest:
            await asyncio.to_thread(pub.publish, sent)
            await eventually(
                lambda: ingest.counts["acked"] == 3, "event batches", within=10, thread=True
            )
            await eventually(
                lambda: ingest.counts["security.event_gap"] == 1, "the gap", within=10, thread=True
            )
            assert ingest.counts["security.event_reset"] == 1
            assert ingest.counts["dead_letter"] == 0
    finally:
        pub.close()
    rep = report_sqlite(tmp_path / "store.sqlite", since_ns=(t - 10**6) * 1000)
    assert sorted((r.kind, r.seq) for r in rep.security) == [("event_gap", 3), ("event_reset", 1)]
    (log,) = rep.event_logs
    assert (log.gateway, log.entries, log.gaps) == ("gw1", 4, [(3, 4)])
    assert [(a, b) for a, b, _ in log.resets] == [(5, 1)]


async def test_qos0_input_is_bounded(tmp_path: Path, broker: Mosquitto) -> None:
    """QoS 0 has no flow control: beyond the bound, messages are dropped and counted,
    not queued (20,000 × 10 kB held used to be 200 MB)."""
    cfg = MqttConfig.model_validate(
        {
            "url": broker.url,
            "client_id": "q0",
            "qos0_max_messages": 50,
            "qos0_max_bytes": 200_000,
        }
    )
    topics = subscription_topics("metrogate", "g", ["data"], shared=False)
    payload = b"x" * 10_000
    pub = Publisher(broker.port)
    try:
        async with MqttSource(cfg, topics) as src:
            async with asyncio.timeout(10):
                await src.connected.wait()
            # the subscription is in place once a probe arrives
            deadline = time.monotonic() + 10
            while src.backlog == 0 and time.monotonic() < deadline:
                await asyncio.to_thread(lambda: pub.publish([(topic("gw1"), b"probe")], qos=0))
                await asyncio.sleep(0.05)
            while src.backlog:
                m = src.get_nowait()
                assert m is not None
                src.ack(m)
            await asyncio.to_thread(lambda: pub.publish([(topic("gw1"), payload)] * 2000, qos=0))
            await eventually(
                # every message of the flood accounted for (held or dropped): none still on
                # its way to refill the room released below
                lambda: src.qos0_dropped + src.backlog >= 2000,
                "the flood dropped",
                within=20,
                thread=True,
            )
            # bytes bind first here: 19 messages of 10 kB + topic fit in 200 kB
            assert src.backlog == 19, (src.backlog, src.qos0_dropped)
            held = [src.get_nowait() for _ in range(src.backlog)]
            for m in held:
                assert m is not None
                src.ack(m)  # done with them: room again
            await asyncio.to_thread(lambda: pub.publish([(topic("gw1"), b"small")] * 30, qos=0))
            await eventually(
                lambda: src.backlog == 30, "taken again once released", within=10, thread=True
            )
    finally:
        pub.close()
