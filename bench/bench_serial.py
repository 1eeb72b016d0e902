"""Serial bus benchmark: Modbus RTU polls per second against the wire-time limit.

A byte-paced simulator on a real pty answers like a real line would: each reply
lands when its last byte would have arrived (request bytes + t3.5 + turnaround +
reply bytes at the configured baud), and the bus waits t3.5 before every request.
The physical limit of one transaction is therefore
``(request + reply bytes) × bits per char / baud + 2 × t3.5 + turnaround``.

Reported:

1. one slave, 10 registers, at 9600 and 115200 baud: polls/s and the ratio to the
   limit (target ≥ 90 %);
2. ten slaves on one 115200 line, each polled by its own task as fast as the bus
   allows, first all alive, then with one dead: the others' rate loss next to the
   share of line time the dead slave's timeouts took; then the dead slave comes
   back and the time to its first good reading is compared with its back-off.

Run: ``python -m bench.bench_serial [--seconds 5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from drivers.base import DriverError
from drivers.modbus_codec import DataType, PointSpec, Table
from drivers.modbus_plan import plan
from drivers.modbus_serial import ModbusSerialDriver
from drivers.serial_line import LineSettings, SerialBus, wire_time
from simulators.pty import SimLine
from simulators.serial_instruments import Fault, RtuBusSim, RtuSlave

POINTS = [PointSpec(f"r{i}", Table.HOLDING, i, DataType.UINT16) for i in range(10)]
TURNAROUND = 0.002
REQUEST, REPLY = 8, 5 + 2 * len(POINTS)


async def _poll_for(drv: ModbusSerialDriver, seconds: float, ok: dict[str, int]) -> None:
    end = time.monotonic() + seconds
    for _ in range(10_000_000):
        if time.monotonic() >= end:
            return
        try:
            await drv.read()
            ok[drv.device_id] = ok.get(drv.device_id, 0) + 1
        except DriverError:
            await asyncio.sleep(0)  # quarantined: let the others have the line


async def single(baud: int, seconds: float) -> tuple[float, float]:
    sim = RtuBusSim({1: RtuSlave(POINTS)})
    settings = LineSettings("", baud, "E")
    limit = 1 / wire_time(REQUEST, REPLY, settings, TURNAROUND)
    with SimLine(sim, baudrate=baud, turnaround=TURNAROUND) as line:
        async with SerialBus(LineSettings(line.path, baud, "E")) as bus:
            drv = ModbusSerialDriver("d1", bus, 1, plan(POINTS), timeout=0.5)
            await drv.read()  # open the port outside the measurement
            ok: dict[str, int] = {}
            await _poll_for(drv, seconds, ok)
    rate = ok.get("d1", 0) / seconds
    return rate, limit


async def ten_slaves(seconds: float, dead: int | None, backoff: float) -> dict[str, object]:
    baud, timeout = 115200, 0.05
    sim = RtuBusSim({u: RtuSlave(POINTS) for u in range(1, 11)})
    if dead is not None:
        sim.faults[dead] = {Fault.SILENT}
    with SimLine(sim, baudrate=baud, turnaround=TURNAROUND) as line:
        async with SerialBus(
            LineSettings(line.path, baud, "E"), failures_to_quarantine=3, initial_backoff=backoff,
            max_backoff=backoff,
        ) as bus:  # fmt: skip
            drivers = [
                ModbusSerialDriver(f"d{u}", bus, u, plan(POINTS), timeout=timeout)
                for u in range(1, 11)
            ]
            ok: dict[str, int] = {}
            async with asyncio.TaskGroup() as tg:
                for drv in drivers:
                    tg.create_task(_poll_for(drv, seconds, ok))
            timeouts = bus.stats.timeouts
            recovery = None
            if dead is not None:
                sim.faults[dead] = set()
                started = time.monotonic()
                for _ in range(100_000):
                    try:
                        await drivers[dead - 1].read()
                        recovery = time.monotonic() - started
                        break
                    except DriverError:
                        await asyncio.sleep(0.001)
                    if time.monotonic() - started > 4 * backoff:
                        break
    others = sum(v for k, v in ok.items() if k != f"d{dead}") / seconds
    return {"others_per_s": others, "timeouts": timeouts, "timeout_s": timeouts * timeout,
            "recovery_s": recovery}  # fmt: skip


async def main(seconds: float) -> None:
    print("| baud | polls/s | wire-time limit/s | ratio |")
    print("|---|---|---|---|")
    for baud in (9600, 115200):
        rate, limit = await single(baud, seconds)
        print(f"| {baud} | {rate:.1f} | {limit:.1f} | {rate / limit:.1%} |")
    backoff = 1.0
    alive = await ten_slaves(seconds, None, backoff)
    dead = await ten_slaves(seconds, 5, backoff)
    a, d = float(alive["others_per_s"]), float(dead["others_per_s"])  # type: ignore[arg-type]
    nine_alive = a * 9 / 10
    share = float(dead["timeout_s"]) / seconds  # type: ignore[arg-type]
    loss = 1 - d / nine_alive
    print()
    print(f"10 slaves at 115200, all alive: {a:.1f} polls/s in total ({nine_alive:.1f} for nine)")
    print(f"slave 5 dead: the other nine {d:.1f} polls/s, loss {loss:.1%}; "
          f"its timeouts took {share:.1%} of the line ({dead['timeouts']} × 50 ms)")  # fmt: skip
    rec = dead["recovery_s"]
    print(
        "slave 5 back: first good reading after "
        + (f"{float(rec):.3f}s" if rec is not None else "—")  # type: ignore[arg-type]
        + f" (back-off period {backoff:.1f}s)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    asyncio.run(main(parser.parse_args().seconds))
