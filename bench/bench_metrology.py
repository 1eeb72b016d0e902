"""µs per reading through DeviceMetrology.process: linear calibration + 5 rules.

Each of 100 points has an instrument with a linear correction (with coefficient
uncertainties and resolution), a simple-acceptance spec, high and low limits, a
rate rule, a stuck rule and an individuals SPC chart with all eight Nelson rules.
Polls of 100 readings, values drawn from N(50, 0.5). Readings are built before the
clock starts (that is decode's work). Prints the median over several rounds.

    PYTHONPATH=. python bench/bench_metrology.py [--polls 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from datetime import UTC, datetime

from gateway.config.models.metrology import InstrumentConfig, PointMetrologyFields
from gateway.metrology.pipeline import DeviceMetrology
from gateway.wire.reading import Quality, Reading

POINTS = 100
T0 = int(datetime(2026, 6, 1, tzinfo=UTC).timestamp()) * 1_000_000

INSTRUMENT = InstrumentConfig.model_validate(
    {
        "id": "pt100",
        "range": {"min": 0, "max": 200},
        "resolution": 0.01,
        "calibrations": [
            {
                "certificate": "C-1",
                "date": "2026-01-01",
                "valid_until": "2027-01-01",
                "correction": {
                    "kind": "linear",
                    "c0": -0.12,
                    "c1": 1.0008,
                    "u_c0": 0.02,
                    "u_c1": 2e-4,
                    "correlation": -0.5,
                },
            }
        ],
    }
)

POINT = PointMetrologyFields.model_validate(
    {
        "instrument": "pt100",
        "spec": {"lower": 45, "upper": 55},
        "rules": [
            {"kind": "high", "limit": 53, "deadband": 0.5},
            {"kind": "low", "limit": 47, "deadband": 0.5},
            {"kind": "rate", "max": 5},
            {"kind": "stuck", "count": 50},
        ],
        "spc": {"chart": "individuals", "learn": 25},
    }
)


def one_round(polls: int, seed: int) -> float:
    rng = random.Random(seed)
    dm = DeviceMetrology(
        "bench",
        [(f"p{i}", POINT, "°C") for i in range(POINTS)],
        None,
        {"pt100": INSTRUMENT},
        lambda: T0,
    )
    batches = []
    for n in range(polls):
        ts = T0 + n * 100_000
        batches.append(
            [
                Reading(ts, "bench", f"p{i}", v, v, "°C", Quality.GOOD)
                for i in range(POINTS)
                for v in (round(rng.gauss(50.0, 0.5), 3),)
            ]
        )
    start = time.perf_counter_ns()
    for n, batch in enumerate(batches):
        dm.process(batch, T0 + n * 100_000)
    elapsed = time.perf_counter_ns() - start
    return elapsed / 1000 / (polls * POINTS)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--polls", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    results = [one_round(args.polls, seed) for seed in range(args.rounds)]
    print(
        f"DeviceMetrology.process: {statistics.median(results):.2f} µs/reading "
        f"(median of {args.rounds} rounds of {args.polls} polls × {POINTS} readings; "
        f"min {min(results):.2f}, max {max(results):.2f}; target ≤ 20)"
    )


if __name__ == "__main__":
    main()
