"""Ingest end to end: signed batches → Mosquitto → ingest workers → InfluxDB 1.x / VM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from gateway.wire.signing import Signer
from supervision.config import IngestConfig
from supervision.ingest import Ingest, running_ingest
from supervision.report import completeness_influx, report_influx
from tests.db_services import InfluxDB1, VictoriaMetrics
from tests.eventually import eventually, eventually_blocking
from tests.ingest_support import (
    Collector,
    Publisher,
    data_batch,
    data_body,
    new_signer,
    reading,
    register,
    topic,
)
from tests.logfmt import parse_logfmt
from tests.services import Mosquitto

pytestmark = pytest.mark.services  # the test command installs the servers: never skipped
ROOT = Path(__file__).resolve().parents[2]
DB = "mg"
COUNT = "SELECT count(quality) FROM reading"


@pytest.fixture
def signer(tmp_path: Path) -> Signer:
    s = new_signer()
    register(tmp_path / "keys", "gw1", s)
    return s


def config(tmp_path: Path, broker: Mosquitto, store: dict[str, Any], **mqtt: Any) -> dict[str, Any]:
    return {
        "mqtt": {"url": f"mqtt://127.0.0.1:{broker.port}", "client_id": "w1"} | mqtt,
        "keys_dir": str(tmp_path / "keys"),
        "store": store,
        "batch": {"max_lines": 5000, "max_delay": 0.2, "retry_initial": 0.2, "retry_max": 1},
        "stats_interval": 0,
    }


def v1_store(influx: InfluxDB1) -> dict[str, Any]:
    return {"kind": "influxdb_v1", "url": influx.url, "database": DB, "create_database": True}


class Worker:
    """``python -m gateway ingest -c FILE`` as a subprocess."""

    def __init__(self, tmp: Path, name: str, cfg: dict[str, Any]) -> None:
        self.path = tmp / f"{name}.yaml"
        self.path.write_text(json.dumps(cfg))  # JSON is YAML
        self.log = tmp / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", "ingest", "-c", str(self.path)],
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=os.environ | {"PYTHONPATH": str(ROOT)},
            )
        eventually_blocking(
            lambda: "MQTT connected" in self.log.read_text(), "worker connected", within=20
        )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def terminate(self) -> dict[str, int]:
        """SIGTERM, wait, and return the final counters from the log."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(30) == 0, self.log.read_text()[-3000:]
        for line in reversed(self.log.read_text().splitlines()):
            msg = parse_logfmt(line).get("msg", "")
            if msg.startswith("ingest stopped:"):
                counts: dict[str, int] = json.loads(msg.split("ingest stopped:", 1)[1])
                return counts
        raise AssertionError("no final counters in the log")

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@asynccontextmanager
async def in_process(cfg_dict: dict[str, Any]) -> AsyncIterator[Ingest]:
    """An ingest worker running in this event loop, connected; drained and stopped on exit."""
    async with running_ingest(IngestConfig.model_validate(cfg_dict)) as ingest:
        async with asyncio.timeout(10):
            await ingest.connected.wait()
        yield ingest


def test_two_workers_split_the_load_and_a_killed_worker_loses_nothing(
    tmp_path: Path, broker: Mosquitto, influx: InfluxDB1, signer: Signer
) -> None:
    workers = [
        Worker(tmp_path, f"w{n}", config(tmp_path, broker, v1_store(influx), client_id=f"w{n}"))
        for n in (1, 2)
    ]
    pub = Publisher(broker.port)
    try:
        for w in workers:
            w.start()
        per = 50
        pub.publish((topic("gw1"), data_batch(signer, "gw1", s, per)) for s in range(1, 201))
        eventually_blocking(
            lambda: influx.scalar(COUNT, DB) == 200 * per,
            "first 200 batches",
            within=60,
            interval=0.1,
        )
        # kill one worker while messages stream in, then bring it back with its client id
        stream = [(topic("gw1"), data_batch(signer, "gw1", s, per)) for s in range(201, 601)]
        pub.publish(stream[:100])
        workers[0].kill()
        pub.publish(stream[100:])
        workers[0].start()
        eventually_blocking(
            lambda: influx.scalar(COUNT, DB) == 600 * per,
            "all 600 batches",
            within=60,
            interval=0.1,
        )
        counts = [w.terminate() for w in workers]
    finally:
        pub.close()
        for w in workers:
            w.close()
    assert influx.scalar("SELECT count(seq) FROM batch", DB) == 600
    # second worker ran throughout: it took its share of the first 200 batches
    assert counts[1]["received"] >= 80, counts
    assert sum(c.get("dead_letter", 0) for c in counts) == 0


