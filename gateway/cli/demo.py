"""``metrogate demo``: a whole supervision chain in one process, nothing external needed.

Simulated instruments (config/examples/demo.yaml) → the gateway → an embedded MQTT
broker (amqtt; or a real one with ``--mqtt``) → the real ingest service
(:mod:`supervision.ingest`: verification, sequence tracking, acknowledgement after
the write) → a SQLite store in the state directory (or InfluxDB 1.x with
``--influx http://host:8086/db``) → a live terminal view that shows what the store
holds, and the supervision console (:mod:`supervision.console`) on a free loopback
port, with a demo operator whose signed commands the gateway accepts.

amqtt speaks MQTT 3.1.1 only and has no shared subscriptions, so against the
embedded broker the ingest runs with ``protocol: "3.1.1"`` and a plain
subscription (docs/ingest.md); against ``--mqtt`` it uses MQTT 5.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import socket
import sqlite3
import sys
import tempfile
import time
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, TextIO

from gateway.cli.simulate import run_simulators
from gateway.common.exitcodes import ExitCode
from gateway.config.loader import load_config
from gateway.config.schema import Config, OperatorConfig
from gateway.daemon import Gateway
from gateway.wire.keys import PUBLIC_KEY_NAME, ensure_signer, generate_keypair
from supervision.config import (
    BatchConfig,
    ConsoleConfig,
    ConsoleUser,
    InfluxV1Store,
    IngestConfig,
    IngestOpsConfig,
    MqttConfig,
    PointSpec,
    SqliteStore,
)
from supervision.ingest import Ingest, running_ingest
from supervision.live import Snapshot, snapshot
from supervision.sinks import StoreError

DEMO_CONFIG = Path(__file__).resolve().with_name("demo.yaml")  # package data
STORE_NAME = "demo-store.sqlite"
# every wait on the store or the broker in the demo is bounded by this
STEP_TIMEOUT = 15.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def influx_store(url: str) -> InfluxV1Store:
    """``http://host:8086/db`` → an InfluxDB 1.x store writing database ``db``."""
    u = urllib.parse.urlsplit(url)
    database = u.path.strip("/")
    if u.scheme not in ("http", "https") or not u.hostname or not database or "/" in database:
        raise SystemExit(f"--influx {url!r}: write http://host:8086/DATABASE")
    base = f"{u.scheme}://{u.hostname}:{u.port or 8086}"
    return InfluxV1Store(kind="influxdb_v1", url=base, database=database, create_database=True)


def ingest_config(
    mqtt_url: str, prefix: str, state: Path, *, embedded: bool, influx: str | None
) -> IngestConfig:
    """The demo's ingest: one worker, its own keys directory, SQLite or InfluxDB 1.x."""
    store: InfluxV1Store | SqliteStore = (
        influx_store(influx) if influx else SqliteStore(kind="sqlite", path=state / STORE_NAME)
    )
    mqtt = MqttConfig(
        url=mqtt_url,
        client_id=f"metrogate-demo-ingest-{os.getpid()}",
        prefix=prefix,
        protocol="3.1.1" if embedded else "5",
        shared=not embedded,
        session_expiry=60.0,  # a demo's session should not outlive it for long
    )
    return IngestConfig(
        mqtt=mqtt,
        keys_dir=state / "ingest-keys",
        store=store,
        batch=BatchConfig(max_lines=5000, max_delay=0.2),
        stats_interval=0.0,
        ops=IngestOpsConfig(listen="127.0.0.1:0"),  # a free port: demos must not collide
    )


DEMO_OPERATOR = "demo"


def demo_console(cfg: Config, state: Path, password: str) -> ConsoleConfig:
    """The demo's console: user ``demo`` (an operator whose key the gateway is given),
    specification limits and chart kinds taken from the gateway's own config."""
    from supervision.console.auth import hash_password

    key = state / "operators" / f"{DEMO_OPERATOR}.key"
    if not key.exists():
        generate_keypair(key.parent, name=DEMO_OPERATOR)
    if not any(o.id == DEMO_OPERATOR for o in cfg.operators):
        cfg.operators.append(
            OperatorConfig(id=DEMO_OPERATOR, public_key=str(key.with_suffix(".pub")),
                           roles=["ack", "shelve"])
        )  # fmt: skip
    points = []
    for dev in cfg.devices:
        for p in getattr(dev, "points", []) or []:
            spec, spc = getattr(p, "spec", None), getattr(p, "spc", None)
            if spec is None or (spec.lower is None and spec.upper is None):
                continue
            points.append(PointSpec(
                match=f"{cfg.gateway.id}/{dev.id}/{p.id}", lower=spec.lower, upper=spec.upper,
                chart=spc.chart if spc else "individuals", subgroup=spc.subgroup if spc else 1,
                min_cpk=(spc.min_cpk if spc and spc.min_cpk else 1.33),
            ))  # fmt: skip
    user = ConsoleUser.model_validate({
        "name": DEMO_OPERATOR, "password_hash": hash_password(password), "role": "operator",
        "operator_id": DEMO_OPERATOR, "operator_key": key,
    })  # fmt: skip
    return ConsoleConfig.model_validate(
        {"listen": "127.0.0.1:0", "users": [user], "points": points}
    )


