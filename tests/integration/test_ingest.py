"""Ingest end to end: signed batches → Mosquitto → ingest workers → InfluxDB 1.x / VM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from gateway.wire.signing import Signer
from supervision.config import IngestConfig
from supervision.ingest import Ingest, running_ingest
from supervision.report import completeness_influx
from tests.db_services import (
    InfluxDB1,
    VictoriaMetrics,
    wait_until,
)
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
        wait_until(lambda: "MQTT connected" in self.log.read_text(), 20, "worker connected")

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


async def blocking(fn: Any, *args: Any) -> Any:
    """Run a blocking call off the event loop on a thread that is joined afterwards."""
    with ThreadPoolExecutor(1) as ex:
        return await asyncio.get_running_loop().run_in_executor(ex, fn, *args)


async def wait_for(cond: Any, limit: float, what: str) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if await blocking(cond):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {limit} s waiting for {what}")


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
        wait_until(lambda: influx.scalar(COUNT, DB) == 200 * per, 60, "first 200 batches")
        # kill one worker while messages stream in, then bring it back with its client id
        stream = [(topic("gw1"), data_batch(signer, "gw1", s, per)) for s in range(201, 601)]
        pub.publish(stream[:100])
        workers[0].kill()
        pub.publish(stream[100:])
        workers[0].start()
        wait_until(lambda: influx.scalar(COUNT, DB) == 600 * per, 60, "all 600 batches")
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
        wait_until(lambda: influx.scalar(COUNT, DB) == 4000, 60, "400 batches")
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
            await blocking(
                pub.publish,
                [(topic("gw1"), data_batch(signer, "gw1", s, 20)) for s in range(1, 51)],
            )
            await wait_for(lambda: influx.scalar(COUNT, DB) == 1000, 30, "first 50 batches")
            influx.stop()
            await blocking(
                pub.publish,
                [(topic("gw1"), data_batch(signer, "gw1", s, 20)) for s in range(51, 351)],
            )
            await wait_for(lambda: ingest.counts["write_failures"] >= 3, 30, "failed writes")
            # back-pressure: the broker stopped at receive_maximum unacknowledged messages
            held = ingest.counts["received"] - 50
            assert held <= 40, ingest.counts
            assert ingest.counts["acked"] == 50
            influx.start()
            await wait_for(lambda: influx.scalar(COUNT, DB) == 350 * 20, 60, "all batches")
            await wait_for(lambda: ingest.counts["acked"] == 350, 10, "all acknowledged")
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
            await blocking(pub.publish, [(t, p) for t, p, _ in cases] + [(topic("gw1"), good)])
            await wait_for(lambda: len(dl.messages) == len(cases), 20, "dead letters")
            await wait_for(lambda: ingest.counts["acked"] == len(cases) + 1, 10, "acks")
    finally:
        pub.close()
        dl.close()
    got = sorted(m["reason"] for m in dl.json())
    assert got == sorted(r for _, _, r in cases)
    assert all(m["topic"] and m["payload_b64"] for m in dl.json())
    assert influx.scalar(COUNT, DB) == 5  # only the good batch
    assert ingest.counts["dead_letter"] == len(cases)


async def test_replay_is_idempotent_and_a_late_fill_completes_the_day(
    tmp_path: Path, broker: Mosquitto, influx: InfluxDB1, signer: Signer
) -> None:
    batches = {s: data_batch(signer, "gw1", s, 10) for s in range(1, 11)}
    pub = Publisher(broker.port)
    try:
        async with in_process(config(tmp_path, broker, v1_store(influx))) as ingest:
            first = [s for s in batches if s not in (4, 7)]
            await blocking(pub.publish, [(topic("gw1"), batches[s]) for s in first])
            await wait_for(lambda: influx.scalar(COUNT, DB) == 80, 20, "8 batches")
            # acknowledged = recorded by the sequence tracker (a copy that arrives while
            # its original is still being written is simply written twice, idempotently)
            await wait_for(lambda: ingest.counts["acked"] == 8, 20, "8 acknowledged")
            day = completeness_influx(influx.url, DB)
            assert [(c.gateway, c.received, c.expected) for c in day] == [("gw1", 8, 10)]
            assert day[0].missing == [(4, 4), (7, 7)]
            # a replay of batch 2, then the delayed 4 and 7
            await blocking(pub.publish, [(topic("gw1"), batches[s]) for s in (2, 2, 4, 7)])
            await wait_for(lambda: ingest.counts["acked"] == 12, 20, "all acknowledged")
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
            await blocking(
                pub.publish,
                [(topic("gw1"), data_batch(signer, "gw1", s, 50)) for s in range(1, 41)],
            )
            await wait_for(lambda: ingest.counts["acked"] == 40, 30, "all acknowledged")
    finally:
        pub.close()

    def samples() -> int:
        return sum(len(s["values"]) for s in victoria.export('{__name__="reading_value"}'))

    wait_until(lambda: samples() == 40 * 50, 30, "all readings in VictoriaMetrics")
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
            await blocking(pub.publish, [(topic("gw1"), data_batch(signer, "gw1", n, 5))
                                         for n in (1, 2, 3)])  # fmt: skip
            await wait_for(lambda: ingest.counts["acked"] >= 3, 10, "acks")
            port = ingest.ops.port

            def get(path: str) -> tuple[int, bytes]:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                        return int(r.status), bytes(r.read())
                except urllib.error.HTTPError as exc:
                    return exc.code, exc.read()

            status, metrics = await blocking(get, "/metrics")
            code, health = await blocking(get, "/health")
    finally:
        pub.close()
    assert status == 200 and code == 200
    samples = {
        s.name: s.value for f in text_string_to_metric_families(metrics.decode()) for s in f.samples
    }
    assert samples["metrogate_ingest_verified_total"] == 3
    assert json.loads(health)["broker_connected"] is True
