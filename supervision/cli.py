"""Command-line entries of the platform side: ``ingest`` and ``report``.

``add_ingest_parser(subparsers)`` / ``add_report_parser(subparsers)`` register the
subcommands on an argparse parser and set ``func(args) -> int``;
``python -m supervision.cli ingest -c FILE`` works on its own too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gateway.config_types import parse_duration
from supervision.config import InfluxV1Store, InfluxV2Store, load_config

__all__ = ["add_ingest_parser", "add_report_parser", "main"]


def _load(path: Path) -> Any:
    try:
        return load_config(path)
    except ValidationError as exc:
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            print(f"{path}: {loc}: {err['msg']}", file=sys.stderr)
        return None


def _ingest(args: argparse.Namespace) -> int:
    from supervision.ingest import run_ingest

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    cfg = _load(args.config)
    if cfg is None:
        return 2
    asyncio.run(run_ingest(cfg))
    return 0


def _limits(specs: list[str]) -> dict[str, tuple[float, float]]:
    out: dict[str, tuple[float, float]] = {}
    for s in specs:
        point, _, rng = s.partition("=")
        lo, _, hi = rng.partition(":")
        out[point] = (float(lo), float(hi))
    return out


def _report(args: argparse.Namespace) -> int:
    from supervision import report

    cfg = _load(args.config)
    if cfg is None:
        return 2
    since_ns = time.time_ns() - int(parse_duration(args.since) * 1e9)
    limits = _limits(args.limit)
    store = cfg.store
    if isinstance(store, InfluxV1Store):
        auth: dict[str, Any] = {}
        if store.username is not None:
            auth = {"username": store.username, "password": store.password.get_secret_value()
                    if store.password else ""}  # fmt: skip
        points = report.points_influx(
            store.url, store.database, since_ns=since_ns, limits=limits, **auth
        )
        days = report.completeness_influx(store.url, store.database, since_ns=since_ns, **auth)
    elif isinstance(store, InfluxV2Store):
        token = store.token.get_secret_value() if store.token else None
        points = report.points_influx(
            store.url, store.bucket, since_ns=since_ns, limits=limits, token=token
        )
        days = report.completeness_influx(store.url, store.bucket, since_ns=since_ns, token=token)
    else:
        points = report.points_sqlite(store.path, since_ns=since_ns, limits=limits)
        days = report.completeness_sqlite(store.path, since_ns=since_ns)
    if args.json:
        doc = {
            "points": [
                {
                    "gateway": p.gateway, "device": p.device, "point": p.point,
                    "count": p.count, "last": p.last_value, "last_ns": p.last_ns,
                    "oot_rate": p.oot_rate, "cpk": p.cpk, "ppk": p.ppk, "alarms": p.alarms,
                }
                for p in points
            ],
            "completeness": [
                {"gateway": c.gateway, "day": c.day, "received": c.received,
                 "expected": c.expected, "ratio": c.ratio, "missing": c.missing,
                 "last_seen_ns": c.last_seen_ns}
                for c in days
            ],
        }  # fmt: skip
        print(json.dumps(doc, indent=2))
        return 0
    print(f"{'gateway':<12} {'device':<12} {'point':<14} {'n':>7} {'last':>12} "
          f"{'OOT %':>6} {'Cpk':>6} {'Ppk':>6} {'alarms':>6}")  # fmt: skip
    for p in points:
        cpk = f"{p.cpk:6.2f}" if p.cpk is not None else "     -"
        ppk = f"{p.ppk:6.2f}" if p.ppk is not None else "     -"
        last = f"{p.last_value:12.6g}" if isinstance(p.last_value, float) else f"{'-':>12}"
        print(f"{p.gateway:<12} {p.device:<12} {p.point:<14} {p.count:>7} {last} "
              f"{100 * p.oot_rate:6.2f} {cpk} {ppk} {p.alarms:>6}")  # fmt: skip
    print()
    print(f"{'gateway':<12} {'day':<10} {'received':>9} {'expected':>9} {'complete':>9}  missing")
    for c in days:
        gaps = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in c.missing[:10])
        print(f"{c.gateway:<12} {c.day:<10} {c.received:>9} {c.expected:>9} "
              f"{100 * c.ratio:8.2f}%  {gaps}")  # fmt: skip
    return 0


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
    p.set_defaults(func=_report)
    return p


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="supervision")
    sub = ap.add_subparsers(required=True)
    add_ingest_parser(sub)
    add_report_parser(sub)
    args = ap.parse_args(argv)
    rc: int = args.func(args)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
