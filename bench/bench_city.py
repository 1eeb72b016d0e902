"""Ingest at city scale: 1,010 gateways, Mosquitto → ``metrogate ingest`` → InfluxDB 1.x.

Every gateway has its own Ed25519 key, registered in a real ``keys_dir``, and sends
real batches sealed by the gateway's own sealer (``gateway.wire.encoding.make_sealer``
over ``gateway.wire.reading.to_wire``): one batch per simulated second, increasing
``seq``, on ``metrogate/v1/<site>/<gateway>/data`` with ten gateways per site.
Light gateways send 10 readings a batch, heavy ones 600. All batches are sealed
before anything is timed and wait at the broker in the workers' persistent sessions
(one shared subscription, ``$share/<group>/…``) before the workers start, so the
publisher's cost is outside the measurement; then 1 or 2 real ``metrogate ingest``
processes drain them. Timed per worker from its first message received to its last
acknowledgement (its ``/health`` counters, polled every 20 ms).

Baseline, in the same run: a bare write loop of the same points (pre-built line
protocol, 5,000 lines per request, raw HTTP) into InfluxDB — the store's own ceiling.

Memory: ``VmRSS`` of an idle worker with 0, 1,010 and ``--memory-gateways`` keys
registered, and of the worker after the traffic → bytes per registered gateway. Then,
in this process with tracemalloc, what each per-gateway structure costs (key ring,
sequence tracker after the traffic and at its steady state, line-protocol memos).

Completeness: afterwards InfluxDB must hold exactly the readings and batch numbers
sent, per gateway, the completeness report (``supervision.report``) must show no
gap, and no message may have been dead-lettered, duplicated or filled in as a gap.

Run from the repo root: ``.venv/bin/python bench/bench_city.py [--seconds 20 --rounds 3]``;
``--smoke`` runs the same code at a tiny scale (the test suite does that).
"""

from __future__ import annotations

import argparse
import base64
import gc
import hashlib
import http.client
import json
import os
import pstats
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from bench.common import cpu_seconds  # noqa: E402
from drivers.base import Quality  # noqa: E402
from gateway.wire.encoding import make_sealer  # noqa: E402
from gateway.wire.reading import Reading, to_wire  # noqa: E402
from gateway.wire.signing import Signer, split_payload  # noqa: E402
from supervision.model import parse_batch, parse_topic  # noqa: E402
from supervision.report import completeness_influx  # noqa: E402
from supervision.sinks.line_protocol import batch_lines  # noqa: E402
from tests.db_services import InfluxDB1  # noqa: E402
from tests.eventually import eventually_blocking  # noqa: E402
from tests.ingest_support import T0_US, Publisher, register  # noqa: E402
from tests.services import Mosquitto, free_port  # noqa: E402

PREFIX = "metrogate"
GATEWAYS_PER_SITE = 10


@dataclass(frozen=True, slots=True)
class Fleet:
    """Who sends: ``(site, gateway, readings per batch)``, with the signers."""

    members: list[tuple[str, str, int]]
    signers: list[Signer]

    @property
    def readings_per_second(self) -> int:
        return sum(n for _, _, n in self.members)


def make_fleet(light: int, heavy: int, per: int, heavy_per: int) -> Fleet:
    members = [(f"site{i // GATEWAYS_PER_SITE:03d}", f"gw{i:05d}", per) for i in range(light)]
    members += [(f"plant{i:02d}", f"heavy{i:02d}", heavy_per) for i in range(heavy)]
    signers = [Signer.from_private_key(Ed25519PrivateKey.generate()) for _ in members]
    return Fleet(members, signers)


def register_keys(keys_dir: Path, names: list[str], signers: list[Signer]) -> None:
    keys_dir.mkdir(parents=True, exist_ok=True)
    for name, s in zip(names, signers, strict=True):
        register(keys_dir, name, s)


def _readings(second: int, n: int) -> list[Reading]:
    """One poll of ``n`` points: devices of 5 points (light) or 30 (heavy)."""
    per_device = 5 if n <= 10 else 30
    base = T0_US + second * 1_000_000
    out = []
    for i in range(n):
        d, p = divmod(i, per_device)
        out.append(
            Reading(
                ts_us=base + d * 1000,
                device=f"dev{d}",
                point=f"p{p}",
                value=20.0 + (second % 60) * 0.01 + p,
                raw=2000 + second % 1000 + p,
                unit="kWh" if p % 2 else "bar",
                quality=Quality.GOOD,
                uncertainty=0.05 if p == 0 else None,
                coverage=2.0 if p == 0 else None,
                instrument=f"M-{d}" if p == 0 else None,
            )
        )
    return out


