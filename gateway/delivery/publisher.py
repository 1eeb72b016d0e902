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

Refused is not delivered. Under MQTT 5 a broker that will not take a message (an
ACL denies the topic, a quota, a size limit) still answers PUBACK, with a reason
code of 0x80 or more. Such a batch stays in the outbox and is counted
(:attr:`PublisherStats.refused`, by kind and reason); its kind is held back with a
capped, jittered back-off while the other kinds keep flowing, then everything from
the first refused batch on is offered again. The first refusal of an episode (a
kind refused after being accepted) is reported once through ``on_refusal`` (the
daemon writes it to the event log) and health shows the episode until a batch of
that kind is accepted again. MQTT 3.1.1 has no way to say "refused": a broker then
acknowledges and drops the message (docs/wire.md recommends ``protocol: "5"``).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from drivers.backoff import Backoff
from drivers.base import utc_now_us
from drivers.cancel import cancel_requests, reraise_cancel_since
from gateway.config.schema import MqttConfig
from gateway.delivery.lanes import Lane, Lanes
from gateway.delivery.outbox import Outbox, Sealed

log = logging.getLogger("metrogate.publisher")

CommandHandler = Callable[[str, bytes], Awaitable[None]]
RefusalHandler = Callable[[dict[str, Any]], None]

SETTLE_EVERY = 32
"""Acknowledged batches deleted per outbox transaction (also flushed when idle)."""
SETTLE_AFTER_S = 0.5
"""An idle publisher deletes what was acknowledged once the oldest of it is this old:
one transaction per several batches at one tick every 100 ms, not one per batch."""
RECONNECT_INITIAL_S = 0.5
"""First wait before reconnecting; it doubles per failed attempt up to ``mqtt.backoff_max``."""


@dataclass
class Refusal:
    """An ongoing refusal episode of one kind: the broker answers with a failure code."""

    reason: str
    code: int
    since_us: int
    first_seq: int | None
    batches: int = 0


@dataclass
class PublisherStats:
    """Counters for health and metrics (monotonic since start).

    ``refused``: messages the broker answered with a failure reason code, by
    ``(kind, reason)`` (kind ``data``/``alarm``/``event``, or ``status``/``alarms``
    for the retained ones). ``refusing``: the episodes going on now, by kind.
    """

    connected: bool = False
    connects: int = 0
    published: int = 0
    failures: int = 0
    last_error: str | None = None
    connected_since_us: int | None = None
    refused: dict[tuple[str, str], int] = field(default_factory=dict)
    refusing: dict[str, Refusal] = field(default_factory=dict)


def reason_label(reason: ReasonCode) -> str:
    """A reason code as a metric label: ``Not authorized`` → ``not_authorized``."""
    return str(reason).lower().replace(" ", "_")


_SENT: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar(
    "metrogate_publish_mids", default=None
)