def test_shared_subscription_splits_messages_evenly(
    tmp_path: Path, broker: Mosquitto, influx: InfluxDB1, signer: Signer
) -> None:
    workers = [
        Worker(tmp_path, f"w{n}", config(tmp_path, broker, v1_store(influx), client_id=f"w{n}"))
        for n in (1, 2)
    ]
    pub = Publisher(broker.port)
    try:
        for w in workers:
            w.start()
        pub.publish((topic("gw1"), data_batch(signer, "gw1", s, 10)) for s in range(1, 401))
        eventually_blocking(
            lambda: influx.scalar(COUNT, DB) == 4000, "400 batches", within=60, interval=0.1
        )
        counts = [w.terminate() for w in workers]
    finally:
        pub.close()
        for w in workers:
            w.close()
    shares = [c["received"] / 400 for c in counts]
    assert all(0.4 <= s <= 0.6 for s in shares), shares


async def test_store_outage_holds_messages_bounded_and_loses_nothing(
    tmp_path: Path, broker: Mosquitto, influx: InfluxDB1, signer: Signer
) -> None:
    cfg = config(tmp_path, broker, v1_store(influx), receive_maximum=40)
    cfg["batch"]["max_lines"] = 500
    pub = Publisher(broker.port)
    try:
        async with in_process(cfg) as ingest:
            await asyncio.to_thread(
                pub.publish,
                [(topic("gw1"), data_batch(signer, "gw1", s, 20)) for s in range(1, 51)],
            )
            await eventually(
                lambda: influx.scalar(COUNT, DB) == 1000,
                "first 50 batches",
                within=30,
                thread=True,
                interval=0.1,
            )
            await asyncio.to_thread(influx.stop)
            await asyncio.to_thread(
                pub.publish,
                [(topic("gw1"), data_batch(signer, "gw1", s, 20)) for s in range(51, 351)],
            )
            await eventually(
                lambda: ingest.counts["write_failures"] >= 3, "failed writes", within=30
            )
            # back-pressure: the broker stopped at receive_maximum unacknowledged messages
            held = ingest.counts["received"] - 50
            assert held <= 40, ingest.counts
            assert ingest.counts["acked"] == 50
            await asyncio.to_thread(influx.start)
            await eventually(
                lambda: influx.scalar(COUNT, DB) == 350 * 20,
                "all batches",
                within=60,
                thread=True,
                interval=0.1,
            )
            await eventually(lambda: ingest.counts["acked"] == 350, "all acknowledged", within=10)
    finally:
        pub.close()


async def test_dead_letters_carry_their_reason_and_are_never_written(
    tmp_path: Path, broker: Mosquitto, influx: InfluxDB1, signer: Signer
) -> None:
    dl = Collector(broker.port, "metrogate/deadletter")
    pub = Publisher(broker.port)
    stranger = new_signer()
    other = new_signer()
    register(tmp_path / "keys", "gw2", other)
    good = data_batch(signer, "gw1", 1, 5)
    body, _, trailer = good.rpartition(b"\n")
    tampered = body.replace(b'"p1"', b'"pX"') + b"\n" + trailer
    bad_schema = signer.sign_payload(
        data_body("gw1", 3, [reading(1, "d", "p", 1.0) | {"quality": "excellent"}])
    )
    huge = signer.sign_payload(data_body("gw1", 6, [reading(1, "d", "p", 10**400)]))
    cases = [
        (topic("gw1"), huge, "schema"),  # valid JSON, but no float holds it
        (topic("gw1"), data_batch(stranger, "gw1", 2, 5), "unknown_key"),
        (topic("gw1"), tampered, "bad_signature"),
        (topic("gw9"), data_batch(signer, "gw9", 1, 5), "unknown_gateway"),
        (topic("gw1"), bad_schema, "schema"),
        (topic("gw1"), data_batch(other, "gw1", 4, 5), "key_mismatch"),
        (topic("gw2"), data_batch(signer, "gw1", 5, 5), "key_mismatch"),
        (topic("gw1"), b"not signed at all", "unsigned"),
    ]
    try:
        async with in_process(config(tmp_path, broker, v1_store(influx))) as ingest:
            await asyncio.to_thread(
                pub.publish, [(t, p) for t, p, _ in cases] + [(topic("gw1"), good)]
            )
            await eventually(lambda: len(dl.messages) == len(cases), "dead letters", within=20)
            await eventually(lambda: ingest.counts["acked"] == len(cases) + 1, "acks", within=10)
            # the same forged bytes again: dead-lettered again, filed once
            await asyncio.to_thread(pub.publish, [(topic("gw1"), b"not signed at all")])
            await eventually(lambda: ingest.counts["acked"] == len(cases) + 2, "again", within=10)
    finally:
        pub.close()
        dl.close()
    got = sorted(m["reason"] for m in dl.json())
    assert got == sorted([*(r for _, _, r in cases), "unsigned"])
    assert all(m["topic"] and m["payload_b64"] for m in dl.json())
    assert influx.scalar(COUNT, DB) == 5  # only the good batch
    assert ingest.counts["dead_letter"] == len(cases) + 1
    # each is also a security event: forgeries and other dead letters, under the
    # registered gateway its topic names (else "-"), one per payload
    rep = report_influx(influx.url, DB, since_ns=0)
    assert sorted((r.gateway, r.kind, r.reason) for r in rep.security) == [
        ("-", "dead_letter", "unknown_gateway"),
        ("gw1", "dead_letter", "schema"),
        ("gw1", "dead_letter", "schema"),
        ("gw1", "forgery", "bad_signature"),
        ("gw1", "forgery", "key_mismatch"),
        ("gw1", "forgery", "unknown_key"),
        ("gw1", "forgery", "unsigned"),
        ("gw2", "forgery", "key_mismatch"),
    ]
    assert ingest.counts["security.forgery"] == 5 and ingest.counts["security.dead_letter"] == 3