def seal_all(fleet: Fleet, seconds: int) -> list[tuple[str, bytes]]:
    """Every batch of ``seconds`` simulated seconds, in arrival order: second by second,
    the gateways in a shuffled order within each."""
    rng = random.Random(12)  # the same order in every run
    sealers = [
        make_sealer(gw, site, s)
        for (site, gw, _), s in zip(fleet.members, fleet.signers, strict=True)
    ]
    out: list[tuple[str, bytes]] = []
    for sec in range(1, seconds + 1):
        second = []
        for (site, gw, n), seal in zip(fleet.members, sealers, strict=True):
            records = [to_wire(r) for r in _readings(sec, n)]
            body = seal("data", sec, T0_US + sec * 1_000_000 + 500_000, records)
            second.append((f"{PREFIX}/v1/{site}/{gw}/data", body))
        # gateways' clocks are not in step: within a second they arrive in any order, so
        # a shared subscription gives each worker some of every gateway's numbers
        rng.shuffle(second)
        out += second
    return out


# -- the bare write loop -----------------------------------------------------------------


WARM_NS = 86_400 * 10**9  # warm-up points: a day after the traffic (the same shard)


def lines_of(msgs: list[tuple[str, bytes]]) -> list[str]:
    lines: list[str] = []
    for t, m in msgs:
        site, gw, kind = parse_topic(t)
        lines += batch_lines(parse_batch(split_payload(m)[0], site, gw, kind))
    return lines


def write_lines(influx: InfluxDB1, database: str, lines: list[str]) -> float:
    """Seconds to write ``lines``, 5,000 per request (raw HTTP), creating the database."""
    influx.query(f'CREATE DATABASE "{database}"')
    bodies = ["\n".join(lines[i : i + 5000]).encode() for i in range(0, len(lines), 5000)]
    c = http.client.HTTPConnection("127.0.0.1", influx.port, timeout=60)
    t0 = time.perf_counter()
    for b in bodies:
        c.request("POST", f"/write?db={database}&precision=ns", b)
        r = c.getresponse()
        r.read()
        assert r.status == 204, r.status
    elapsed = time.perf_counter() - t0
    c.close()
    return elapsed


def warm_up(influx: InfluxDB1, database: str, first_second: list[tuple[str, bytes]]) -> None:
    """Create every series first, as a city's long-running gateways have: the readings of
    the first second again, a day later (no batch records, so completeness is untouched)."""
    out = []
    for line in lines_of(first_second):
        if line.startswith("reading,"):
            head, ts = line.rsplit(" ", 1)
            out.append(f"{head} {int(ts) + WARM_NS}")
    write_lines(influx, database, out)


# -- worker processes ----------------------------------------------------------------------


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


