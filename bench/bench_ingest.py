"""Ingest throughput: one worker, Mosquitto → InfluxDB 1.x (v1 /write) and VictoriaMetrics (v2).

Compares with a bare write loop of the same points (pre-built line protocol, 5,000
lines per request: raw HTTP for v1, influxdb-client for v2). Run from the repo root:
``python bench/bench_ingest.py [--messages 1000 --per 100 --rounds 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from supervision.model import parse_batch, parse_topic
from supervision.sinks.influxdb import InfluxV1Sink, InfluxV2Sink
from supervision.sinks.line_protocol import batch_lines
from tests.db_services import InfluxDB1, VictoriaMetrics
from tests.eventually import eventually
from tests.ingest_support import Publisher, data_batch, new_signer, register, topic
from tests.integration.test_ingest import in_process
from tests.services import Mosquitto


async def ingest_run(
    tmp: Path, broker: Mosquitto, store: dict[str, Any], msgs: list[bytes], *, queued: bool
) -> float:
    """Seconds for one worker to verify, write and acknowledge every message.

    ``queued``: the messages wait at the broker for the worker's persistent session
    before it connects, so only the worker runs while timed. Otherwise a publisher
    in this process sends them while the worker runs (and shares its interpreter).
    """
    cfg = {
        "mqtt": {"url": f"mqtt://127.0.0.1:{broker.port}", "client_id": f"b{time.time_ns()}",
                 "group": f"g{time.time_ns()}",  # a retired session keeps its share
                 "receive_maximum": 2000},
        "keys_dir": str(tmp / "keys"), "store": store,
        "batch": {"max_lines": 5000, "max_delay": 0.2}, "stats_interval": 0,
    }  # fmt: skip
    pub = Publisher(broker.port)
    items = [(topic("gw1"), m) for m in msgs]
    if queued:
        async with in_process(cfg):
            pass  # the session and its subscription now exist at the broker
        await asyncio.to_thread(pub.publish, items)
    async with in_process(cfg) as ingest:
        t0 = time.perf_counter()
        loop = asyncio.get_running_loop()
        fut = None if queued else loop.run_in_executor(None, pub.publish, items)
        await eventually(
            lambda: ingest.counts["acked"] >= len(msgs),
            "every message acknowledged",
            within=600,
            interval=0.005,  # the counter is polled: this is the timing's resolution
        )
        elapsed = time.perf_counter() - t0
        if fut is not None:
            await fut
    pub.close()
    return elapsed


async def bare_run(sink: InfluxV1Sink | InfluxV2Sink, msgs: list[bytes]) -> float:
    from gateway.wire.signing import split_payload

    lines: list[str] = []
    for m in msgs:
        site, gw, kind = parse_topic(topic("gw1"))
        lines += batch_lines(parse_batch(split_payload(m)[0], site, gw, kind))
    t0 = time.perf_counter()
    for i in range(0, len(lines), 5000):
        await sink.write([lines[i : i + 5000]])
    elapsed = time.perf_counter() - t0
    await sink.aclose()
    return elapsed


def _spread(xs: list[float]) -> str:
    xs = sorted(xs)
    return f"{xs[0]:.2f} / {statistics.median(xs):.2f} / {xs[-1]:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--per", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=1, help="repeat; min/median/max at the end")
    a = ap.parse_args()
    ratios: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        s = new_signer()
        register(tmp / "keys", "gw1", s)
        n = a.messages * a.per
        batches = [data_batch(s, "gw1", q, a.per) for q in range(1, a.messages + 1)]
        broker, influx, vm = (
            Mosquitto(tmp / "mq"),
            InfluxDB1(tmp / "ix"),
            VictoriaMetrics(tmp / "vm"),
        )
        try:
            for svc in (broker, influx, vm):
                svc.start()
            for r in range(a.rounds):
                # every run writes into a database (bucket) of its own: creating a shard
                # or new series costs more than rewriting points already stored
                bare = InfluxV1Sink(influx.url, f"b{r}", create_database=True)
                asyncio.run(bare.open())
                t_bare = asyncio.run(bare_run(bare, batches))
                for queued in (True, False):
                    v1 = {
                        "kind": "influxdb_v1",
                        "url": influx.url,
                        "database": f"{'q' if queued else 'l'}{r}",
                        "create_database": True,
                    }
                    t_ing = asyncio.run(ingest_run(tmp, broker, v1, batches, queued=queued))
                    mode = f"influxdb 1.x v1 ({'queued' if queued else 'live publisher'})"
                    ratios.setdefault(mode, []).append(t_ing / t_bare)
                    print(
                        f"{mode}: ingest {n / t_ing:,.0f} readings/s, bare write loop "
                        f"{n / t_bare:,.0f} readings/s, ratio {t_ing / t_bare:.2f}"
                    )
                v2 = {"kind": "influxdb_v2", "url": vm.url, "bucket": f"q{r}"}
                t_bare = asyncio.run(bare_run(InfluxV2Sink(vm.url, f"b{r}"), batches))
                t_ing = asyncio.run(ingest_run(tmp, broker, v2, batches, queued=True))
                mode = "victoria-metrics v2 (queued)"
                ratios.setdefault(mode, []).append(t_ing / t_bare)
                print(f"{mode}: ingest {n / t_ing:,.0f} readings/s, bare "
                      f"influxdb-client loop {n / t_bare:,.0f} readings/s, "
                      f"ratio {t_ing / t_bare:.2f}")  # fmt: skip
        finally:
            for svc in (broker, influx, vm):
                svc.close()
    if a.rounds > 1:
        for mode, xs in ratios.items():
            print(f"{mode}: ratio min / median / max over {len(xs)} rounds: {_spread(xs)}")


if __name__ == "__main__":
    main()
