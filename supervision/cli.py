"""Command-line entries of the platform side: ``ingest``, ``report`` and ``console``.

``add_ingest_parser(subparsers)``, ``add_report_parser(subparsers)`` and
``add_console_parser(subparsers)`` register the subcommands on an argparse parser and
set ``func(args) -> int``; the one entry point, :func:`gateway.cli.app.main`, registers
them as ``metrogate ingest``, ``metrogate report`` and ``metrogate console``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import getpass
import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from gateway.common.exitcodes import ExitCode
from gateway.common.logs import configure_logging
from gateway.common.types import parse_duration, secret_values
from gateway.common.yamlconf import ConfigError
from supervision.config import IngestConfig, load_config

if TYPE_CHECKING:
    from supervision.report import Report

__all__ = [
    "add_console_parser",
    "add_ingest_parser",
    "add_report_parser",
    "print_report",
    "report_json",
    "run_console",
]


def _load(path: Path) -> IngestConfig | None:
    """The configuration, or None after printing every problem as FILE:LINE:COL."""
    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None


def _ingest(args: argparse.Namespace) -> int:
    from supervision.ingest import run_ingest

    cfg = _load(args.config)
    if cfg is None:
        return ExitCode.INVALID
    # known secret values (broker password, store token) are masked in every log line
    configure_logging("debug" if args.verbose else "info", secrets=secret_values(cfg))
    asyncio.run(run_ingest(cfg))
    return ExitCode.OK


def _limits(specs: list[str]) -> dict[str, tuple[float, float]]:
    out: dict[str, tuple[float, float]] = {}
    for s in specs:
        point, _, rng = s.partition("=")
        lo, _, hi = rng.partition(":")
        out[point] = (float(lo), float(hi))
    return out


def _report(args: argparse.Namespace) -> int:
    from supervision.report import report_store

    cfg = _load(args.config)
    if cfg is None:
        return ExitCode.INVALID
    since_ns = time.time_ns() - int(parse_duration(args.since) * 1e9)
    if args.html is not None:
        return _report_html(cfg, args, since_ns)
    rep = report_store(cfg.store, since_ns=since_ns, limits=_limits(args.limit))
    if args.json:
        print(json.dumps(report_json(rep), indent=2))
        return ExitCode.OK
    print_report(rep, sys.stdout)
    return ExitCode.OK


def _report_html(cfg: IngestConfig, args: argparse.Namespace, since_ns: int) -> int:
    from supervision.console.report_html import build_report
    from supervision.console.service import Console
    from supervision.console.store import StoreDown

    async def build() -> str:
        console = Console.from_config(cfg)
        return await build_report(
            console, start_ns=since_ns, end_ns=time.time_ns(), site=args.site,
            lang=args.language or cfg.console.language, user=getpass.getuser(),
        )  # fmt: skip

    try:
        html = asyncio.run(build())
    except StoreDown as exc:
        print(f"metrogate report: {exc}", file=sys.stderr)
        return ExitCode.FAILED
    if str(args.html) == "-":
        sys.stdout.write(html)
    else:
        Path(args.html).write_text(html, encoding="utf-8")
        print(f"report written to {args.html}")
    return ExitCode.OK


def report_json(rep: Report) -> dict[str, Any]:
    """The report as JSON-able data (``metrogate report --json``)."""
    return {
        "points": [
            {
                "gateway": p.gateway, "device": p.device, "point": p.point,
                "count": p.count, "last": p.last_value, "last_ns": p.last_ns,
                "oot_rate": p.oot_rate, "cpk": p.cpk, "ppk": p.ppk, "alarms_raised": p.alarms,
            }
            for p in rep.points
        ],
        "instruments": [
            {
                "gateway": i.gateway, "instrument": i.instrument, "status": i.status,
                "certificate": i.certificate, "readings": i.readings,
                "expired_readings": i.expired_readings, "last_reading_ns": i.last_reading_ns,
                "event": i.event, "event_ns": i.event_ns, "valid_until": i.valid_until,
                "days_left": i.days_left,
            }
            for i in rep.instruments
        ],
        "gateways": [
            {
                "gateway": g.gateway, "received": g.received, "expected": g.expected,
                "ratio": g.ratio, "missing": g.missing, "last_seen_ns": g.last_seen_ns,
                "state": g.state,
            }
            for g in rep.gateways
        ],
        "completeness": [
            {"gateway": c.gateway, "day": c.day, "received": c.received,
             "expected": c.expected, "ratio": c.ratio, "missing": c.missing,
             "last_seen_ns": c.last_seen_ns}
            for c in rep.days
        ],
        "event_logs": [
            {"gateway": e.gateway, "entries": e.entries, "first_n": e.first_n,
             "last_n": e.last_n, "gaps": e.gaps,
             "resets": [{"before": a, "after": b, "ts_ns": t} for a, b, t in e.resets]}
            for e in rep.event_logs
        ],
        "security": [
            {"gateway": r.gateway, "kind": r.kind, "seq": r.seq, "ts_ns": r.ts_ns,
             "detail": r.detail, "reason": r.reason, "digest": r.digest}
            for r in rep.security
        ],
    }  # fmt: skip


def _ts(ns: int | None) -> str:
    if ns is None:
        return "-"
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def print_report(rep: Report, out: TextIO) -> None:
    """The report as text tables: points, instruments, gateways, days."""
    w = out.write
    w(f"{'gateway':<12} {'device':<12} {'point':<14} {'n':>7} {'last':>12} "
      f"{'OOT %':>6} {'Cpk':>6} {'Ppk':>6} {'raised':>6}\n")  # fmt: skip
    for p in rep.points:
        cpk = f"{p.cpk:6.2f}" if p.cpk is not None else "     -"
        ppk = f"{p.ppk:6.2f}" if p.ppk is not None else "     -"
        last = f"{p.last_value:12.6g}" if isinstance(p.last_value, float) else f"{'-':>12}"
        w(f"{p.gateway:<12} {p.device:<12} {p.point:<14} {p.count:>7} {last} "
          f"{100 * p.oot_rate:6.2f} {cpk} {ppk} {p.alarms:>6}\n")  # fmt: skip
    w(f"\n{'gateway':<12} {'instrument':<12} {'calibration':<11} {'certificate':<16} "
      f"{'valid until':<11} {'readings':>8} {'expired':>8}  last event\n")  # fmt: skip
    for i in rep.instruments:
        w(f"{i.gateway:<12} {i.instrument:<12} {i.status:<11} {i.certificate or '-':<16} "
          f"{i.valid_until or '-':<11} {i.readings:>8} {i.expired_readings:>8}  "
          f"{i.event or '-'} {_ts(i.event_ns) if i.event else ''}\n")  # fmt: skip
    w(f"\n{'gateway':<12} {'state':<8} {'received':>9} {'expected':>9} {'complete':>9}  "
      f"{'last seen (UTC)':<19}  missing\n")  # fmt: skip
    for g in rep.gateways:
        gaps = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in g.missing[:10])
        w(f"{g.gateway:<12} {g.state or '-':<8} {g.received:>9} {g.expected:>9} "
          f"{100 * g.ratio:8.2f}%  {_ts(g.last_seen_ns):<19}  {gaps}\n")  # fmt: skip
    w(f"\n{'gateway':<12} {'day':<10} {'received':>9} {'expected':>9} {'complete':>9}\n")
    for c in rep.days:
        w(f"{c.gateway:<12} {c.day:<10} {c.received:>9} {c.expected:>9} "
          f"{100 * c.ratio:8.2f}%\n")  # fmt: skip
    w(f"\n{'gateway':<12} {'entries':>8} {'first n':>8} {'last n':>8}  event-log gaps / resets\n")
    for e in rep.event_logs:
        gaps = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in e.gaps[:10])
        resets = ", ".join(f"{a}→{b}" for a, b, _ in e.resets[:10])
        note = (
            "; ".join(
                x
                for x in (f"gaps {gaps}" if gaps else "", f"resets {resets}" if resets else "")
                if x
            )
            or "ok"
        )
        w(f"{e.gateway:<12} {e.entries:>8} {e.first_n:>8} {e.last_n:>8}  {note}\n")  # fmt: skip
    w(f"\nsecurity events: {len(rep.security)}\n")
    for r in rep.security:
        w(f"{r.gateway:<12} {r.kind:<12} {r.seq:>10}  {_ts(r.ts_ns) if r.ts_ns else '-':<19}  "
          f"{r.detail}\n")  # fmt: skip


def add_ingest_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "ingest", help="platform ingest service: MQTT → InfluxDB/SQLite"
    )
    p.add_argument("-c", "--config", type=Path, required=True, help="ingest YAML file")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=_ingest)
    return p


def add_report_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "report", help="supervision report from the store"
    )
    p.add_argument("-c", "--config", type=Path, required=True, help="ingest YAML file")
    p.add_argument("--since", default="24h", help="window, e.g. 1h, 7d (default 24h)")
    p.add_argument(
        "--limit", action="append", default=[], metavar="POINT=LSL:USL",
        help="specification limits for Cpk/Ppk (repeatable)",
    )  # fmt: skip
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--html", metavar="FILE",
        help="write the self-contained HTML report (charts included) to FILE ('-': stdout)",
    )  # fmt: skip
    p.add_argument("--site", help="HTML report: this site only (default: all)")
    p.add_argument("--language", choices=["en", "zh"], help="HTML report language")
    p.set_defaults(func=_report)
    return p


async def run_console(cfg: IngestConfig, *, stop: asyncio.Event | None = None,
                      on_ready: Any = None) -> None:  # fmt: skip
    """Serve the console on ``console.listen`` until ``stop`` is set (or SIGINT/SIGTERM)."""
    import signal

    from supervision.console.app import Console, serve

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    console = Console.from_config(cfg)
    runner, port = await serve(console, cfg.console.host, cfg.console.port)
    try:
        url = f"http://{cfg.console.host}:{port}/"
        logging.getLogger("metrogate.console").info("console on %s (%s)", url, console.reader.name)
        print(f"console: {url}", flush=True)
        if on_ready is not None:
            on_ready(port)
        await stop.wait()
    finally:
        await runner.cleanup()


def _console(args: argparse.Namespace) -> int:
    if args.hash_password:
        from supervision.console.auth import hash_password

        pw = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline()
        pw = pw.rstrip("\n")
        if not pw:
            print("metrogate console: empty password", file=sys.stderr)
            return ExitCode.INVALID
        print(hash_password(pw))
        return ExitCode.OK
    if args.config is None:
        print("metrogate console: -c FILE is required", file=sys.stderr)
        return ExitCode.INVALID
    cfg = _load(args.config)
    if cfg is None:
        return ExitCode.INVALID
    configure_logging("debug" if args.verbose else "info", secrets=secret_values(cfg))
    if not cfg.console.users:
        print(f"{args.config}: console.users is empty: nobody could log in", file=sys.stderr)
        return ExitCode.INVALID
    try:
        asyncio.run(run_console(cfg))
    except OSError as exc:
        print(f"metrogate console: cannot serve on {cfg.console.listen}: {exc}", file=sys.stderr)
        return ExitCode.FAILED
    return ExitCode.OK


def add_console_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "console", help="supervision console (web) over the platform's store"
    )
    p.add_argument("-c", "--config", type=Path, help="ingest YAML file (with console:)")
    p.add_argument(
        "--hash-password", action="store_true",
        help="read a password (prompt or stdin) and print its hash for console.users",
    )  # fmt: skip
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=_console)
    return p