@dataclass
class Worker:
    """``python -m gateway ingest -c FILE`` with its ops endpoint on a free port."""

    path: Path
    ops_port: int
    proc: subprocess.Popen[bytes] | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.path.with_suffix(".log")

    @classmethod
    def configured(
        cls, tmp: Path, name: str, broker: Mosquitto, keys: Path, store: dict[str, Any], group: str
    ) -> Worker:
        port = free_port()
        cfg = {
            "mqtt": {"url": broker.url, "client_id": name, "group": group,
                     "receive_maximum": 2000},
            "keys_dir": str(keys),
            "store": store,
            "batch": {"max_lines": 5000, "max_delay": 0.2},
            "stats_interval": 0,
            "ops": {"listen": f"127.0.0.1:{port}"},
        }  # fmt: skip
        path = tmp / f"{name}.yaml"
        path.write_text(json.dumps(cfg))  # JSON is YAML
        return cls(path, port)

    profile: Path | None = None  # run under cProfile, its statistics written here

    def start(self) -> None:
        prof = [] if self.profile is None else ["-m", "cProfile", "-o", str(self.profile)]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, *prof, "-m", "gateway", "ingest", "-c", str(self.path)],
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=os.environ | {"PYTHONPATH": str(REPO)},
            )

    def health(self) -> dict[str, Any] | None:
        try:
            c = http.client.HTTPConnection("127.0.0.1", self.ops_port, timeout=2)
            c.request("GET", "/health")
            doc: dict[str, Any] = json.loads(c.getresponse().read())
            c.close()
            return doc
        except (OSError, ValueError):
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited: {self.log.read_text()[-2000:]}") from None
            return None

    def wait_connected(self) -> None:
        def up() -> bool:
            h = self.health()
            return h is not None and bool(h["broker_connected"])

        eventually_blocking(up, f"worker {self.path.stem} connected", within=60, interval=0.05)

    def gap_batches(self) -> int:
        """The sum of ``metrogate_ingest_gap_batches`` over gateways (its /metrics)."""
        c = http.client.HTTPConnection("127.0.0.1", self.ops_port, timeout=10)
        c.request("GET", "/metrics")
        text = c.getresponse().read().decode()
        c.close()
        prefix = "metrogate_ingest_gap_batches{"
        return sum(
            int(float(x.rsplit(" ", 1)[1])) for x in text.splitlines() if x.startswith(prefix)
        )

    @property
    def rss_kb(self) -> int:
        assert self.proc is not None
        return rss_kb(self.proc.pid)

    def stop(self) -> dict[str, int]:
        """SIGTERM; the final counters from its log."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(60) == 0, self.log.read_text()[-3000:]
        self.proc = None
        for line in reversed(self.log.read_text().splitlines()):
            if "ingest stopped:" in line:
                tail = line.split("ingest stopped:", 1)[1].strip().strip('"')
                counts: dict[str, int] = json.loads(tail.replace('\\"', '"'))
                return counts
        raise AssertionError("no final counters in the log")


def idle_rss_kb(tmp: Path, broker: Mosquitto, keys: Path, store: dict[str, Any]) -> int:
    """RSS of a connected, idle worker with ``keys`` registered (after a short settle)."""
    w = Worker.configured(tmp, f"idle{time.time_ns()}", broker, keys, store, f"i{time.time_ns()}")
    w.start()
    try:
        w.wait_connected()
        time.sleep(1.0)  # let start-up garbage go before reading RSS
        return w.rss_kb
    finally:
        w.stop()


@dataclass(frozen=True, slots=True)
class Drained:
    seconds: float  # first message received → last acknowledged, over all workers
    per_worker: list[tuple[int, float]]  # (readings written, seconds) of each worker
    cpu_s: list[float]  # CPU seconds of each worker over the same span
    rss_after_kb: list[int]
    rss_before_kb: list[int]
    counts: list[dict[str, int]]
    gaps: list[int]  # sequence numbers each worker's tracker holds as not seen


def drain(
    tmp: Path,
    broker: Mosquitto,
    keys: Path,
    store: dict[str, Any],
    msgs: list[tuple[str, bytes]],
    n_workers: int,
    tag: str,
    profile: Path | None = None,
) -> Drained:
    """Queue ``msgs`` in the sessions of ``n_workers`` workers of one group, then drain."""
    group = f"city{tag}"
    workers = [
        Worker.configured(tmp, f"{tag}w{i}", broker, keys, store, group) for i in range(n_workers)
    ]
    for w in workers:  # the sessions (and the shared subscription) now exist at the broker
        w.start()
    for w in workers:
        w.wait_connected()
    rss_before = [w.rss_kb for w in workers]
    for w in workers:
        w.stop()
    pub = Publisher(broker.port)
    pub.publish(msgs, timeout=600)
    pub.close()
    for w in workers:
        w.profile = profile
        w.start()
    first: list[float | None] = [None] * n_workers
    last: list[float] = [0.0] * n_workers
    cpu0 = [0.0] * n_workers
    cpu1 = [0.0] * n_workers
    acked = [0] * n_workers
    deadline = time.monotonic() + 900
    while sum(acked) < len(msgs):
        assert time.monotonic() < deadline, f"only {sum(acked)} of {len(msgs)} acknowledged"
        for i, w in enumerate(workers):
            h = w.health()
            now = time.perf_counter()
            if h is None:
                continue
            c = h["counts"]
            assert w.proc is not None
            if first[i] is None and c.get("received", 0) > 0:
                first[i], cpu0[i] = now, cpu_seconds(w.proc.pid)
            if c.get("acked", 0) != acked[i]:
                acked[i], last[i] = c.get("acked", 0), now
                cpu1[i] = cpu_seconds(w.proc.pid)
        time.sleep(0.02)
    rss_after = [w.rss_kb for w in workers]
    gaps = [w.gap_batches() for w in workers]
    counts = [w.stop() for w in workers]
    starts = [f for f in first if f is not None]
    per_worker = [
        (c.get("readings_written", 0), last[i] - (first[i] or last[i]))
        for i, c in enumerate(counts)
    ]
    cpu = [b - a for a, b in zip(cpu0, cpu1, strict=True)]
    # the health endpoints are polled every 20 ms: a tiny run may be over within one poll
    elapsed = max(max(last) - min(starts), 0.02)
    return Drained(elapsed, per_worker, cpu, rss_after, rss_before, counts, gaps)


# -- completeness --------------------------------------------------------------------------


def check_complete(
    influx: InfluxDB1, database: str, fleet: Fleet, seconds: int, counts: list[dict[str, int]]
) -> str:
    """Raises AssertionError unless exactly what was sent is stored; a one-line summary."""
    res = influx.query(
        f"SELECT count(quality) FROM reading WHERE time < {T0_US * 1000 + WARM_NS} "
        "GROUP BY gateway",
        database,
    )
    got = {s["tags"]["gateway"]: s["values"][0][1] for s in res["results"][0].get("series", [])}
    want = {gw: n * seconds for _, gw, n in fleet.members}
    assert got == want, f"readings per gateway differ: {len(got)} gateways stored"
    comp = completeness_influx(influx.url, database)
    assert {c.gateway for c in comp} == set(want), "a gateway has no batch records"
    bad = [c for c in comp if c.received != seconds or c.expected != seconds or c.missing]
    assert not bad, f"completeness not exact: {bad[:3]}"
    total = Counter_sum(counts)
    for k in ("dead_letter", "duplicate", "gap_fill", "replay", "internal_error"):
        assert total.get(k, 0) == 0, f"{k}: {total.get(k)}"
    # several workers: one that starts after another stored a gateway's higher numbers
    # takes those as its starting point and looks its own lower ones up (``late``)
    assert len(counts) > 1 or not total.get("late"), total
    n_msgs = len(fleet.members) * seconds
    assert total["acked"] == n_msgs and total["verified"] == n_msgs, total
    assert total["readings_written"] == sum(want.values()), total
    return (
        f"complete: {sum(want.values()):,} readings and {n_msgs:,} batches of "
        f"{len(want):,} gateways stored exactly, completeness 100 % for each, no gap, "
        f"no dead letter, no duplicate"
        + (f" ({total['late']} looked up as late)" if total.get("late") else "")
    )


def Counter_sum(counts: list[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in counts:
        for k, v in c.items():
            out[k] = out.get(k, 0) + v
    return out


# -- per-gateway structures, in this process ----------------------------------------------


def traced(build: Callable[[], object]) -> tuple[int, object]:
    """Bytes still allocated after ``build()`` (tracemalloc), and what it built."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    obj = build()
    gc.collect()
    size = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return size, obj


