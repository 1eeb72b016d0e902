"""What a delivered reading costs: metrogate, a baseline of it and the plain loop, side by side.

In one run, for each workload (devices × float32 points @ poll period): the simulated
devices in their own process, then one after another on the same Mosquitto

* the plain loop (``bench/plain_loop.py``: pymodbus + paho, no outbox, no signature),
* metrogate from this tree (``metrogate run``),
* metrogate from a baseline git ref (``--baseline``, default ``main``), exported into a
  temporary directory and run the same way,

each counted by an independent subscriber (paho, this process). Reported per run:
readings/s delivered and their share of the schedule, CPU seconds of the process per
1,000 delivered readings, its peak RSS, and for metrogate runs that expose it the
longest event-loop stall in the measured window (from the
``metrogate_loop_lateness_seconds`` histogram: the highest bucket that gained samples).

    python bench/bench_cost.py [--seconds 20] [--rounds 3] [--baseline main] [--workloads ...]
    python bench/bench_cost.py --memory-only   # RSS with 100 devices x 50 points at 1 s
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from common import REPO, Counter, cpu_seconds, device_yaml, rss_mb, start_sim, stop

from tests.eventually import eventually_blocking
from tests.services import Mosquitto, free_port

WORKLOADS = ("10x10@100ms", "10x10@10ms", "10x60@10ms")
WARM_UP_S = 3.0


@dataclass
class Result:
    system: str
    workload: str
    readings_per_s: float
    schedule_share: float
    cpu_per_1000: float
    core_share: float
    peak_rss_mb: float
    stall_ms: str  # "≤ 5" from the histogram, "n/a" where not exposed

    def row(self) -> str:
        return (
            f"| {self.workload} | {self.system} | {self.readings_per_s:,.0f} |"
            f" {self.schedule_share:.1%} | {self.cpu_per_1000:.4f} | {self.core_share:.2f} |"
            f" {self.peak_rss_mb:.0f} | {self.stall_ms} |"
        )


def parse(workload: str) -> tuple[int, int, float]:
    m = re.fullmatch(r"(\d+)x(\d+)@(\d+)(ms|s)", workload)
    if m is None:
        raise SystemExit(f"workload {workload!r} is not DEVICESxPOINTS@PERIOD(ms|s)")
    period = float(m[3]) / (1000 if m[4] == "ms" else 1)
    return int(m[1]), int(m[2]), period


PROFILE: Path | None = None  # --profile DIR: py-spy samples each run's window there


def measure(
    proc: subprocess.Popen[bytes],
    counter: Counter,
    seconds: float,
    lag_port: int | None,
    label: str = "",
) -> tuple[int, float, float, float, str]:
    """Warm up, then count for ``seconds``: (readings, s, CPU s, peak RSS MB, stall)."""
    eventually_blocking(lambda: counter.snapshot()[0] > 0, "first readings", within=60)
    time.sleep(WARM_UP_S)
    if PROFILE is not None:
        out = PROFILE / f"{re.sub(r'[^A-Za-z0-9@.-]+', '_', label)}.txt"
        subprocess.Popen(
            [str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(proc.pid),
             "--duration", str(int(seconds)), "--rate", "200", "--format", "raw",
             "--output", str(out), "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
    lag0 = _lag_buckets(lag_port)
    r0, _ = counter.snapshot()
    c0, t0 = cpu_seconds(proc.pid), time.monotonic()
    time.sleep(seconds)
    r1, _ = counter.snapshot()
    c1, t1 = cpu_seconds(proc.pid), time.monotonic()
    lag1 = _lag_buckets(lag_port)
    peak = rss_mb(proc.pid, "VmHWM")
    return r1 - r0, t1 - t0, c1 - c0, peak, _stall(lag0, lag1)


def _lag_buckets(port: int | None) -> dict[str, float] | None:
    if port is None:
        return None
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return None
    out = {}
    for m in re.finditer(
        r'^metrogate_loop_lateness_seconds_bucket\{le="([^"]+)"\} (\S+)$', text, re.M
    ):
        out[m[1]] = float(m[2])
    return out or None


def _stall(before: dict[str, float] | None, after: dict[str, float] | None) -> str:
    """The highest histogram bucket that gained samples in the window, as '≤ X ms'."""
    if before is None or after is None:
        return "n/a"
    bounds = sorted((float(k), k) for k in after)
    prev_gain = 0.0
    top = None
    for _, key in bounds:
        gain = after[key] - before.get(key, 0.0)
        if gain > prev_gain:
            top = key
        prev_gain = gain
    if top is None:
        return "none sampled"
    return "> 1000" if top == "+Inf" else f"≤ {float(top) * 1000:g}"


def gateway(
    tmp: Path,
    tree: Path,
    name: str,
    broker: Mosquitto,
    sim_port: int,
    workload: str,
    seconds: float,
) -> Result:
    devices, points, period = parse(workload)
    gw_id = re.sub(r"[^A-Za-z0-9]", "", name)
    run_dir = tmp / f"{gw_id}-{workload.replace('@', '-')}"
    shutil.rmtree(run_dir, ignore_errors=True)  # each round starts from an empty state
    run_dir.mkdir(parents=True)
    ops = free_port()
    cfg = run_dir / "gateway.yaml"
    cfg.write_text(
        f"gateway: {{id: {gw_id}, site: lab, state_dir: {run_dir / 'state'}}}\n"
        f"mqtt: {{url: 'mqtt://127.0.0.1:{broker.port}', inflight: 50}}\n"
        f"ops: {{listen: '127.0.0.1:{ops}'}}\n"
        + device_yaml(devices, points, sim_port, _poll(period), _poll(period * 0.8))
    )
    counter = Counter(broker.port, f"metrogate/v1/lab/{gw_id}/data")
    env = os.environ | {"PYTHONPATH": str(tree)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "-c", str(cfg), "--log-level", "warning"],
        cwd=tree,
        env=env,
    )
    try:
        n, dt, cpu, peak, stall = measure(proc, counter, seconds, ops, f"{name}-{workload}")
    finally:
        stop(proc)
        counter.close()
    return _result(name, workload, n, dt, cpu, peak, stall)


def plain(broker: Mosquitto, sim_port: int, workload: str, seconds: float) -> Result:
    devices, points, period = parse(workload)
    counter = Counter(broker.port, "plain/#")
    run_for = WARM_UP_S + seconds + 30  # stopped by us once measured
    args = [sim_port, devices, points, period, run_for, broker.port]
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "bench" / "plain_loop.py"), *map(str, args)],
        stdout=subprocess.DEVNULL,
    )
    try:
        n, dt, cpu, peak, _ = measure(proc, counter, seconds, None, f"plain-{workload}")
    finally:
        stop(proc)
        counter.close()
    return _result("plain loop", workload, n, dt, cpu, peak, "n/a")


def _result(
    system: str, workload: str, n: int, dt: float, cpu: float, peak: float, stall: str
) -> Result:
    devices, points, period = parse(workload)
    scheduled = devices * points / period
    return Result(
        system=system,
        workload=workload,
        readings_per_s=n / dt,
        schedule_share=n / dt / scheduled,
        cpu_per_1000=cpu / n * 1000 if n else float("nan"),
        core_share=cpu / dt,
        peak_rss_mb=peak,
        stall_ms=stall,
    )


def _poll(seconds: float) -> str:
    return f"{seconds * 1000:.0f}ms"


def export(ref: str, into: Path) -> Path:
    """``git archive`` of ``ref`` unpacked into ``into`` (the baseline tree)."""
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", ref], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument(
        "--rounds", type=int, default=1, help="repeat each workload's systems, interleaved"
    )
    ap.add_argument("--baseline", default="main", help="git ref to compare with ('' = none)")
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--systems", default="plain,current,baseline")
    ap.add_argument("--memory-only", action="store_true")
    ap.add_argument("--profile", type=Path, help="py-spy each measured window into DIR")
    args = ap.parse_args()
    global PROFILE
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
        PROFILE = args.profile
    systems = args.systems.split(",")
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        trees = {"current": REPO}
        if args.baseline and "baseline" in systems:
            trees["baseline"] = export(args.baseline, tmp / "baseline")
        with Mosquitto(tmp / "mosquitto") as broker:
            workloads = ["100x50@1s"] if args.memory_only else args.workloads.split(",")
            for workload in workloads:
                devices, points, _ = parse(workload)
                sim_cfg = tmp / f"sim-{workload.replace('@', '-')}.yaml"
                sim_cfg.write_text(
                    "gateway: {id: sim, site: lab}\n"
                    + device_yaml(devices, points, 502, "1s", "200ms")
                )
                sim, port = start_sim(sim_cfg)
                try:
                    for system in [x for _ in range(args.rounds) for x in systems]:
                        if system == "plain":
                            if args.memory_only:
                                continue
                            r = plain(broker, port, workload, args.seconds)
                        elif system in trees:
                            label = (
                                "metrogate" if system == "current" else f"metrogate {args.baseline}"
                            )
                            r = gateway(
                                tmp, trees[system], label, broker, port, workload, args.seconds
                            )
                        else:
                            continue
                        results.append(r)
                        print(json.dumps(asdict(r)), flush=True)
                finally:
                    stop(sim)
    print()
    print(
        "| workload | system | readings/s | of schedule | CPU-s per 1,000 | cores"
        " | peak RSS MB | longest stall ms |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(r.row())
    if args.rounds > 1:
        print()
        print(summary(results))


def summary(results: list[Result]) -> str:
    """Per workload and system over the rounds: min / median / max of the CPU per 1,000
    readings and of the share of the schedule, and the ratio to the plain loop's median."""
    groups: dict[tuple[str, str], list[Result]] = {}
    for r in results:
        groups.setdefault((r.workload, r.system), []).append(r)
    lines = [
        "| workload | system | rounds | CPU-s per 1,000 (min / median / max) | × plain loop"
        " (median) | of schedule (min / median / max) | peak RSS MB | longest stall ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (workload, system), rs in groups.items():
        cpu = sorted(r.cpu_per_1000 for r in rs)
        share = sorted(r.schedule_share for r in rs)
        plain = groups.get((workload, "plain loop"))
        ratio = (
            f"{statistics.median(cpu) / statistics.median(p.cpu_per_1000 for p in plain):.2f}"
            if plain
            else "—"
        )
        lines.append(
            f"| {workload} | {system} | {len(rs)} | {cpu[0]:.4f} / {statistics.median(cpu):.4f}"
            f" / {cpu[-1]:.4f} | {ratio} | {share[0]:.1%} / {statistics.median(share):.1%} /"
            f" {share[-1]:.1%} | {max(r.peak_rss_mb for r in rs):.0f} |"
            f" {', '.join(sorted({r.stall_ms for r in rs}))} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