@asynccontextmanager
async def demo_console_server(icfg: IngestConfig, port: int) -> AsyncIterator[str]:
    """The console over the demo's store; yields its URL."""
    from supervision.console.app import serve
    from supervision.console.service import Console

    runner, bound = await serve(Console.from_config(icfg), "127.0.0.1", port)
    try:
        yield f"http://127.0.0.1:{bound}/"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def embedded_broker() -> AsyncIterator[str]:
    """An amqtt broker on a free loopback port; yields its ``mqtt://`` URL."""
    from amqtt.broker import Broker

    port = free_port()
    broker = Broker(
        {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
    )
    async with asyncio.timeout(STEP_TIMEOUT):
        await broker.start()
    try:
        yield f"mqtt://127.0.0.1:{port}"
    finally:
        async with asyncio.timeout(STEP_TIMEOUT):
            await broker.shutdown()


async def read_store(cfg: IngestConfig) -> Snapshot | None:
    """The store's snapshot, or None while it cannot be read yet (nothing written)."""
    try:
        async with asyncio.timeout(STEP_TIMEOUT):
            return await asyncio.to_thread(snapshot, cfg.store)
    except (OSError, sqlite3.Error, StoreError, TimeoutError):
        return None  # not created yet, or busy: the view tries again a second later


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "—" if value is None else str(value)


def render(
    snap: Snapshot | None, ingest: Ingest, gateway: Gateway, started: float, where: str,
    out: TextIO, console: str = "",
) -> None:  # fmt: skip
    """One frame of the live view (ANSI: clear screen, home), from what the store holds."""
    ob = gateway.outbox.stats() if gateway.outbox else None
    pub = gateway.publisher.stats if gateway.publisher else None
    c = ingest.counts
    lines = [
        f"metrogate demo — {time.monotonic() - started:5.0f}s — broker "
        f"{'connected' if pub and pub.connected else 'down'}; outbox holds "
        f"{ob.batches if ob else 0} batches; store {where}",
        f"ingest: {c['received']} messages verified and acknowledged {c['acked']}, "
        f"{c['readings_written']} readings written, rejected {c['dead_letter']}, "
        f"duplicates {c['duplicate']}",
    ]
    if console:
        lines.append(console)
    if snap is None:
        lines += ["", "store: nothing written yet"]
    else:
        lines += [
            f"store holds {snap.readings} readings, {snap.batches} batches, "
            f"{snap.alarms} alarm changes, {snap.events} events",
            "",
            f"{'device':<10} {'point':<13} {'value':>10} {'unit':<5} {'±U':>8} "
            f"{'quality':<10} {'verdict':<17} flags",
        ]
        for r in snap.last:
            u = _fmt(r.uncertainty) if r.uncertainty is not None else ""
            lines.append(
                f"{r.device:<10} {r.point:<13} {_fmt(r.value):>10} {r.unit or '':<5} {u:>8} "
                f"{r.quality:<10} {r.verdict or '':<17} {' '.join(r.flags)}"
            )
        if snap.recent_alarms:
            lines += ["", "alarm changes:"]
            lines += [
                f"  {a.get('alarm', '?')}: {a.get('event', '?')} → {a.get('state', '?')} "
                f"{a.get('message', '')}"
                for a in snap.recent_alarms
            ]
        lines += ["", "completeness:"]
        for g in snap.gateways:
            gaps = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in g.missing[:5])
            lines.append(
                f"  {g.gateway}: {g.received}/{g.expected} batches "
                f"({100 * g.ratio:.1f} %), status {g.state or '?'}"
                + (f", missing {gaps}" if gaps else "")
            )
    lines += ["", "Ctrl-C stops."]
    out.write("\x1b[H\x1b[2J" + "\n".join(lines) + "\n")
    out.flush()


async def _view(
    cfg: IngestConfig, ingest: Ingest, gateway: Gateway, started: float, where: str,
    console: str = "",
) -> None:  # fmt: skip
    while True:
        render(await read_store(cfg), ingest, gateway, started, where, sys.stdout, console)
        await asyncio.sleep(1.0)