def structures(keys: Path, fleet: Fleet, msgs: list[tuple[str, bytes]], seconds: int) -> None:
    """Bytes per gateway of the worker's per-gateway state, measured with tracemalloc."""
    import supervision.ingest
    from gateway.wire.verify import SequenceTracker, verify_batch
    from supervision.keyring import Keyring

    n = len(fleet.members)
    size, ring = traced(lambda: Keyring.load(keys))
    assert isinstance(ring, Keyring)
    print(f"  key ring ({n:,} keys): {size / n:,.0f} B per gateway")
    for t, m in msgs[:n]:  # the key ring verifies what the fleet sends
        assert verify_batch(m, ring.keys).gateway == parse_topic(t)[1]

    def digest(gw: str, seq: int) -> bytes:  # as the worker keeps it: hex, one object each
        return hashlib.sha256(f"{gw}/{seq}".encode()).hexdigest().encode()

    def tracked(rounds: int) -> SequenceTracker:
        # one record per gateway per simulated second, as the worker makes them
        clock = iter(range(10**9))
        tr = SequenceTracker(clock=lambda: float(next(clock)) / n)
        for r in range(rounds):
            for _, gw, _ in fleet.members:
                tr.record(gw, r + 1, digest=digest(gw, r + 1), sealed=T0_US + r)
        return tr

    size, _ = traced(lambda: tracked(seconds))
    print(f"  sequence tracker after {seconds} batches each: {size / n:,.0f} B per gateway")
    steady = 3600  # the duplicate window: one hour of batches at 1 per second
    sample = max(1, min(n, 100))
    names = [gw for _, gw, _ in fleet.members[:sample]]

    def tracked_steady(every: int, **sizes: int) -> Callable[[], SequenceTracker]:
        """A worker that is given every ``every``-th number of each gateway for an hour."""

        def build() -> SequenceTracker:
            clock = iter(range(10**9))
            tr = SequenceTracker(clock=lambda: float(next(clock)) / sample, **sizes)
            for seq in range(1, steady + 1, every):
                for gw in names:
                    tr.record(gw, seq, digest=digest(gw, seq), sealed=T0_US + seq)
            return tr

        return build

    # what the worker sizes its tracker to when the store answers lookups (if it does)
    remember = getattr(supervision.ingest, "_REMEMBER_WITH_LOOKUPS", None)
    gap_ranges = getattr(supervision.ingest, "_GAP_RANGES_WITH_LOOKUPS", None)
    lookups = {} if remember is None else {"remember": remember, "max_gap_ranges": gap_ranges}
    for label, every, sizes in (
        ("store without lookups (VictoriaMetrics), 1 worker", 1, {}),
        ("store without lookups, 2 workers (every other number)", 2, {}),
        ("store with lookups (InfluxDB 1.x, SQLite), 1 worker", 1, lookups),
        ("store with lookups, 2 workers (every other number)", 2, lookups),
    ):
        size, _ = traced(tracked_steady(every, **sizes))
        print(
            f"  sequence tracker after 1 h at 1 batch/s, {label}: {size / sample:,.0f} B "
            "per gateway"
        )
    from supervision.model import parse_verified
    from supervision.sinks.influxdb import InfluxV1Sink

    sink = InfluxV1Sink("http://127.0.0.1:9", "unused")  # encodes; never connects here
    verified = [(parse_topic(t), verify_batch(m, ring.keys)) for t, m in msgs[: 2 * n]]

    def encoded() -> InfluxV1Sink:
        # as the worker: parse (rows left unchecked) and encode; the memos keep what the
        # first batch of each gateway held, the second one finds it
        for (site, gw, kind), vb in verified:
            sink.encode(parse_verified(vb, site, gw, kind, rows=False))
        return sink

    size, _ = traced(encoded)
    print(f"  line-protocol memos (the sink's encoder): {size / n:,.0f} B per gateway")


