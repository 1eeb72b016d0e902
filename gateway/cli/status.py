"""``metrogate status``: what a running gateway says about itself (its ``/health``)."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from typing import Any, TextIO

from gateway.cli.args import seconds
from gateway.common.exitcodes import ExitCode

__all__ = ["add_status_parser", "cmd_status", "fetch_health", "render_health"]

DEFAULT_URL = "http://127.0.0.1:9108"


def human_duration(seconds: float | None) -> str:
    """``None`` → "unknown"; otherwise the largest sensible unit ("6.2 h", "45 s")."""
    if seconds is None:
        return "unknown"
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


class HealthUnavailable(Exception):
    """The health endpoint did not answer with a health document."""


def fetch_health(url: str, *, timeout: float = 5.0) -> dict[str, Any]:
    """GET ``{url}/health``; a 503 still carries the (degraded) document."""
    target = url.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(target, timeout=timeout) as resp:
            body = resp.read()
    except urllib.error.HTTPError as exc:
        if exc.code != 503:
            raise HealthUnavailable(f"{target}: HTTP {exc.code}") from exc
        body = exc.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise HealthUnavailable(f"{target}: {reason}") from exc
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise HealthUnavailable(f"{target}: not a health document") from exc
    if not isinstance(doc, dict) or "status" not in doc:
        raise HealthUnavailable(f"{target}: not a health document")
    return doc


def render_health(doc: dict[str, Any], out: TextIO) -> None:
    """The health document, readably."""
    sw = doc.get("software") or {}
    cfg = doc.get("config") or {}
    print(f"gateway {doc.get('gateway')} at {doc.get('site')}: {doc['status'].upper()}", file=out)
    for problem in doc.get("problems") or []:
        print(f"  ! {problem}", file=out)
    print(
        f"up since  {doc.get('up_since')} ({human_duration(doc.get('uptime_s'))})\n"
        f"software  {sw.get('name')} {sw.get('version')} sha256:{str(sw.get('sha256'))[:16]}…\n"
        f"config    {cfg.get('path')} sha256:{str(cfg.get('sha256'))[:16]}…",
        file=out,
    )
    clock = doc.get("clock") or {}
    print(f"clock     {clock.get('state')}", file=out)
    broker = doc.get("broker")
    if broker:
        state = (
            f"connected since {broker.get('connected_since')}"
            if broker.get("connected")
            else f"NOT CONNECTED ({broker.get('last_error') or 'connecting'})"
        )
        print(
            f"broker    {broker.get('url')} {state}; published {broker.get('published')}, "
            f"failures {broker.get('failures')}",
            file=out,
        )
    ob = doc.get("outbox")
    if ob:
        rate = ob.get("bytes_per_s")
        est = " (estimated)" if ob.get("rate_estimated") else ""
        print(
            f"outbox    {ob.get('batches')} batches, {ob.get('bytes')} of {ob.get('max_bytes')} "
            f"bytes, oldest {human_duration(ob.get('oldest_age_s')) if ob.get('oldest') else '-'}"
            f", dropped {ob.get('dropped_batches')}",
            file=out,
        )
        print(
            f"          holds {human_duration(ob.get('capacity_s'))} of outage at the current "
            f"rate ({'unknown' if rate is None else f'{rate:.0f} B/s'}{est}); "
            f"{human_duration(ob.get('remaining_s'))} left now",
            file=out,
        )
    devices = doc.get("devices") or []
    if devices:
        print(f"{'device':<16} {'state':<9} {'polls':>8} {'fail':>6} {'miss':>5} {'last ok':<24} "
              "last error", file=out)  # fmt: skip
        for d in devices:
            print(
                f"{d['id']:<16} {d['state']:<9} {d['polls']:>8} {d['failures']:>6} "
                f"{d['missed']:>5} {d.get('last_ok') or '-':<24} {d.get('last_error') or ''}",
                file=out,
            )


def cmd_status(args: argparse.Namespace) -> int:
    try:
        doc = fetch_health(args.url, timeout=args.timeout)
    except HealthUnavailable as exc:
        print(f"cannot read gateway health: {exc}", file=sys.stderr)
        return ExitCode.FAILED
    if args.json:
        print(json.dumps(doc, indent=1))
    else:
        render_health(doc, sys.stdout)
    return ExitCode.OK if doc["status"] == "ok" else ExitCode.FAILED


def add_status_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``metrogate status`` on an argparse sub-parsers object."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "status",
        help="show a running gateway's health; exit 1 if degraded or unreachable",
        description="Reads the gateway's /health endpoint (ops.listen) and prints it.",
    )
    p.add_argument("--url", default=DEFAULT_URL, help=f"ops endpoint (default {DEFAULT_URL})")
    p.add_argument("--json", action="store_true", help="print the health document as JSON")
    p.add_argument("--timeout", type=seconds, default=5.0, help="seconds to wait (default 5)")
    p.set_defaults(func=cmd_status)
    return p
