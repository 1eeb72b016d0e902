"""An MQTT 5 (or 3.1.1) consumer with manual acknowledgement, driven from asyncio.

paho-mqtt runs its network loop in its own thread (``loop_start``) and hands every
message to the event loop with ``call_soon_threadsafe``. ``manual_ack=True`` means
a QoS 1 message is acknowledged only when :meth:`MqttSource.ack` is called, which
the ingest does after the store accepted it. The session is persistent
(``clean_start=False`` with a session expiry): messages not acknowledged when a
worker dies are delivered again when it reconnects with the same client id.

With ``protocol: "3.1.1"`` (brokers without MQTT 5, such as the demo's amqtt) the
session is kept with *clean session* off; there is no Receive Maximum, so the
broker's own in-flight limit is the only flow control.

Flow control is the broker's: MQTT 5 *Receive Maximum* caps the unacknowledged
messages the broker sends us, so a worker whose store is down stops receiving
instead of growing its memory (Mosquitto also caps them with
``max_inflight_messages``; see docs/ingest.md).

A packet id is only meaningful on the connection it arrived on: a message received
before a reconnect is never acknowledged (the broker resends it on the new
connection, where it is acknowledged), so a stale ack cannot hit a reused id.

What arrives is bounded before it is queued, in paho's thread: QoS 0 messages have no
flow control, so those held (received, not yet :meth:`MqttSource.ack`-ed or
:meth:`MqttSource.forgo`-ne) are capped at ``qos0_max_messages`` and
``qos0_max_bytes``; beyond that they are dropped and counted
(:attr:`MqttSource.qos0_dropped`). A payload above ``max_payload`` is kept as its first
``max_payload`` bytes only (``Incoming.size`` says how large it was), for the ingest to
dead-letter. No callback ever raises into paho's thread (that would end its network
loop): whatever goes wrong in one is logged and the message dropped, counted.

A PUBACK with a failure reason code (MQTT 5, ≥ 0x80) fails the publication's future
with :class:`PublishRefused`. MQTT 3.1.1 has no reason codes: a broker that refuses a
publication (an ACL) acknowledges it all the same.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from supervision.config import MqttConfig

__all__ = ["Incoming", "MqttError", "MqttSource", "PublishRefused"]

log = logging.getLogger(__name__)


class MqttError(Exception):
    """An MQTT operation failed; ``endpoint`` names the broker."""

    def __init__(self, endpoint: str, message: str) -> None:
        super().__init__(f"{endpoint}: {message}")
        self.endpoint = endpoint


class PublishRefused(MqttError):
    """The broker answered a publication with a failure reason code (MQTT 5)."""

    def __init__(self, endpoint: str, reason: str) -> None:
        super().__init__(endpoint, f"publication refused: {reason}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Incoming:
    """A received message and what is needed to acknowledge it later.

    ``payload`` holds at most ``max_payload`` bytes; ``size`` is the length received.
    """

    topic: str
    payload: bytes
    mid: int
    qos: int
    generation: int  # connection it arrived on
    received_ns: int
    size: int = -1

    @property
    def oversize(self) -> bool:
        return self.size > len(self.payload)


class MqttSource:
    """Async context manager: subscribe, receive with :meth:`get`, :meth:`ack`, :meth:`publish`."""

    def __init__(self, cfg: MqttConfig, topics: Sequence[str]) -> None:
        u = urllib.parse.urlsplit(cfg.url)
        self._cfg = cfg
        self._host = u.hostname or "127.0.0.1"
        self._port = u.port or (8883 if u.scheme == "mqtts" else 1883)
        self.endpoint = f"{u.scheme}://{self._host}:{self._port}"
        self._tls = u.scheme == "mqtts"
        self._topics = list(topics)
        self._queue: asyncio.Queue[Incoming | None] = asyncio.Queue()
        self._published: dict[int, asyncio.Future[None]] = {}
        # Bumped (in paho's thread, under the lock) on every connect and disconnect; an ack
        # holds the lock, so it can never be sent on a connection its message did not use.
        self._generation = 0
        self._gen_lock = threading.Lock()
        self.connected = asyncio.Event()
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: paho.Client | None = None
        # QoS 0 messages held (paho's thread adds, the event loop releases): the bound
        self._qos0_lock = threading.Lock()
        self._qos0_held = 0
        self._qos0_bytes = 0
        self.qos0_dropped = 0
        self.callback_errors = 0
        self._subscribe_mid: int | None = None  # paho's thread only
        self._session_present = False

    # -- paho thread side --------------------------------------------------------------

    def _on_connect(
        self, client: paho.Client, _u: Any, flags: Any, rc: Any, _p: Any = None
    ) -> None:
        try:
            self._connect_done(client, flags, rc)
        except Exception:  # never into paho's thread
            self.callback_errors += 1
            log.exception("MQTT connect to %s not handled", self.endpoint)

    def _connect_done(self, client: paho.Client, flags: Any, rc: Any) -> None:
        if rc.is_failure:
            log.error("MQTT connect to %s refused: %s", self.endpoint, rc)
            return
        with self._gen_lock:
            self._generation += 1
        if self._cfg.protocol == "5":
            _, mid = client.subscribe([(t, SubscribeOptions(qos=1)) for t in self._topics])
        else:
            _, mid = client.subscribe([(t, 1) for t in self._topics])
        # connected (for the rest of us) once the broker confirmed the subscription
        self._subscribe_mid = mid
        self._session_present = bool(flags.session_present)

    def _on_subscribe(self, _c: paho.Client, _u: Any, mid: int, codes: Any, _p: Any) -> None:
        try:
            if self._subscribe_mid is None or mid != self._subscribe_mid:
                return
            refused = [
                f"{t} ({rc})" for t, rc in zip(self._topics, codes, strict=False)
                if getattr(rc, "is_failure", False)
            ]  # fmt: skip
            assert self._loop is not None
            self._loop.call_soon_threadsafe(self._connected, self._session_present, refused)
        except Exception:  # never into paho's thread
            self.callback_errors += 1
            log.exception("SUBACK from %s not handled", self.endpoint)

    def _on_disconnect(self, _c: paho.Client, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        with self._gen_lock:
            self._generation += 1
        try:
            assert self._loop is not None
            self._loop.call_soon_threadsafe(self._disconnected, str(rc))
        except Exception:  # never into paho's thread (a loop closed under it, say)
            self.callback_errors += 1
            log.exception("MQTT disconnect from %s not handled", self.endpoint)

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        try:
            self._receive(msg)
        except Exception:  # never into paho's thread: it would end the network loop
            self.callback_errors += 1
            log.exception("MQTT message on %r dropped: could not be taken in", msg._topic[:200])

    def _receive(self, msg: paho.MQTTMessage) -> None:
        assert self._loop is not None
        raw = msg.payload
        size = len(raw)
        limit = self._cfg.max_payload
        payload = bytes(raw[:limit]) if size > limit else bytes(raw)
        try:
            topic = msg.topic
        except UnicodeDecodeError:  # brokers check topics are UTF-8; still, never raise
            topic = msg._topic.decode("utf-8", "replace")
        if msg.qos == 0:
            weight = len(payload) + len(topic)
            with self._qos0_lock:
                if (
                    self._qos0_held >= self._cfg.qos0_max_messages
                    or self._qos0_bytes + weight > self._cfg.qos0_max_bytes
                ):
                    self.qos0_dropped += 1
                    return
                self._qos0_held += 1
                self._qos0_bytes += weight
        m = Incoming(topic, payload, msg.mid, msg.qos, self._generation, time.time_ns(), size)
        self._loop.call_soon_threadsafe(self._queue.put_nowait, m)

    def _on_publish(self, _c: paho.Client, _u: Any, mid: int, rc: Any, _p: Any) -> None:
        try:
            assert self._loop is not None
            # "Not authorized" (0x87) → not_authorized: a metric label, a counter key
            refused = None
            if getattr(rc, "is_failure", False):
                refused = str(rc).strip().lower().replace(" ", "_") or f"0x{int(rc.value):02x}"
            self._loop.call_soon_threadsafe(self._settle, mid, refused)
        except Exception:  # never into paho's thread
            self.callback_errors += 1
            log.exception("PUBACK of publication %d not handled", mid)

    # -- event loop side ---------------------------------------------------------------

    def _connected(self, session_present: bool, refused: list[str]) -> None:
        if refused:
            log.error("MQTT broker %s refused subscriptions: %s", self.endpoint, ", ".join(refused))
        if len(refused) == len(self._topics):
            return  # nothing will arrive: not "connected" for health and for waiters
        self.connected.set()
        log.info(
            "MQTT connected to %s as %s (session %s)",
            self.endpoint,
            self._cfg.client_id,
            "resumed" if session_present else "new",
        )

    def _disconnected(self, reason: str) -> None:
        if self.connected.is_set() and not self._closing:
            log.warning("MQTT connection to %s lost (%s); reconnecting", self.endpoint, reason)
        self.connected.clear()

    def _settle(self, mid: int, refused: str | None) -> None:
        fut = self._published.pop(mid, None)
        if fut is None or fut.done():
            return
        if refused is None:
            fut.set_result(None)
        else:
            fut.set_exception(PublishRefused(self.endpoint, refused))

    async def __aenter__(self) -> MqttSource:
        self._loop = asyncio.get_running_loop()
        v5 = self._cfg.protocol == "5"
        c = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self._cfg.client_id,
            protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
            manual_ack=True,
            # MQTT 3.1.1 keeps the session with clean session off (5: clean_start below)
            clean_session=None if v5 else False,
        )
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_publish = self._on_publish
        c.on_subscribe = self._on_subscribe
        c.max_inflight_messages_set(100)
        c.max_queued_messages_set(0)
        c.reconnect_delay_set(min_delay=1, max_delay=30)
        if self._cfg.username is not None:
            pw = self._cfg.password.get_secret_value() if self._cfg.password else None
            c.username_pw_set(self._cfg.username, pw)
        tls = self._cfg.tls
        if self._tls or tls is not None:
            c.tls_set(
                ca_certs=str(tls.ca) if tls and tls.ca else None,
                certfile=str(tls.cert) if tls and tls.cert else None,
                keyfile=str(tls.key) if tls and tls.key else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
            if tls is not None and tls.insecure:
                c.tls_insecure_set(True)
        if v5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho
            props.SessionExpiryInterval = int(self._cfg.session_expiry)
            props.ReceiveMaximum = self._cfg.receive_maximum
            c.connect_async(
                self._host,
                self._port,
                keepalive=int(self._cfg.keepalive),
                clean_start=False,
                properties=props,
            )
        else:
            c.connect_async(self._host, self._port, keepalive=int(self._cfg.keepalive))
        c.loop_start()
        self._client = c
        return self

    async def __aexit__(
        self,
        et: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        c, self._client = self._client, None
        if c is None:
            return
        self._closing = True
        c.disconnect()
        # joins the network thread, which the disconnect ends within milliseconds
        c.loop_stop()
        for fut in self._published.values():
            if not fut.done():
                fut.set_exception(MqttError(self.endpoint, "closed before PUBACK"))
        self._published.clear()

    async def get(self) -> Incoming | None:
        """The next message; ``None`` once :meth:`close_input` was called."""
        return await self._queue.get()

    def get_nowait(self) -> Incoming | None:
        """The next message if one is waiting; raises :class:`asyncio.QueueEmpty`."""
        return self._queue.get_nowait()

    def close_input(self) -> None:
        """Make :meth:`get` return ``None`` after the messages already received."""
        self._queue.put_nowait(None)

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    def _release(self, m: Incoming) -> None:
        if m.qos == 0:
            with self._qos0_lock:
                self._qos0_held -= 1
                self._qos0_bytes -= len(m.payload) + len(m.topic)

    def ack(self, m: Incoming) -> bool:
        """Acknowledge ``m`` to the broker (once per message); False when it arrived on an
        older connection, or is QoS 0 (nothing to acknowledge)."""
        self._release(m)
        if m.qos == 0 or self._client is None:
            return False
        with self._gen_lock:
            if m.generation != self._generation:
                return False
            return self._client.ack(m.mid, m.qos) == paho.MQTT_ERR_SUCCESS

    def forgo(self, m: Incoming) -> None:
        """Be done with ``m`` without acknowledging it: the broker keeps it and sends it
        again when this client's session reconnects (a QoS 0 message is gone)."""
        self._release(m)

    def publish(self, topic: str, payload: bytes) -> asyncio.Future[None]:
        """Publish with QoS 1; the future completes on PUBACK, or fails with
        :class:`PublishRefused` when the PUBACK carries a failure reason code."""
        assert self._loop is not None and self._client is not None
        fut: asyncio.Future[None] = self._loop.create_future()
        info = self._client.publish(topic, payload, qos=1)
        if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
            fut.set_exception(MqttError(self.endpoint, f"publish failed: {info.rc}"))
        else:
            # on_publish reaches us via call_soon_threadsafe, so it cannot run before this
            self._published[info.mid] = fut
        return fut