async def test_replay_is_idempotent_and_a_late_fill_completes_the_day(
    tmp_path: Path, broker: Mosquitto, influx: InfluxDB1, signer: Signer
) -> None:
    batches = {s: data_batch(signer, "gw1", s, 10) for s in range(1, 11)}
    pub = Publisher(broker.port)
    try:
        async with in_process(config(tmp_path, broker, v1_store(influx))) as ingest:
            first = [s for s in batches if s not in (4, 7)]
            await asyncio.to_thread(pub.publish, [(topic("gw1"), batches[s]) for s in first])
            await eventually(
                lambda: influx.scalar(COUNT, DB) == 80,
                "8 batches",
                within=20,
                thread=True,
                interval=0.1,
            )
            # acknowledged = recorded by the sequence tracker (a copy that arrives while
            # its original is still being written is simply written twice, idempotently)
            await eventually(lambda: ingest.counts["acked"] == 8, "8 acknowledged", within=20)
            day = completeness_influx(influx.url, DB)
            assert [(c.gateway, c.received, c.expected) for c in day] == [("gw1", 8, 10)]
            assert day[0].missing == [(4, 4), (7, 7)]
            # a replay of batch 2, then the delayed 4 and 7
            await asyncio.to_thread(pub.publish, [(topic("gw1"), batches[s]) for s in (2, 2, 4, 7)])
            await eventually(lambda: ingest.counts["acked"] == 12, "all acknowledged", within=20)
    finally:
        pub.close()
    assert influx.scalar(COUNT, DB) == 100
    day = completeness_influx(influx.url, DB)
    assert [(c.received, c.expected, c.ratio) for c in day] == [(10, 10, 1.0)]
    assert ingest.counts["duplicate"] == 2
    assert ingest.counts["gap_fill"] == 2


async def test_v2_write_api_into_victoria_metrics(
    tmp_path: Path, broker: Mosquitto, victoria: VictoriaMetrics, signer: Signer
) -> None:
    store = {"kind": "influxdb_v2", "url": victoria.url, "bucket": "mg"}
    pub = Publisher(broker.port)
    try:
        async with in_process(config(tmp_path, broker, store)) as ingest:
            await asyncio.to_thread(
                pub.publish,
                [(topic("gw1"), data_batch(signer, "gw1", s, 50)) for s in range(1, 41)],
            )
            await eventually(lambda: ingest.counts["acked"] == 40, "all acknowledged", within=30)
    finally:
        pub.close()

    def samples() -> int:
        return sum(len(s["values"]) for s in victoria.export('{__name__="reading_value"}'))

    eventually_blocking(
        lambda: samples() == 40 * 50, "all readings in VictoriaMetrics", within=30, interval=0.1
    )
    series = victoria.export('{__name__="reading_value"}')
    assert {s["metric"]["gateway"] for s in series} == {"gw1"}
    assert {s["metric"]["unit"] for s in series} == {"°C"}


async def test_worker_serves_metrics_and_health(
    tmp_path: Path, broker: Mosquitto, signer: Signer
) -> None:
    """The worker's /metrics (Prometheus text) and /health reflect what it did."""
    import urllib.error
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    cfg = config(tmp_path, broker, {"kind": "sqlite", "path": str(tmp_path / "s.db")})
    cfg["ops"] = {"listen": "127.0.0.1:0"}
    pub = Publisher(broker.port)
    try:
        async with in_process(cfg) as ingest:
            await asyncio.to_thread(pub.publish, [(topic("gw1"), data_batch(signer, "gw1", n, 5))
                                         for n in (1, 2, 3)])  # fmt: skip
            await eventually(lambda: ingest.counts["acked"] >= 3, "acks", within=10)
            port = ingest.ops.port

            def get(path: str) -> tuple[int, bytes]:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                        return int(r.status), bytes(r.read())
                except urllib.error.HTTPError as exc:
                    return exc.code, exc.read()

            status, metrics = await asyncio.to_thread(get, "/metrics")
            code, health = await asyncio.to_thread(get, "/health")
    finally:
        pub.close()
    assert status == 200 and code == 200
    samples = {
        s.name: s.value for f in text_string_to_metric_families(metrics.decode()) for s in f.samples
    }
    assert samples["metrogate_ingest_verified_total"] == 3
    assert json.loads(health)["broker_connected"] is True
