"""MQTT publisher: outbox → broker, QoS 1, deleting a batch only after its PUBACK.

One long-lived task (:meth:`Publisher.run`) connects, publishes the retained birth
message, then pumps the outbox with up to ``mqtt.inflight`` messages awaiting PUBACK
at once, in the order of :mod:`gateway.delivery.lanes`: alarm and event batches
first, then data sealed since this connection, then the backlog (oldest first,
paced by ``mqtt.drain_rate``, in at most half the window). Any broker trouble
(refused connection, lost connection, a PUBACK that does not come within
``publish_timeout``) ends the connection; the publisher waits a capped, jittered
back-off and reconnects forever, resending every batch not yet settled —
byte-identical, since batches are sealed in the outbox.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiomqtt

from drivers.backoff import Backoff
from drivers.base import utc_now_us
from gateway.config.schema import MqttConfig
from gateway.delivery.lanes import Lane, Lanes
from gateway.delivery.outbox import Outbox, Sealed

log = logging.getLogger("metrogate.publisher")

CommandHandler = Callable[[str, bytes], Awaitable[None]]

SETTLE_EVERY = 32
"""Acknowledged batches deleted per outbox transaction (also flushed when idle)."""
RECONNECT_INITIAL_S = 0.5
"""First wait before reconnecting; it doubles per failed attempt up to ``mqtt.backoff_max``."""


@dataclass
class PublisherStats:
    """Counters for health and metrics (monotonic since start)."""

    connected: bool = False
    connects: int = 0
    published: int = 0
    failures: int = 0
    last_error: str | None = None
    connected_since_us: int | None = None


def tls_context(cfg: MqttConfig) -> ssl.SSLContext | None:
    if not cfg.uses_tls:
        return None
    ctx = ssl.create_default_context(cafile=str(cfg.tls.ca) if cfg.tls and cfg.tls.ca else None)
    if cfg.tls and cfg.tls.cert and cfg.tls.key:
        ctx.load_cert_chain(str(cfg.tls.cert), str(cfg.tls.key))
    if cfg.tls and cfg.tls.insecure:
        ctx.check_hostname = False
    return ctx


def mqtt_client(
    cfg: MqttConfig, identifier: str, *, will: aiomqtt.Will | None = None
) -> aiomqtt.Client:
    """An aiomqtt client with the broker settings of ``cfg`` (TLS, credentials, version)."""
    return aiomqtt.Client(
        cfg.host,
        cfg.port,
        identifier=identifier,
        username=cfg.username,
        password=cfg.password.get_secret_value() if cfg.password else None,
        protocol=aiomqtt.ProtocolVersion.V5
        if cfg.protocol == "5"
        else aiomqtt.ProtocolVersion.V311,
        keepalive=int(cfg.keepalive),
        tls_context=tls_context(cfg),
        will=will,
        max_inflight_messages=cfg.inflight,
        timeout=cfg.publish_timeout,
    )


class Publisher:
    """Publishes sealed batches; see the module docstring for the guarantees."""

    def __init__(
        self,
        cfg: MqttConfig,
        *,
        base_topic: str,
        client_id: str,
        outbox: Outbox,
        birth: dict[str, Any],
        on_command: CommandHandler | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.cfg = cfg
        self.base = base_topic
        self.client_id = client_id
        self.outbox = outbox
        self.birth = birth
        self.on_command = on_command
        self.stats = PublisherStats()
        self._acked: list[int] = []
        self._live_from = 1  # the outbox's next seq when the connection came up
        self.lanes: Lanes | None = None
        """The current connection's lanes (what it handed out so far), for observation."""
        self._retained: dict[str, bytes] = {}
        self._retained_changed = asyncio.Event()
        self._rng = rng
        self._offline = json.dumps(
            {
                "v": 1,
                "state": "offline",
                "gateway": birth.get("gateway"),
                "site": birth.get("site"),
            },
            separators=(",", ":"),
        ).encode()

    def _client(self) -> aiomqtt.Client:
        will = aiomqtt.Will(f"{self.base}/status", self._offline, qos=1, retain=True)
        client = mqtt_client(self.cfg, self.client_id, will=will)
        # the in-flight window is ours and bounded; aiomqtt's warning assumes one at a time
        client.pending_calls_threshold = self.cfg.inflight + 10
        return client

    async def run(self) -> None:
        """Connect and publish forever; returns only by cancellation."""
        backoff = Backoff(RECONNECT_INITIAL_S, self.cfg.backoff_max, rng=self._rng)
        while True:
            try:
                async with self._client() as client:
                    self._on_connect()
                    backoff.reset()
                    try:
                        await self._session(client)
                    except asyncio.CancelledError:
                        await self._say_offline(client)
                        raise
            except* aiomqtt.MqttError as group:
                self._on_disconnect(str(group.exceptions[0]))
            await asyncio.sleep(backoff.next_delay())

    def _on_connect(self) -> None:
        self._live_from = self.outbox.next_seq  # what is sealed from now on is live
        self.stats.connected = True
        self.stats.connects += 1
        self.stats.connected_since_us = utc_now_us()
        log.info("connected to broker %s:%d", self.cfg.host, self.cfg.port)

    def _on_disconnect(self, why: str) -> None:
        self.stats.failures += 1
        self.stats.last_error = why
        if self.stats.connected:
            log.error("broker connection lost (%s); backlog kept in the outbox", why)
        else:
            log.debug("broker still unreachable: %s", why)
        self.stats.connected = False
        self.stats.connected_since_us = None

    async def _say_offline(self, client: aiomqtt.Client) -> None:
        try:
            async with asyncio.timeout(2):
                await client.publish(f"{self.base}/status", self._offline, qos=1, retain=True)
        except (aiomqtt.MqttError, TimeoutError):
            pass  # the Last Will says it for us

    def set_retained(self, suffix: str, payload: bytes) -> None:
        """Keep ``payload`` retained on ``{base}/{suffix}``: the latest one wins.

        For state whose current value is what matters (the set of active alarms),
        not its history — history travels through the outbox.
        """
        self._retained[suffix] = payload
        self._retained_changed.set()

    async def _retain(self, client: aiomqtt.Client) -> None:
        sent: dict[str, bytes] = {}
        while True:
            self._retained_changed.clear()
            for suffix, payload in list(self._retained.items()):
                if sent.get(suffix) is not payload:
                    await client.publish(f"{self.base}/{suffix}", payload, qos=1, retain=True)
                    sent[suffix] = payload
            await self._retained_changed.wait()

    async def _session(self, client: aiomqtt.Client) -> None:
        birth = json.dumps(self.birth, separators=(",", ":")).encode()
        await client.publish(f"{self.base}/status", birth, qos=1, retain=True)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._retain(client), name="mqtt-retained")
                if self.on_command is not None:
                    await client.subscribe(f"{self.base}/cmd/#", qos=1)
                    tg.create_task(self._commands(client), name="mqtt-commands")
                tg.create_task(self._pump(client), name="mqtt-pump")
        finally:
            self.flush_acked()

    async def _commands(self, client: aiomqtt.Client) -> None:
        assert self.on_command is not None
        prefix = f"{self.base}/cmd/"
        async for message in client.messages:
            name = str(message.topic)[len(prefix) :]
            payload = message.payload if isinstance(message.payload, bytes) else b""
            try:
                await self.on_command(name, payload)
            except Exception:  # a bad command must not take the connection down
                log.exception("command %s failed", name)

    async def _pump(self, client: aiomqtt.Client) -> None:
        window = asyncio.Semaphore(self.cfg.inflight)
        lanes = Lanes(
            self.outbox,
            live_from=self._live_from,
            drain_rate=self.cfg.drain_rate,
            backlog_window=max(1, self.cfg.inflight // 2),
        )
        self.lanes = lanes
        async with asyncio.TaskGroup() as tg:
            while True:
                await window.acquire()  # choose the batch only once it can go: urgent first
                picked = lanes.next()
                while picked is None:
                    self.flush_acked()
                    await lanes.wait(0.05 if self._acked else 1.0)
                    picked = lanes.next()
                lane, row = picked
                tg.create_task(
                    self._publish(client, row, window, lanes, lane), name=f"publish-{row.seq}"
                )

    async def _publish(
        self,
        client: aiomqtt.Client,
        row: Sealed,
        window: asyncio.Semaphore,
        lanes: Lanes,
        lane: Lane,
    ) -> None:
        try:
            await client.publish(f"{self.base}/{row.kind}", row.payload, qos=1)
            self.stats.published += 1
            self._acked.append(row.seq)
            if len(self._acked) >= SETTLE_EVERY:
                self.flush_acked()
        finally:
            lanes.sent(lane)
            window.release()

    def flush_acked(self) -> None:
        """Delete acknowledged batches from the outbox, several per transaction.

        Until then an acknowledged batch may be published again after a crash: a
        harmless duplicate, which receivers drop by its sequence number.
        """
        if self._acked:
            acked, self._acked = self._acked, []
            self.outbox.settle(acked)
