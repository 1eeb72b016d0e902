"""µs per reading through the whole device-task chain, no I/O:

registers of a 100-point poll → decode (drivers.modbus_common.CompiledRequest) →
Reading → calibration + 5 rules incl. SPC (the same points as bench_metrology) →
wire form → sealed batch (JSON + Ed25519 signature). The issue's target: ≤ 20 µs.

    python bench/bench_chain.py [--polls 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import random
import statistics
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_metrology import INSTRUMENT, POINT, POINTS, T0
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from drivers.modbus_codec import DataType, PointSpec, Table
from drivers.modbus_common import compile_request
from drivers.modbus_plan import plan
from gateway.metrology.pipeline import DeviceMetrology
from gateway.wire.encoding import make_sealer
from gateway.wire.reading import Reading, to_wire
from gateway.wire.signing import Signer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--polls", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    specs = [PointSpec(f"p{i}", Table.HOLDING, 2 * i, DataType.FLOAT32) for i in range(POINTS)]
    requests = [compile_request(r) for r in plan(specs)]  # as a driver holds them
    rng = random.Random(1)
    polls = []
    for _ in range(args.polls):
        values = [rng.gauss(50, 0.5) for _ in range(POINTS)]
        words = list(struct.unpack(f">{2 * POINTS}H", struct.pack(f">{POINTS}f", *values)))
        polls.append(words)
    seal = make_sealer("gw", "site", Signer.from_private_key(Ed25519PrivateKey.generate()))
    results = []
    for _ in range(args.rounds):
        metro = DeviceMetrology(
            "dev",
            [(f"p{i}", POINT, "degC") for i in range(POINTS)],
            None,
            {"pt100": INSTRUMENT},
            lambda: T0,
        )
        t0 = time.perf_counter()
        for n, words in enumerate(polls):
            ts = T0 + n * 100_000
            samples = []
            for compiled in requests:
                lo, count = compiled.request.address, compiled.request.count
                samples += compiled.decode(words[lo : lo + count], ts)
            readings = [Reading.from_sample("dev", s, "degC") for s in samples]
            metro.process(readings, ts)
            seal("data", n + 1, ts, [to_wire(r) for r in readings])
        results.append((time.perf_counter() - t0) / (args.polls * POINTS) * 1e6)
    print(f"requests per poll: {len(requests)} for {POINTS} float32 points")
    print(
        f"µs per reading, whole chain: median {statistics.median(results):.1f} "
        f"(min {min(results):.1f}, max {max(results):.1f}) over {args.rounds} rounds"
    )


if __name__ == "__main__":
    main()