class AckedClient(aiomqtt.Client):
    """aiomqtt's client, keeping the reason code of each PUBACK it awaits.

    aiomqtt 2.x (2.5.1 here) resolves ``publish()`` on any PUBACK and drops the
    reason code that paho hands to its ``on_publish`` callback. Measured against
    Mosquitto 2.0.11 with an ACL denying the topic, over MQTT 5: PUBACK with reason
    0x87 (Not authorized), which aiomqtt reports as success. So, underneath
    aiomqtt: paho's ``publish`` is wrapped to learn the message id a call of
    :meth:`publish_acked` sends (a context variable of the calling task), and the
    ``on_publish`` callback aiomqtt registers records the reason code for those
    ids before resolving the call. Only ids awaited that way are recorded, so
    nothing accumulates. ``tests/integration/test_mqtt_refusal.py`` checks it
    against a real Mosquitto.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reasons: dict[int, ReasonCode] = {}
        self._watched: set[int] = set()
        send = self._client.publish

        def publish(*a: Any, **kw: Any) -> paho.MQTTMessageInfo:
            info = send(*a, **kw)
            box = _SENT.get()
            if box is not None:  # PUBACK cannot arrive before the event loop runs again
                box.append(info.mid)
                self._watched.add(info.mid)
            return info

        self._client.publish = publish  # type: ignore[method-assign]

    def _on_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties,
    ) -> None:
        if mid in self._watched:
            self._watched.discard(mid)
            self._reasons[mid] = reason_code
        super()._on_publish(client, userdata, mid, reason_code, properties)

    async def publish_acked(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> ReasonCode | None:
        """Publish and return the PUBACK's reason code (None: QoS 0, or none known).

        Raises what :meth:`aiomqtt.Client.publish` raises (``MqttError``).
        """
        box: list[int] = []
        cancels = cancel_requests()
        token = _SENT.set(box)
        try:
            await self.publish(topic, payload, qos=qos, retain=retain)
        finally:
            _SENT.reset(token)
            for mid in box:
                self._watched.discard(mid)
        reason = self._reasons.pop(box[0], None) if box else None
        # aiomqtt waits with asyncio.wait_for, which on Python 3.11 can return the PUBACK
        # and drop a cancellation that came at the same moment: the caller's loop would
        # then wait forever, and a stopping gateway with it (seen: 1 demo run in ~20).
        # Counted from before the call: the reconnecting task carries a stale request
        reraise_cancel_since(cancels)
        return reason


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
) -> AckedClient:
    """An aiomqtt client with the broker settings of ``cfg`` (TLS, credentials, version)."""
    return AckedClient(
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
        on_refusal: RefusalHandler | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.cfg = cfg
        self.base = base_topic
        self.client_id = client_id
        self.outbox = outbox
        self.birth = birth
        self.on_command = on_command
        self.on_refusal = on_refusal
        self.stats = PublisherStats()
        self._acked: list[int] = []
        outbox.before_drop = self.flush_acked  # delivered batches go before any is dropped
        self._acked_since = 0.0  # when the oldest of ``_acked`` was acknowledged (monotonic)
        self._live_from = 1  # the outbox's next seq when the connection came up
        self.lanes: Lanes | None = None
        """The current connection's lanes (what it handed out so far), for observation."""
        self._retained: dict[str, bytes] = {}
        self._retained_changed = asyncio.Event()
        self._rng = rng
        self._held: _HeldBack | None = None  # the current session's refused kinds
        self._offline = json.dumps(
            {
                "v": 1,
                "state": "offline",
                "gateway": birth.get("gateway"),
                "site": birth.get("site"),
            },
            separators=(",", ":"),
        ).encode()

    def _client(self) -> AckedClient:
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

    async def _retain(self, client: AckedClient) -> None:
        sent: dict[str, bytes] = {}
        while True:
            self._retained_changed.clear()
            for suffix, payload in list(self._retained.items()):
                if sent.get(suffix) is not payload:
                    topic = f"{self.base}/{suffix}"
                    reason = await client.publish_acked(topic, payload, qos=1, retain=True)
                    self._check_retained(suffix, reason)
                    sent[suffix] = payload
            await self._retained_changed.wait()

    def _check_retained(self, kind: str, reason: ReasonCode | None) -> None:
        """Count a refused retained message; it is state, sent again on the next change."""
        if reason is not None and reason.is_failure:
            self._count_refused(kind, reason)
            log.warning("broker refused the retained %s message: %s", kind, reason)

    async def _session(self, client: AckedClient) -> None:
        birth = json.dumps(self.birth, separators=(",", ":")).encode()
        reason = await client.publish_acked(f"{self.base}/status", birth, qos=1, retain=True)
        self._check_retained("status", reason)
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

    async def _pump(self, client: AckedClient) -> None:
        window = asyncio.Semaphore(self.cfg.inflight)
        held = _HeldBack(Backoff(RECONNECT_INITIAL_S, self.cfg.backoff_max, rng=self._rng))
        self._held = held
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
                picked = None
                while picked is None:
                    if held.due(time.monotonic()):
                        # offer everything from the first refused batch on again, once the
                        # batches in flight are answered (no duplicate while one is pending)
                        for _ in range(self.cfg.inflight - 1):
                            await window.acquire()
                        for _ in range(self.cfg.inflight - 1):
                            window.release()
                        self.flush_acked()
                        lanes.rewind(held.release())
                    picked = lanes.next(skip=held.kinds)
                    if picked is None:
                        settle_in = self._settle_in(time.monotonic())
                        if settle_in <= 0:
                            self.flush_acked()
                            settle_in = 1.0
                        await lanes.wait(held.wait(min(settle_in, 1.0)))
                lane, row = picked
                tg.create_task(
                    self._publish(client, row, window, lanes, lane), name=f"publish-{row.seq}"
                )

    async def _publish(
        self,
        client: AckedClient,
        row: Sealed,
        window: asyncio.Semaphore,
        lanes: Lanes,
        lane: Lane,
    ) -> None:
        try:
            reason = await client.publish_acked(f"{self.base}/{row.kind}", row.payload, qos=1)
            if reason is not None and reason.is_failure:
                self._refused(row, reason)
                return
            self.stats.published += 1
            self._accepted(row.kind)
            if not self._acked:
                self._acked_since = time.monotonic()
            self._acked.append(row.seq)
            if len(self._acked) >= SETTLE_EVERY:
                self.flush_acked()
        finally:
            lanes.sent(lane)
            window.release()

    def _count_refused(self, kind: str, reason: ReasonCode) -> None:
        key = (kind, reason_label(reason))
        self.stats.refused[key] = self.stats.refused.get(key, 0) + 1

    def _refused(self, row: Sealed, reason: ReasonCode) -> None:
        """The broker refused ``row``: keep it, count it, hold its kind back, report once."""
        self._count_refused(row.kind, reason)
        held = self._held
        if held is not None:
            held.refused(row, time.monotonic())
        episode = self.stats.refusing.get(row.kind)
        if episode is not None:
            episode.batches += 1
            return
        code = int(reason.value)
        self.stats.refusing[row.kind] = Refusal(str(reason), code, utc_now_us(), row.seq, 1)
        topic = f"{self.base}/{row.kind}"
        log.error(
            "broker %s:%d refuses %s batches (%s, 0x%02X); they stay in the outbox",
            self.cfg.host,
            self.cfg.port,
            row.kind,
            reason,
            code,
        )
        if self.on_refusal is not None:
            data = {"kind": row.kind, "topic": topic, "reason": str(reason), "code": code}
            data["seq"] = row.seq
            try:
                self.on_refusal(data)
            except Exception:  # reporting must not stop publishing
                log.exception("refusal handler failed")

    def _accepted(self, kind: str) -> None:
        """A batch of ``kind`` was accepted: a refusal episode of that kind is over."""
        episode = self.stats.refusing.pop(kind, None)
        if episode is not None:
            if self._held is not None:
                self._held.reset()
            log.info(
                "broker accepts %s batches again (%d refused since %s)",
                kind,
                episode.batches,
                time.strftime("%H:%M:%S", time.gmtime(episode.since_us / 1e6)),
            )

    def _settle_in(self, now: float) -> float:
        """Seconds until the acknowledged batches are due to be deleted (0: now)."""
        if not self._acked:
            return 1.0
        return max(0.0, self._acked_since + SETTLE_AFTER_S - now)

    def flush_acked(self) -> None:
        """Delete acknowledged batches from the outbox, several per transaction.

        Until then an acknowledged batch may be published again after a crash: a
        harmless duplicate, which receivers drop by its sequence number.
        """
        if self._acked:
            acked, self._acked = self._acked, []
            self.outbox.settle(acked)


