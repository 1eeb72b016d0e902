"""``metrogate browse``: list the nodes of a device's server, to write its points.

The device's kind says whether it has an address space to browse (its ``browse`` in
:data:`gateway.config.models.registry.KINDS`: OPC UA servers); the connection uses the
device's own settings (endpoint, security, trust list, login), so what ``browse``
shows is what the daemon will see.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from drivers.base import DriverError
from gateway.cli.args import seconds
from gateway.common.exitcodes import ExitCode

__all__ = ["add_browse_parser", "cmd_browse"]


def cmd_browse(args: argparse.Namespace) -> int:
    from gateway.cli.loading import load_reported
    from gateway.config.models.registry import KINDS

    loaded = load_reported(args.config)
    if loaded is None:
        return ExitCode.INVALID
    device = next((d for d in loaded.config.devices if d.id == args.device), None)
    if device is None:
        known = ", ".join(d.id for d in loaded.config.devices) or "none"
        print(f"{args.config}: no device {args.device!r} (devices: {known})", file=sys.stderr)
        return ExitCode.INVALID
    kind = KINDS[device.driver]
    if kind.browse is None:
        browsable = ", ".join(name for name, k in KINDS.items() if k.browse is not None)
        print(
            f"{args.device}: a {kind.title} device has no address space to browse "
            f"(browsable: {browsable})",
            file=sys.stderr,
        )
        return ExitCode.INVALID

    async def run() -> list[Any]:
        assert kind.browse is not None
        async with asyncio.timeout(args.timeout):
            return await kind.browse(device, args.path)

    try:
        entries = asyncio.run(run())
    except DriverError as exc:
        print(f"browse: {exc}", file=sys.stderr)
        return ExitCode.FAILED
    except TimeoutError:
        print(f"browse: {args.device}: no answer within {args.timeout:g}s", file=sys.stderr)
        return ExitCode.FAILED
    if args.json:
        print(json.dumps([asdict(e) for e in entries], indent=1, ensure_ascii=False))
        return ExitCode.OK
    where = args.path or "Objects"
    print(f"{args.device} at {getattr(device, 'url', '')}: {where}, {len(entries)} node(s)")
    rows = [("NodeId", "browse path", "class", "data type", "value")]
    rows += [(e.node, e.path, e.node_class, e.data_type or "", e.value or "") for e in entries]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4])
    if entries:
        print(
            "write a point as {id: NAME, node: NODEID} or {id: NAME, path: BROWSE_PATH}; "
            "browse deeper with --path BROWSE_PATH"
        )
    return ExitCode.OK


def add_browse_parser(sub: Any) -> None:
    helptext = "list the nodes of a device's server (OPC UA), to write its points"
    p = sub.add_parser("browse", help=helptext, description=helptext)
    p.add_argument("-c", "--config", required=True, type=Path, help="YAML config file")
    p.add_argument("--device", required=True, help="the device id")
    p.add_argument(
        "--path", default=None, help="browse names below Objects (2:Line1); default Objects"
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument(
        "--timeout", type=seconds, default=30.0, metavar="S", help="bound of the whole browse"
    )
    p.set_defaults(func=cmd_browse)
