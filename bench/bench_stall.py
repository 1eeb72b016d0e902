"""The longest event-loop stall of a running gateway: polling, saving rule state, reloading.

A gateway runs in this process, so a 1 ms probe timer shares its event loop and
sees every stall (how late the timer fires: a lower bound of the stall, within
1 ms). DEVICES × POINTS Modbus TCP float32 points, each with a high-limit and a
stuck rule, are polled every second from ``metrogate sim`` in its own process;
readings go to a real Mosquitto. After a warm-up the script measures:

1. steady polling for ``--quiet`` seconds;
2. saving every device's rule state, as the daemon does once a minute;
3. a SIGHUP reload of the whole file with one legally relevant change (a unit),
   from the signal until every new device task has polled, plus two seconds.

It imports nothing the code under test does not have, so the same script measures
an older tree too (``--tree PATH`` imports the gateway from there; that is how the
"before" column of bench/README.md was taken).

    .venv/bin/python bench/bench_stall.py [--devices 100] [--points 50] [--quiet 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--points", type=int, default=50)
    ap.add_argument("--quiet", type=float, default=10.0, help="seconds of steady polling")
    ap.add_argument("--tree", type=Path, default=None, help="import the gateway from here")
    return ap.parse_args()


ARGS = parse_args()

from common import REPO, start_sim, stop  # noqa: E402 — puts this tree on sys.path

if ARGS.tree is not None:  # in front of it: the gateway under test comes from there
    sys.path.insert(0, str(ARGS.tree.resolve()))

import gateway  # noqa: E402
from gateway.acquisition.clock import ClockMonitor, SyncState  # noqa: E402
from gateway.audit.parameters import parameters_json  # noqa: E402
from gateway.config.loader import load_config_compact  # noqa: E402
from gateway.daemon import Gateway  # noqa: E402
from gateway.ops import memory  # noqa: E402
from tests.services import Mosquitto  # noqa: E402


@dataclass
class Probe:
    """A 1 ms timer on the loop; records how late it fires (the stalls).

    Each late tick also records the CPU time the loop's thread used meanwhile: a
    stall the thread spent computing is the loop *blocked* by code running on it;
    one it spent waiting is the loop *starved* — for the GIL, held by a worker
    thread, or for a core, taken by other processes (the loading child, the
    simulator, the broker, whatever else runs on the machine).
    """

    interval: float = 0.001
    worst: float = 0.0
    late: list[tuple[float, float, float]] = field(default_factory=list)  # when, late, cpu
    _due: float = 0.0
    _cpu: float = 0.0

    def reset(self) -> None:
        self.worst, self.late = 0.0, []

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._due = loop.time() + self.interval
        handle = loop.call_at(self._due, self._tick, loop)
        try:
            await asyncio.Event().wait()
        finally:
            handle.cancel()

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        now, cpu = loop.time(), time.thread_time()
        late = max(0.0, now - self._due)
        self.worst = max(self.worst, late)
        if late > 0.005:
            self.late.append((now, late, cpu - self._cpu))
        self._due, self._cpu = now + self.interval, cpu
        loop.call_at(self._due, self._tick, loop)

    def summary(self, since: float) -> dict[str, Any]:
        blocked = [s for _, s, cpu in self.late if cpu >= 0.5 * s]
        return {
            "max_stall_ms": round(self.worst * 1000, 1),
            "max_blocked_ms": round(max(blocked, default=0.0) * 1000, 1),
            "stalls_over_10ms": sum(1 for _, s, _ in self.late if s > 0.010),
            "stalls_over_50ms": sum(1 for _, s, _ in self.late if s > 0.050),
            "worst": [
                f"{s * 1000:.1f} ms at {t - since:.2f} s, loop thread busy {cpu * 1000:.0f} ms"
                for t, s, cpu in sorted(self.late, key=lambda x: -x[1])[:5]
            ],
        }


def devices_yaml(devices: int, points: int, port: int, unit: str = "bar") -> str:
    out = []
    for d in range(1, devices + 1):
        pts = "\n".join(
            f"      - {{id: p{i}, table: holding, address: {2 * i}, type: float32,"
            f" unit: {unit if (d, i) == (1, 0) else 'bar'},"
            f" sim: {{kind: sine, amplitude: 1, period: 10, mean: {d}}},"
            " rules: [{kind: high, limit: 1000000}, {kind: stuck, count: 20}]}"
            for i in range(points)
        )
        out.append(
            f"  - id: dev{d}\n    driver: modbus_tcp\n    host: 127.0.0.1\n    port: {port}\n"
            f"    unit: {d}\n    poll: 1s\n    timeout: 800ms\n    points:\n{pts}\n"
        )
    return "devices:\n" + "".join(out)


async def until(condition: Any, what: str, within: float) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def measure(tmp: Path, broker: Mosquitto, sim_port: int) -> dict[str, Any]:
    cfg = tmp / "gateway.yaml"

    def write(unit: str) -> None:
        cfg.write_text(
            f"gateway: {{id: bench, site: lab, state_dir: {tmp / 'state'}}}\n"
            f"mqtt: {{url: 'mqtt://127.0.0.1:{broker.port}', inflight: 50}}\n"
            "ops: {enabled: false}\n" + devices_yaml(ARGS.devices, ARGS.points, sim_port, unit)
        )

    write("bar")
    t = time.monotonic()
    loaded = load_config_compact(cfg, parameters=parameters_json)  # as `metrogate run` does
    load_s = time.monotonic() - t
    gw = Gateway(loaded, clock_monitor=ClockMonitor(probe=lambda: SyncState.SYNCHRONISED))
    probe = Probe()
    stop_event = asyncio.Event()
    out: dict[str, Any] = {"points": ARGS.devices * ARGS.points, "load_at_start_s": load_s}
    async with asyncio.TaskGroup() as tg:
        probing = tg.create_task(probe.run(), name="probe")
        run = tg.create_task(gw.run(stop_event), name="gateway")
        await until(gw.ready.is_set, "the gateway", 120)
        await until(lambda: all(p.health.polls >= 3 for p in gw.pollers.values()), "polls", 120)

        probe.reset()
        since = asyncio.get_running_loop().time()
        await asyncio.sleep(ARGS.quiet)
        out["steady_polling"] = probe.summary(since)

        probe.reset()
        since = asyncio.get_running_loop().time()
        metros = list(gw.metrology.values())
        if hasattr(gw.rules, "save_all"):
            await gw.rules.save_all(metros)
            how = "snapshots on the loop, JSON and files in a worker thread"
        else:
            for m in metros:
                gw.rules.save(m)
            how = "on the loop"
        await asyncio.sleep(0.5)
        out["rule_state_save"] = {"how": how, **probe.summary(since)}

        probe.reset()
        since = asyncio.get_running_loop().time()
        t = time.monotonic()
        if hasattr(memory, "release_free_memory_async"):  # what housekeeping calls each minute
            await memory.release_free_memory_async()
        else:
            memory.release_free_memory()
        released_s = time.monotonic() - t
        await asyncio.sleep(0.5)
        out["memory_release"] = {"took_s": round(released_s, 3), **probe.summary(since)}

        old = gw.pollers
        write("kPa")
        probe.reset()
        since = asyncio.get_running_loop().time()
        t = time.monotonic()
        os.kill(os.getpid(), signal.SIGHUP)
        await until(
            lambda: gw.pollers is not old and all(p.health.polls >= 1 for p in gw.pollers.values()),
            "the reloaded devices",
            300,
        )
        applied_s = time.monotonic() - t
        await asyncio.sleep(2.0)
        out["reload"] = {"until_new_devices_polled_s": round(applied_s, 2), **probe.summary(since)}
        stop_event.set()
        await run
        probing.cancel()
    return out


def main() -> None:
    print(f"gateway from {Path(gateway.__file__).parent.parent}", flush=True)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        sim_cfg = tmp / "sim.yaml"
        sim_cfg.write_text(
            "gateway: {id: bench, site: lab}\n" + devices_yaml(ARGS.devices, ARGS.points, 502)
        )
        with Mosquitto(tmp / "mosquitto") as broker:
            sim, port = start_sim(sim_cfg)
            try:
                result = asyncio.run(measure(tmp, broker, port))
            finally:
                stop(sim)
    print(json.dumps(result, indent=1), flush=True)


if __name__ == "__main__":
    assert REPO.exists()
    main()