def pipeline(keys: Path, fleet: Fleet, msgs: list[tuple[str, bytes]]) -> None:
    """µs per message of each stage of the worker's own work, in this process, with no
    broker or store (two passes, the second printed): where one core's time goes."""
    from concurrent.futures import ThreadPoolExecutor

    from gateway.wire.verify import verify_batch
    from supervision.keyring import Keyring
    from supervision.model import parse_verified
    from supervision.sinks.influxdb import InfluxV1Sink

    ring = Keyring.load(keys)
    sink = InfluxV1Sink("http://127.0.0.1:9", "unused")  # encodes; never connects here
    sample = msgs[: 5 * len(fleet.members)]
    for _ in range(2):
        t = dict.fromkeys(("verify_batch", "parse", "encode"), 0.0)
        readings = 0
        for tp, m in sample:
            a = time.perf_counter()
            site, gw, kind = parse_topic(tp)
            vb = verify_batch(m, ring.keys)
            b = time.perf_counter()
            batch = parse_verified(vb, site, gw, kind, rows=False)
            c = time.perf_counter()
            sink.encode(batch)
            d = time.perf_counter()
            readings += batch.size
            t["verify_batch"] += b - a
            t["parse"] += c - b
            t["encode"] += d - c
    total = sum(t.values())
    parts = [(split_payload(m), ring.keys) for _, m in sample]

    def signatures(chunk: list[Any]) -> float:
        t0 = time.perf_counter()
        for (body, sig), ks in chunk:
            ks[sig["kid"]].verify(base64.b64decode(sig["sig"]), body)
        return time.perf_counter() - t0

    sig_s = signatures(parts)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(2) as ex:
        list(ex.map(signatures, [parts[0::2], parts[1::2]]))
    two = time.perf_counter() - t0
    per = 1e6 / len(sample)
    print(
        f"  µs per message (average {readings / len(sample):.1f} readings): verify_batch "
        f"{t['verify_batch'] * per:.0f} (of which the Ed25519 signature {sig_s * per:.0f}), "
        f"parse {t['parse'] * per:.0f}, check + line protocol {t['encode'] * per:.0f}; "
        f"total {total * per:.0f} = {total / readings * 1e6:.1f} µs per reading → at most "
        f"{readings / total:,.0f} readings/s on one core (the signatures alone: "
        f"{readings / sig_s:,.0f}); the signatures on 2 threads: {sig_s / two:.2f}× one"
    )


