"""The ``metrogate`` command line (docs/cli.md lists every command and exit code)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from drivers.base import utc_now_us
from gateway import __version__
from gateway.cli.args import port, seconds
from gateway.cli.loading import load_reported
from gateway.common.exitcodes import ExitCode
from gateway.common.logs import configure_logging
from gateway.common.types import secret_values
from gateway.config.loader import LoadedConfig, Problem
from gateway.config.schema import Config

log = logging.getLogger("metrogate")


def _load(
    args: argparse.Namespace,
    *,
    compact: bool = False,
    parameters: Callable[[Config], bytes] | None = None,
) -> LoadedConfig | None:
    return load_reported(args.config, compact=compact, parameters=parameters)


def run_until_signal(main: Callable[[asyncio.Event], Coroutine[Any, Any, None]]) -> int:
    """Run ``main(stop)`` with SIGINT/SIGTERM setting ``stop`` (a second signal aborts)."""

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    try:
        asyncio.run(runner())
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    return ExitCode.OK


# -- commands -------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    loaded = _load(args)
    if loaded is None:
        return ExitCode.INVALID
    cfg = loaded.config
    points = sum(len(getattr(d, "points", []) or []) for d in cfg.devices)
    print(
        f"{args.config}: ok — gateway {cfg.gateway.id} at {cfg.gateway.site}, "
        f"{len(cfg.devices)} devices, {points} points, {len(cfg.instruments)} instruments"
        + (f", {len(loaded.warnings)} warning(s)" if loaded.warnings else "")
    )
    if not args.online:
        return ExitCode.OK
    from gateway.config.models.registry import KINDS

    found = asyncio.run(online_problems(loaded, per_device_s=args.online_timeout))
    for problem in found:
        print(problem, file=sys.stderr)
    errors = [p for p in found if p.severity == "error"]
    tried = sum(1 for d in cfg.devices if d.enabled and KINDS[d.driver].online is not None)
    print(
        f"{args.config}: online: {tried} device(s) tried, "
        + (f"{len(errors)} problem(s)" if errors else "no problems")
    )
    return ExitCode.FAILED if errors else ExitCode.OK


async def online_problems(loaded: LoadedConfig, *, per_device_s: float) -> list[Problem]:
    """What trying each enabled device that can be tried before start finds (its kind's
    ``online``), located in the file; each device bounded by ``per_device_s`` seconds."""
    from gateway.config.models.registry import KINDS

    found = []
    for i, dev in enumerate(loaded.config.devices):
        online = KINDS[dev.driver].online
        if not dev.enabled or online is None:
            continue
        try:
            async with asyncio.timeout(per_device_s):
                findings = await online(dev, loaded.plans[dev.id])
        except TimeoutError:
            findings = [((), f"no result within {per_device_s:g}s (--online-timeout)", "error")]
        for path, message, severity in findings:
            found.append(loaded.locate(("devices", i, *path), f"online: {message}", severity))
    return found


def cmd_plan(args: argparse.Namespace) -> int:
    loaded = _load(args)
    if loaded is None:
        return ExitCode.INVALID

    async def show() -> None:
        from gateway.acquisition.build import build_drivers
        from gateway.config.models.registry import KINDS

        async with AsyncExitStack() as stack:
            drivers = await build_drivers(loaded, stack)  # for their endpoints: nothing opens
            total = 0
            for dev in loaded.config.devices:
                drv = drivers.get(dev.id)
                if drv is None:
                    print(f"{dev.id}: disabled")
                    continue
                lines = KINDS[dev.driver].describe(dev, loaded.plans[dev.id])
                total += len(lines)
                npoints = len(getattr(dev, "points", []) or [])
                print(
                    f"{dev.id} ({dev.driver}, {drv.endpoint}): {len(lines)} request(s) "
                    f"per poll for {npoints} point(s), every {dev.poll:g}s"
                )
                for line in lines:
                    print(f"  {line}")
            print(f"total: {total} request(s) per cycle")

    asyncio.run(show())
    return ExitCode.OK


def cmd_read(args: argparse.Namespace) -> int:
    loaded = _load(args)
    if loaded is None:
        return ExitCode.INVALID
    from gateway.wire.reading import to_wire

    async def once() -> list[dict[str, Any]]:
        from gateway.acquisition.build import build_drivers
        from gateway.acquisition.poller import DevicePoller
        from gateway.metrology.pipeline import DeviceMetrology

        cfg = loaded.config
        if args.device and args.device not in {d.id for d in cfg.devices}:
            raise SystemExit(f"no device {args.device!r} in {args.config}")
        from gateway.acquisition.clock import ClockMonitor

        clock = ClockMonitor()
        out: list[dict[str, Any]] = []
        instruments = {i.id: i for i in cfg.instruments}
        async with AsyncExitStack() as stack:
            drivers = await build_drivers(loaded, stack, only=args.device)
            for dev in cfg.devices:
                if dev.id not in drivers:
                    continue
                points = [
                    (str(p.id), p, getattr(p, "unit", None)) for p in getattr(dev, "points", [])
                ]
                metro = DeviceMetrology(dev.id, points, dev, instruments, utc_now_us)
                poller = DevicePoller(
                    dev,
                    drivers[dev.id],
                    metro,
                    lambda kind, recs: None,
                    synchronised=lambda: clock.synchronised,  # as the daemon flags them
                )
                out += [to_wire(r) for r in await poller.poll_once()]
        return out

    rows = asyncio.run(once())
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(f"{'device':<14} {'point':<18} {'value':>14} {'unit':<7} {'quality':<9} flags/reason")
        for r in rows:
            value = r.get("value")
            shown = f"{value:.6g}" if isinstance(value, float) else str(value)
            extra = " ".join(filter(None, [r.get("reason"), *r.get("flags", [])]))
            print(
                f"{r['device']:<14} {r['point']:<18} {shown:>14} {r.get('unit') or '':<7} "
                f"{r['quality']:<9} {extra}"
            )
    return ExitCode.OK if all(r["quality"] != "bad" for r in rows) else ExitCode.FAILED


def cmd_run(args: argparse.Namespace) -> int:
    from gateway.audit.eventlog import EventLogError
    from gateway.audit.parameters import parameters_json
    from gateway.daemon import Gateway
    from gateway.delivery.outbox import OutboxError

    # the audit trail's parameter set is built in the loading child, not in the daemon
    loaded = _load(args, compact=True, parameters=parameters_json)
    if loaded is None:
        return ExitCode.INVALID
    cfg = loaded.config
    # known secret values are masked wherever they would appear in a log line
    configure_logging(
        args.log_level or cfg.log.level,
        args.log_format or cfg.log.format,
        secrets=secret_values(cfg),
    )
    gateway = Gateway(loaded)
    try:
        return run_until_signal(gateway.run)
    except (EventLogError, OutboxError) as exc:
        # the audit trail or the outbox refuses: a person must look (docs/trust.md)
        print(f"metrogate run: {exc}", file=sys.stderr)
        return ExitCode.FAILED


def cmd_sim(args: argparse.Namespace) -> int:
    loaded = _load(args)
    if loaded is None:
        return ExitCode.INVALID
    configure_logging("info")
    from gateway.cli.simulate import SimConfigError, apply_requests, run_simulators, sim_problem

    problem: list[str] = []

    async def serve(stop: asyncio.Event) -> None:
        try:
            apply_requests(loaded.config, args.fault or [], args.value or [])
            async with run_simulators(loaded.config, free_ports=args.free_ports) as sims:
                for s in sims:
                    print(f"{s.kind} {s.endpoint} serves {', '.join(s.devices)}", flush=True)
                await stop.wait()
        except SimConfigError as exc:
            problem.append(str(sim_problem(loaded, exc) if exc.device else exc))

    code = run_until_signal(serve)
    if problem:
        print(problem[0], file=sys.stderr)
        print(f"{args.config}: nothing simulated", file=sys.stderr)
        return ExitCode.INVALID
    return code


def cmd_demo(args: argparse.Namespace) -> int:
    configure_logging("warning")
    from gateway.cli.demo import run_demo

    return run_until_signal(lambda stop: run_demo(stop, args))


def cmd_schema(args: argparse.Namespace) -> int:
    if args.ingest:
        from supervision.config import IngestConfig

        schema = config_json_schema(IngestConfig, INGEST_SCHEMA_TITLE)
    else:
        from gateway.config.schema import Config

        schema = config_json_schema(Config)
    text = json.dumps(schema, indent=2) + "\n"
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return ExitCode.OK


INGEST_SCHEMA_TITLE = "metrogate ingest and console configuration"


def config_json_schema(model: Any, title: str = "metrogate configuration") -> dict[str, Any]:
    schema: dict[str, Any] = model.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = title
    return schema


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metrogate",
        description="Edge gateway and metrology data collector for quality supervision.",
    )
    parser.add_argument("--version", action="version", version=f"metrogate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(name: str, helptext: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=helptext, description=helptext)
        p.add_argument("-c", "--config", required=True, type=Path, help="YAML config file")
        return p

    p = with_config("run", "run the gateway daemon")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", choices=["text", "json"])
    p.set_defaults(func=cmd_run)
    p = with_config("check", "validate a config; exit 0 ok, 2 invalid")
    p.add_argument(
        "--online",
        action="store_true",
        help="also try the devices that can be tried before start (OPC UA servers: trust, "
        "login, nodes, types); exit 1 when that finds problems",
    )
    p.add_argument(
        "--online-timeout",
        type=seconds,
        default=30.0,
        metavar="S",
        help="bound of each device's online check (default 30 s)",
    )
    p.set_defaults(func=cmd_check)
    with_config("plan", "print the compiled read plan").set_defaults(func=cmd_plan)
    p = with_config("read", "poll each device (or one) once and print the readings")
    p.add_argument("--device", help="only this device id")
    p.add_argument("--json", action="store_true", help="print JSON (the wire form of readings)")
    p.set_defaults(func=cmd_read)
    p = with_config("sim", "serve simulated instruments for the devices of a config")
    p.add_argument(
        "--free-ports",
        action="store_true",
        help="bind free ports instead of the configured ones (printed)",
    )
    p.add_argument(
        "--fault",
        action="append",
        metavar="DEVICE[:POINT]=KIND[,PARAM]",
        help="a fault on request, as sim: {fault: ...} of the device or point would ask "
        "(silent, slow,S, garbage, exception[,CODE], drop[,S], noise, bad_checksum, "
        "truncated, wrong_address, status,NAME, stuck, drift,RATE, step,OFFSET); repeatable",
    )
    p.add_argument(
        "--value",
        action="append",
        metavar="DEVICE:POINT=VALUE",
        help="show this constant value for a point; repeatable",
    )
    p.set_defaults(func=cmd_sim)
    p = sub.add_parser("demo", help="simulators + embedded broker + gateway + ingest, live view")
    p.add_argument("--mqtt", help="use this broker (mqtt://host:port) instead of an embedded one")
    p.add_argument("--influx", help="write to this InfluxDB (v1 URL http://host:8086/db) as well")
    p.add_argument("--duration", type=seconds, default=None, help="stop after this many seconds")
    p.add_argument("--state-dir", type=Path, default=None, help="default: a temporary directory")
    p.add_argument(
        "--no-view", action="store_true", help="no live view; print a summary at the end"
    )
    p.add_argument("--console-port", type=port, default=0, help="console port (default: free)")
    p.add_argument("--no-console", action="store_true", help="do not serve the console")
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("schema", help="print the JSON Schema of the config file")
    p.add_argument("-o", "--output", help="write to this file")
    p.add_argument(
        "--ingest",
        action="store_true",
        help="the schema of the ingest and console file instead of the gateway's",
    )
    p.set_defaults(func=cmd_schema)
    _optional_commands(sub)
    return parser


def _optional_commands(sub: Any) -> None:
    """Commands of the trust, supervision and operations parts."""
    from gateway.cli import browse as cli_browse
    from gateway.cli import trust as cli_trust

    cli_browse.add_browse_parser(sub)
    from gateway.cli import scan as cli_scan

    cli_scan.add_scan_parser(sub)

    cli_trust.add_keygen_parser(sub)
    cli_trust.add_verify_parser(sub)
    cli_trust.add_audit_parser(sub)
    cli_trust.add_version_parser(sub)
    from gateway.cli import alarm as cli_alarm
    from gateway.cli import status as cli_ops

    cli_ops.add_status_parser(sub)
    cli_alarm.add_alarm_parser(sub)
    try:
        from supervision import cli as supervision_cli
    except ImportError:  # pragma: no cover - supervision is part of the distribution
        return
    supervision_cli.add_ingest_parser(sub)
    supervision_cli.add_report_parser(sub)
    supervision_cli.add_console_parser(sub)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
