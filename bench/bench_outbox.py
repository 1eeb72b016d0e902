"""Outbox throughput: put() per batch size and durability level, then take()+settle(),
then how long the put of a 600-record tick holds its caller (median, p99, max).

Run from the repository root (or with the package installed):
``PYTHONPATH=. python bench/bench_outbox.py [--seconds S] [--dir DIR]``.
The seal function is the real thing: compact JSON body plus an Ed25519 signature
(``gateway.wire.signing.Signer``), so the put figures include encoding and signing; the
``seal`` column shows that share alone. ``--dir`` should be on the storage the
gateway will use (an SD card behaves very differently from a laptop SSD).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.delivery.outbox import Outbox, SealFn
from gateway.wire.signing import Signer

RECORD = {
    "ts": 1795847523123456,
    "device": "d1",
    "point": "p1",
    "value": 21.5,
    "quality": "good",
    "unit": "degC",
}
MAX_ITERATIONS = 1_000_000


def make_seal(signer: Signer) -> SealFn:
    def seal(kind: str, seq: int, sealed_us: int, records: list[dict[str, Any]]) -> bytes:
        body = {
            "v": 1,
            "type": kind,
            "gateway": "gw-bench",
            "site": "lab",
            "seq": seq,
            "sealed": sealed_us,
            "readings": records,
        }
        return signer.sign_payload(json.dumps(body, separators=(",", ":")).encode())

    return seal


def timed(step: Callable[[], object], seconds: float) -> tuple[int, float]:
    """Run ``step`` repeatedly for about ``seconds``; returns (count, elapsed s)."""
    start = time.perf_counter()
    deadline = start + seconds
    n = 0
    while n < MAX_ITERATIONS:
        step()
        n += 1
        if n % 8 == 0 and time.perf_counter() > deadline:
            break
    return n, time.perf_counter() - start


def bench_put(
    workdir: Path,
    seal: SealFn,
    durability: Literal["process", "power"],
    size: int,
    seconds: float,
) -> dict[str, float]:
    records = [dict(RECORD, point=f"p{i}") for i in range(size)]
    n_seal, t_seal = timed(lambda: seal("data", 1, 0, records), min(seconds, 0.5))
    path = workdir / f"put-{durability}-{size}.db"
    with Outbox(path, seal=seal, max_bytes=1 << 31, durability=durability) as ob:
        timed(lambda: ob.put("data", records), min(seconds, 0.2))  # warm-up
        n, elapsed = timed(lambda: ob.put("data", records), seconds)
        payload = ob.stats().bytes / max(ob.stats().batches, 1)
    return {
        "puts_s": n / elapsed,
        "us_put": elapsed / n * 1e6,
        "seal_us": t_seal / n_seal * 1e6,
        "records_s": n * size / elapsed,
        "payload_b": payload,
    }


def bench_drain(workdir: Path, seal: SealFn, batches: int, per_take: int) -> dict[str, float]:
    records = [dict(RECORD, point=f"p{i}") for i in range(10)]
    path = workdir / "drain.db"
    with Outbox(path, seal=seal, max_bytes=1 << 31) as ob:
        for _ in range(batches):
            ob.put("data", records)
        start = time.perf_counter()
        drained = 0
        for _ in range(batches // per_take + 2):
            taken = ob.take(per_take)
            if not taken:
                break
            ob.settle(b.seq for b in taken)
            drained += len(taken)
        elapsed = time.perf_counter() - start
        assert ob.stats().batches == 0
    return {"batches_s": drained / elapsed, "us_batch": elapsed / drained * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per case (default 2)")
    parser.add_argument("--dir", type=Path, default=None, help="where the outbox files go")
    args = parser.parse_args()
    seal = make_seal(Signer.from_private_key(Ed25519PrivateKey.generate()))
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench-outbox-") as tmp:
        workdir = Path(tmp)
        print(f"outbox put() in {workdir} ({args.seconds:g} s per case)")
        header = (
            f"{'durability':<10} {'records':>7} {'puts/s':>9} {'µs/put':>9} "
            f"{'seal µs':>8} {'records/s':>10} {'payload B':>9}"
        )
        print(header)
        print("-" * len(header))
        for durability in ("process", "power"):
            for size in (1, 10, 100):
                r = bench_put(workdir, seal, durability, size, args.seconds)
                print(
                    f"{durability:<10} {size:>7} {r['puts_s']:>9.0f} {r['us_put']:>9.1f} "
                    f"{r['seal_us']:>8.1f} {r['records_s']:>10.0f} {r['payload_b']:>9.0f}"
                )
        print()
        print("take(N) + settle(seqs), 10-record batches, durability=process")
        print(f"{'per take':>8} {'batches/s':>10} {'µs/batch':>9}")
        for per_take in (1, 10, 100):
            d = bench_drain(workdir, seal, 5000, per_take)
            print(f"{per_take:>8} {d['batches_s']:>10.0f} {d['us_batch']:>9.1f}")
        print()
        tick_latency(workdir, seal)


def tick_latency(workdir: Path, seal: SealFn, puts: int = 1500, size: int = 600) -> None:
    """How long one put of a tick's batch holds the caller (the event loop) — and how
    often it is much longer: the puts that run SQLite's WAL checkpoint (every 4 MiB)."""
    records = [dict(RECORD, point=f"p{i}", value=21.5 + i) for i in range(size)]
    lat: list[float] = []
    with Outbox(workdir / f"latency-{size}.db", seal=seal, max_bytes=10**10) as ob:
        for _ in range(puts):
            t0 = time.perf_counter()
            seqs = ob.put("data", records)
            lat.append((time.perf_counter() - t0) * 1000)
            ob.settle(seqs)  # as the publisher does once acknowledged: the file stays small
    lat.sort()
    median = lat[len(lat) // 2]
    slow = sum(1 for x in lat if x > 3 * median)
    print(
        f"put of a {size}-record batch, {puts} puts (durability=process): median {median:.2f} ms,"
        f" p99 {lat[int(len(lat) * 0.99)]:.2f} ms, max {lat[-1]:.2f} ms;"
        f" {slow} puts over 3 × the median"
    )


if __name__ == "__main__":
    main()