# -- main ----------------------------------------------------------------------------------


def _spread(xs: list[float], fmt: str = ",.0f") -> str:
    xs = sorted(xs)
    return f"{xs[0]:{fmt}} / {statistics.median(xs):{fmt}} / {xs[-1]:{fmt}}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gateways", type=int, default=1000, help="light gateways")
    ap.add_argument("--heavy", type=int, default=10, help="heavy gateways")
    ap.add_argument("--per", type=int, default=10, help="readings per light batch")
    ap.add_argument("--heavy-per", type=int, default=600, help="readings per heavy batch")
    ap.add_argument("--seconds", type=int, default=20, help="simulated seconds of traffic")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", default="1,2", help="worker counts to run, comma-separated")
    ap.add_argument("--memory-gateways", type=int, default=10_000)
    ap.add_argument("--smoke", action="store_true", help="tiny scale, one round (a test)")
    ap.add_argument(
        "--profile",
        type=Path,
        help="instead: one worker under cProfile (statistics to this file, top 30 printed)",
    )
    a = ap.parse_args(argv)
    if a.smoke:
        a.gateways, a.heavy, a.heavy_per, a.seconds, a.rounds = 20, 1, 60, 3, 1
        a.memory_gateways = 0
    worker_counts = [int(x) for x in a.workers.split(",")]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        t = time.perf_counter()
        fleet = make_fleet(a.gateways, a.heavy, a.per, a.heavy_per)
        keys = tmp / "keys"
        register_keys(keys, [gw for _, gw, _ in fleet.members], fleet.signers)
        msgs = seal_all(fleet, a.seconds)
        n_readings = fleet.readings_per_second * a.seconds
        print(
            f"{len(fleet.members):,} gateways ({a.gateways:,} × {a.per} readings, {a.heavy} × "
            f"{a.heavy_per}), {a.seconds} s of traffic: {len(msgs):,} sealed batches, "
            f"{n_readings:,} readings, {sum(len(m) for _, m in msgs) / 1e6:.1f} MB "
            f"(sealed in {time.perf_counter() - t:.1f} s)"
        )
        broker, influx = Mosquitto(tmp / "mq"), InfluxDB1(tmp / "ix")
        rates: dict[str, list[float]] = {}
        ratios: dict[str, list[float]] = {}
        mem: dict[str, list[float]] = {}
        try:
            broker.start()
            influx.start()
            empty = tmp / "nokeys"
            empty.mkdir()
            many = tmp / "manykeys"
            if a.memory_gateways:
                names = [f"m{i:06d}" for i in range(a.memory_gateways)]
                ks = [Signer.from_private_key(Ed25519PrivateKey.generate()) for _ in names]
                register_keys(many, names, ks)
            if a.profile is not None:
                store = {"kind": "influxdb_v1", "url": influx.url, "database": "prof",
                         "create_database": True}  # fmt: skip
                warm_up(influx, "prof", msgs[: len(fleet.members)])
                res = drain(tmp, broker, keys, store, msgs, 1, "prof", a.profile)
                print(f"1 worker under cProfile: {n_readings / res.seconds:,.0f} readings/s")
                pstats.Stats(str(a.profile)).sort_stats("tottime").print_stats(30)
                a.rounds = 0
            for r in range(a.rounds):
                db_bare = f"bare{r}"
                warm_up(influx, db_bare, msgs[: len(fleet.members)])
                t_bare = write_lines(influx, db_bare, lines_of(msgs))
                bare_rate = n_readings / t_bare
                rates.setdefault("bare write loop", []).append(bare_rate)
                print(f"round {r + 1}: bare write loop {bare_rate:,.0f} readings/s")
                store0 = {"kind": "influxdb_v1", "url": influx.url, "database": f"idle{r}",
                          "create_database": True}  # fmt: skip
                rss0 = idle_rss_kb(tmp, broker, empty, store0)
                mem.setdefault("rss0", []).append(rss0 / 1024)
                line = f"  idle worker RSS: no key {rss0 / 1024:.1f} MB"
                if a.memory_gateways:
                    rss_many = idle_rss_kb(tmp, broker, many, store0)
                    per = (rss_many - rss0) * 1024 / a.memory_gateways
                    mem.setdefault("per_gw_many", []).append(per)
                    line += (
                        f", {a.memory_gateways:,} keys {rss_many / 1024:.1f} MB "
                        f"({per:,.0f} B per registered gateway)"
                    )
                print(line)
                for n_w in worker_counts:
                    db = f"city{r}w{n_w}"
                    store = {"kind": "influxdb_v1", "url": influx.url, "database": db,
                             "create_database": True}  # fmt: skip
                    warm_up(influx, db, msgs[: len(fleet.members)])
                    res = drain(tmp, broker, keys, store, msgs, n_w, f"r{r}n{n_w}")
                    print("  " + check_complete(influx, db, fleet, a.seconds, res.counts))
                    agg = n_readings / res.seconds
                    mode = f"{n_w} worker{'s' if n_w > 1 else ''}"
                    each = [w / s for w, s in res.per_worker if s > 0]
                    cpu_rate = [
                        w / c for (w, _), c in zip(res.per_worker, res.cpu_s, strict=True) if c > 0
                    ]
                    rates.setdefault(f"{mode}: per worker", []).extend(each)
                    rates.setdefault(f"{mode}: per worker CPU-second", []).extend(cpu_rate)
                    rates.setdefault(f"{mode}: together", []).append(agg)
                    ratios.setdefault(mode, []).append(bare_rate / agg)
                    g = len(fleet.members)
                    before = [(b - rss0) * 1024 / g for b in res.rss_before_kb]
                    after = [(x - rss0) * 1024 / g for x in res.rss_after_kb]
                    mem.setdefault(f"{mode}: registered", []).extend(before)
                    mem.setdefault(f"{mode}: after traffic", []).extend(after)
                    print(
                        f"  {mode}: {agg:,.0f} readings/s together, per worker "
                        + ", ".join(f"{x:,.0f}" for x in each)
                        + " readings/s ("
                        + ", ".join(f"{x:,.0f}" for x in cpu_rate)
                        + " per CPU-second of the worker; CPU "
                        + ", ".join(
                            f"{c / s:.0%}" if s > 0 else "no message"
                            for (_, s), c in zip(res.per_worker, res.cpu_s, strict=True)
                        )
                        + f"); time ÷ bare loop's {agg and n_readings / agg / t_bare:.2f}; "
                        + "tracker gaps "
                        + ", ".join(f"{g:,}" for g in res.gaps)
                        + "; RSS idle "
                        + ", ".join(f"{b / 1024:.1f}" for b in res.rss_before_kb)
                        + " MB, after traffic "
                        + ", ".join(f"{b / 1024:.1f}" for b in res.rss_after_kb)
                        + f" MB → {statistics.mean(before):,.0f} B per registered gateway "
                        f"idle, {statistics.mean(after):,.0f} B after traffic; shares "
                        + ", ".join(f"{c.get('acked', 0):,}" for c in res.counts)
                        + " batches"
                    )
        finally:
            broker.stop()
            influx.close()
        if a.profile is None:
            print("the worker's own work per message, this process (no broker, no store):")
            pipeline(keys, fleet, msgs)
            print("per-gateway state in the worker (tracemalloc, this process):")
            structures(keys, fleet, msgs, a.seconds)
    if a.rounds > 1:
        print(f"over {a.rounds} rounds, min / median / max:")
        for k, xs in rates.items():
            print(f"  {k}: {_spread(xs)} readings/s")
        for k, xs in ratios.items():
            print(f"  {k}: time ÷ bare loop's {_spread(xs, '.2f')}")
        for k, xs in mem.items():
            unit = "MB" if k == "rss0" else "B per gateway"
            print(f"  memory {k}: {_spread(xs, ',.1f' if k == 'rss0' else ',.0f')} {unit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