async def _settle(ingest: Ingest, quiet: float = 0.5, limit: float = 5.0) -> None:
    """Wait (at most ``limit`` s) until the ingest received nothing for ``quiet`` s."""
    deadline = time.monotonic() + limit
    seen, since = ingest.counts["received"], time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        if ingest.counts["received"] != seen:
            seen, since = ingest.counts["received"], time.monotonic()
        elif time.monotonic() - since >= quiet:
            return


async def run_demo(stop: asyncio.Event, args: argparse.Namespace) -> None:
    """Everything in one process until ``stop`` (Ctrl-C) or ``--duration``."""
    loaded = load_config(DEMO_CONFIG)
    cfg = loaded.config
    state = Path(args.state_dir) if args.state_dir else Path(tempfile.mkdtemp(prefix="mg-demo-"))
    cfg.gateway.state_dir = state
    cfg.ops.listen = "127.0.0.1:0"  # a free port: a demo must not collide with a daemon
    started = time.monotonic()
    async with AsyncExitStack() as stack:
        if args.mqtt:
            cfg.mqtt.url = args.mqtt
        else:
            cfg.mqtt.url = await stack.enter_async_context(embedded_broker())
        sims = await stack.enter_async_context(run_simulators(cfg, free_ports=True))
        ensure_signer(cfg.signing_key, create=True)  # the key exists before the ingest registers it
        icfg = ingest_config(
            cfg.mqtt.url, cfg.mqtt.prefix, state, embedded=not args.mqtt, influx=args.influx
        )
        # the platform registers the gateway's public key under the gateway's id
        icfg.keys_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(state / PUBLIC_KEY_NAME, icfg.keys_dir / f"{cfg.gateway.id}.pub")
        where = args.influx or str(icfg.store.path)  # type: ignore[union-attr]
        console_line = ""
        if not getattr(args, "no_console", False):
            password = secrets.token_urlsafe(9)
            icfg = icfg.model_copy(update={"console": demo_console(cfg, state, password)})
            url = await stack.enter_async_context(
                demo_console_server(icfg, getattr(args, "console_port", 0) or 0)
            )
            console_line = f"console: {url} (user {DEMO_OPERATOR}, password {password})"
        # the ingest subscribes first, so it stores everything from the first batch on
        async with running_ingest(icfg) as ingest:
            async with asyncio.timeout(STEP_TIMEOUT):
                await ingest.connected.wait()
            gateway = Gateway(loaded)
            gw_stop = asyncio.Event()
            async with asyncio.TaskGroup() as tg:
                gw_task = tg.create_task(gateway.run(gw_stop), name="gateway")
                async with asyncio.timeout(30):
                    await gateway.ready.wait()
                view = None
                if not args.no_view:
                    view = tg.create_task(
                        _view(icfg, ingest, gateway, started, where, console_line),
                        name="demo-view",
                    )
                else:
                    print(
                        f"demo: broker {cfg.mqtt.url}, store {where}, state {state}, "
                        "simulators "
                        + ", ".join(f"{s.endpoint} ({'+'.join(s.devices)})" for s in sims),
                        flush=True,
                    )
                    ops = [("gateway", gateway.ops), ("ingest", ingest.ops)]
                    if console_line:
                        print(f"demo: {console_line}", flush=True)
                    print(
                        "demo: metrics and health at "
                        + ", ".join(f"{n} http://127.0.0.1:{o.port}/" for n, o in ops if o),
                        flush=True,
                    )
                try:
                    async with asyncio.timeout(args.duration):
                        await stop.wait()
                except TimeoutError:
                    pass
                if view is not None:
                    # the view reads the gateway's outbox: it stops before the outbox closes
                    view.cancel()
                    await asyncio.wait([view], timeout=STEP_TIMEOUT)
                gw_stop.set()
                await gw_task
                await _settle(ingest)  # the gateway's last batches reach the store
            counts = ingest.counts
    snap = await read_store(icfg)
    stored = snap.readings if snap else 0
    missing = sum(g.expected - g.received for g in snap.gateways) if snap else 0
    rejected = counts["dead_letter"]
    print(
        f"demo summary: {stored} readings, {snap.batches if snap else 0} batches, "
        f"{snap.alarms if snap else 0} alarm changes, {snap.events if snap else 0} events "
        f"stored in {where}; {counts['received']} messages verified, {rejected} rejected, "
        f"{counts['duplicate']} duplicates, {missing} missing batches; state in {state}",
        flush=True,
    )
    if stored == 0 or rejected:
        raise SystemExit(ExitCode.FAILED)
