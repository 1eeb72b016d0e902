"""``metrogate demo``: a whole supervision chain in one process, nothing external needed.

Simulated instruments (config/examples/demo.yaml) → the gateway → an embedded MQTT
broker (amqtt; or a real one with ``--mqtt``) → a receiver that verifies every
batch's signature and sequence → a live terminal view of what arrived.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import aiomqtt

from gateway.config_loader import load_config
from gateway.keys import PUBLIC_KEY_NAME, load_public_keys
from gateway.runtime import Gateway
from gateway.signing import SignatureError, verify_payload
from gateway.simulate import run_simulators

DEMO_CONFIG = Path(__file__).resolve().parent.parent / "config" / "examples" / "demo.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Received:
    """What the receiving side has seen, for the view and the end-of-run summary."""

    batches: int = 0
    readings: int = 0
    alarms: int = 0
    events: int = 0
    rejected: int = 0
    duplicates: int = 0
    gaps: int = 0
    last_seq: int = 0
    seen: set[int] = field(default_factory=set)
    latest: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    recent_alarms: list[dict[str, Any]] = field(default_factory=list)
    recent_events: list[dict[str, Any]] = field(default_factory=list)
    status: str = "?"

    def take(self, kind: str, body: dict[str, Any]) -> None:
        seq = int(body["seq"])
        if seq in self.seen:
            self.duplicates += 1
            return
        self.seen.add(seq)
        if seq > self.last_seq + 1 and self.last_seq:
            self.gaps += seq - self.last_seq - 1
        self.last_seq = max(self.last_seq, seq)
        self.batches += 1
        if kind == "data":
            for r in body["readings"]:
                self.readings += 1
                self.latest[(r["device"], r["point"])] = r
        elif kind == "alarm":
            self.alarms += len(body["alarms"])
            self.recent_alarms = (self.recent_alarms + body["alarms"])[-6:]
        elif kind == "event":
            self.events += len(body["events"])
            self.recent_events = (self.recent_events + body["events"])[-4:]


async def receive(url: str, base: str, keys_dir: Path, got: Received) -> None:
    """Subscribe to everything the gateway publishes; verify, count, remember."""
    host, port = url.removeprefix("mqtt://").rstrip("/").split(":")
    keys = load_public_keys([keys_dir / PUBLIC_KEY_NAME])
    async with aiomqtt.Client(host, int(port), identifier="metrogate-demo-view") as client:
        await client.subscribe(f"{base}/#", qos=1)
        async for message in client.messages:
            kind = str(message.topic).rsplit("/", 1)[-1]
            payload = message.payload if isinstance(message.payload, bytes) else b""
            if kind == "status":
                got.status = json.loads(payload).get("state", "?")
                continue
            try:
                body, _kid = verify_payload(payload, keys)
                got.take(kind, json.loads(body))
            except (SignatureError, ValueError, KeyError):
                got.rejected += 1


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "—" if value is None else str(value)


def render(got: Received, gateway: Gateway, started: float, out: TextIO) -> None:
    """One frame of the live view (ANSI: clear screen, home)."""
    ob = gateway.outbox.stats() if gateway.outbox else None
    pub = gateway.publisher.stats if gateway.publisher else None
    lines = [
        f"metrogate demo — {time.monotonic() - started:5.0f}s — gateway status: {got.status}, "
        f"broker {'connected' if pub and pub.connected else 'down'}",
        f"received {got.batches} signed batches, {got.readings} readings, {got.alarms} alarm "
        f"changes, {got.events} events; rejected {got.rejected}, duplicates {got.duplicates}, "
        f"gaps {got.gaps}; outbox holds {ob.batches if ob else 0} batches",
        "",
        f"{'device':<10} {'point':<13} {'value':>10} {'unit':<5} {'±U':>8} {'quality':<10} "
        f"{'verdict':<17} flags",
    ]
    for (dev, point), r in sorted(got.latest.items()):
        u = r.get("U")
        lines.append(
            f"{dev:<10} {point:<13} {_fmt(r.get('value')):>10} {r.get('unit', ''):<5} "
            f"{_fmt(u) if u is not None else '':>8} {r['quality']:<10} {r.get('verdict', ''):<17} "
            + " ".join(r.get("flags", []))
        )
    if got.recent_alarms:
        lines += ["", "alarm changes:"]
        lines += [
            f"  {a.get('alarm', a.get('id', '?'))}: {a.get('state', '?')} {a.get('message', '')}"
            for a in got.recent_alarms
        ]
    if got.recent_events:
        lines += ["", "events:"]
        lines += [f"  #{e.get('n')} {e.get('type')}" for e in got.recent_events]
    lines += ["", "Ctrl-C stops."]
    out.write("\x1b[H\x1b[2J" + "\n".join(lines) + "\n")
    out.flush()


async def run_demo(stop: asyncio.Event, args: argparse.Namespace) -> None:
    """Everything in one process until ``stop`` (Ctrl-C) or ``--duration``."""
    loaded = load_config(DEMO_CONFIG)
    cfg = loaded.config
    state = Path(args.state_dir) if args.state_dir else Path(tempfile.mkdtemp(prefix="mg-demo-"))
    cfg.gateway.state_dir = state
    started = time.monotonic()
    got = Received()
    async with AsyncExitStack() as stack:
        if args.mqtt:
            cfg.mqtt.url = args.mqtt
        else:
            from amqtt.broker import Broker

            port = free_port()
            broker = Broker(
                {
                    "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
                    "plugins": {
                        "amqtt.plugins.authentication.AnonymousAuthPlugin": {
                            "allow_anonymous": True
                        }
                    },
                }
            )
            await broker.start()
            stack.push_async_callback(broker.shutdown)
            cfg.mqtt.url = f"mqtt://127.0.0.1:{port}"
        sims = await stack.enter_async_context(run_simulators(cfg, free_ports=True))
        gateway = Gateway(loaded)
        gw_stop = asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            gw_task = tg.create_task(gateway.run(gw_stop), name="gateway")
            async with asyncio.timeout(30):
                await gateway.ready.wait()
            view_tasks = [
                tg.create_task(
                    receive(cfg.mqtt.url, gateway.base_topic, state, got), name="demo-receiver"
                )
            ]
            if not args.no_view:
                view_tasks.append(tg.create_task(_view(got, gateway, started), name="demo-view"))
            else:
                print(
                    f"demo: broker {cfg.mqtt.url}, state {state}, simulators "
                    + ", ".join(f"{s.endpoint} ({'+'.join(s.devices)})" for s in sims),
                    flush=True,
                )
            try:
                async with asyncio.timeout(args.duration):
                    await stop.wait()
            except TimeoutError:
                pass
            await asyncio.sleep(1.0)  # let the last batches arrive at the view
            gw_stop.set()
            await gw_task
            for t in view_tasks:
                t.cancel()
    ok = got.rejected == 0 and got.readings > 0
    print(
        f"demo summary: {got.batches} batches, {got.readings} readings, {got.alarms} alarm "
        f"changes, {got.events} events received and verified; {got.rejected} rejected, "
        f"{got.duplicates} duplicates, {got.gaps} gaps; state in {state}",
        flush=True,
    )
    if not ok:
        raise SystemExit(1)


async def _view(got: Received, gateway: Gateway, started: float) -> None:
    while True:
        render(got, gateway, started, sys.stdout)
        await asyncio.sleep(1.0)
