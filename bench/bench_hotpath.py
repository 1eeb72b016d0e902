"""Micro-measures behind the hot-path choices (bench/README.md, "What each lever bought").

Prints, in µs per reading (best of 5 ``timeit`` repeats):

* constructing a driver ``Sample``: the named tuple it is, against the frozen slotted
  dataclass it was;
* decoding a 60-point float32 poll: one ``unpack`` for a request its points tile,
  against the per-point decoders;
* the wire form of a 600-reading tick: ``to_wire`` dicts encoded by orjson, against
  each point's constant part (device, point, unit) encoded once and the rest
  formatted into bytes around it ("wire fragments prepared once per point").

    python bench/bench_hotpath.py
"""

from __future__ import annotations

import dataclasses
import random
import struct
import sys
import timeit
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drivers.base import Quality, Reason, Sample, Value
from drivers.modbus_codec import DataType, PointSpec, Table
from drivers.modbus_common import compile_request
from drivers.modbus_plan import plan
from gateway.wire.reading import Reading, to_wire

T0 = 1_767_225_600_000_000


@dataclasses.dataclass(slots=True, frozen=True)
class FrozenSample:
    """``Sample`` as it was: a frozen slotted dataclass."""

    point: str
    value: Value | None
    raw: Value | None
    quality: Quality
    reason: Reason | None
    ts_us: int
    flags: tuple[str, ...] = ()
    server_ts_us: int | None = None


def best(fn: Any, number: int, per: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number / per * 1e6


def main() -> None:
    for cls in (Sample, FrozenSample):
        t = best(lambda c=cls: c("p", 1.0, 1.0, Quality.GOOD, None, T0), 200_000, 1)
        print(f"construct {cls.__name__}: {t:.3f} µs")

    n = 60
    specs = [PointSpec(f"p{i}", Table.HOLDING, 2 * i, DataType.FLOAT32) for i in range(n)]
    (req,) = [compile_request(r) for r in plan(specs)]
    values = [random.gauss(5, 1) for _ in range(n)]
    words = list(struct.unpack(f">{2 * n}H", struct.pack(f">{n}f", *values)))
    per_point = dataclasses.replace(req, run=None)
    for name, r in (("one unpack", req), ("per point", per_point)):
        t = best(lambda r=r: r.decode(words, T0), 2000, n)
        print(f"decode a {n}-point poll, {name}: {t:.3f} µs per reading")

    readings = []
    for i in range(600):
        s = Sample(f"p{i % 60}", random.gauss(5, 1), None, Quality.GOOD, None, T0 + i)
        r = Reading.from_sample(f"dev{i // 60}", s, "bar")
        r.degrade(Quality.UNCERTAIN, Reason.CLOCK_NOT_SYNCHRONISED, "clock_not_synchronised")
        readings.append(r)
    const = {
        (r.device, r.point): orjson.dumps({"device": r.device, "point": r.point, "unit": r.unit})[
            1:-1
        ]
        for r in readings
    }

    def dicts() -> bytes:
        return orjson.dumps([to_wire(r) for r in readings])

    def fragments() -> bytes:
        parts = [
            b'{"ts":%d,%s,"value":%s,"quality":"%s","reason":"%s","flags":%s}'
            % (
                r.ts_us,
                const[(r.device, r.point)],
                orjson.dumps(r.value),
                r.quality._value_.encode(),
                r.reason._value_.encode() if r.reason else b"",
                orjson.dumps(r.flags),
            )
            for r in readings
        ]
        return b"[" + b",".join(parts) + b"]"

    assert orjson.loads(dicts()) == orjson.loads(fragments())  # the same records
    for fn in (dicts, fragments):
        t = best(fn, 200, 600)
        print(f"wire form of a 600-reading tick, {fn.__name__}: {t:.3f} µs per reading")


if __name__ == "__main__":
    main()