class _HeldBack:
    """Kinds the broker refuses, held back until a back-off delay has passed.

    While held, the pump skips those kinds; when the delay is over it rewinds to
    the first refused batch and offers everything again. Each new refusal lengthens
    the delay (capped, jittered); an accepted batch of the kind resets it.
    """

    def __init__(self, backoff: Backoff) -> None:
        self._backoff = backoff
        self.kinds: set[str] = set()
        self._first: int | None = None
        self._retry_at: float | None = None

    def refused(self, row: Sealed, now: float) -> None:
        self.kinds.add(row.kind)
        self._first = row.seq if self._first is None else min(self._first, row.seq)
        if self._retry_at is None:
            self._retry_at = now + self._backoff.next_delay()

    def reset(self) -> None:
        """A refused kind was accepted again: the next refusal starts a short delay."""
        self._backoff.reset()

    def due(self, now: float) -> bool:
        return self._retry_at is not None and now >= self._retry_at

    def wait(self, idle: float) -> float:
        """How long the pump may wait for new batches before a retry is due."""
        if self._retry_at is None:
            return idle
        return max(0.0, min(idle, self._retry_at - time.monotonic()))

    def release(self) -> int | None:
        """Release the held kinds; the first refused seq, to offer again from (None: none)."""
        first, self._first, self._retry_at = self._first, None, None
        self.kinds = set()
        return first
