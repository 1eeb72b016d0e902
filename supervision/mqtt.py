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

__all__ = ["Incoming", "MqttError", "MqttSource"]

log = logging.getLogger(__name__)


class MqttError(Exception):
    """An MQTT operation failed; ``endpoint`` names the broker."""

    def __init__(self, endpoint: str, message: str) -> None:
        super().__init__(f"{endpoint}: {message}")
        self.endpoint = endpoint


@dataclass(frozen=True, slots=True)
class Incoming:
    """A received message and what is needed to acknowledge it later."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    generation: int  # connection it arrived on
    received_ns: int


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

    # -- paho thread side --------------------------------------------------------------

    def _on_connect(
        self, client: paho.Client, _u: Any, flags: Any, rc: Any, _p: Any = None
    ) -> None:
        if rc.is_failure:
            log.error("MQTT connect to %s refused: %s", self.endpoint, rc)
            return
        with self._gen_lock:
            self._generation += 1
        if self._cfg.protocol == "5":
            client.subscribe([(t, SubscribeOptions(qos=1)) for t in self._topics])
        else:
            client.subscribe([(t, 1) for t in self._topics])
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._connected, bool(flags.session_present))

    def _on_disconnect(self, _c: paho.Client, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        with self._gen_lock:
            self._generation += 1
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._disconnected, str(rc))

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        assert self._loop is not None
        payload = bytes(msg.payload)
        m = Incoming(msg.topic, payload, msg.mid, msg.qos, self._generation, time.time_ns())
        self._loop.call_soon_threadsafe(self._queue.put_nowait, m)

    def _on_publish(self, _c: paho.Client, _u: Any, mid: int, _rc: Any, _p: Any) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._settle, mid)

    # -- event loop side ---------------------------------------------------------------

    def _connected(self, session_present: bool) -> None:
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

    def _settle(self, mid: int) -> None:
        fut = self._published.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result(None)

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

    def ack(self, m: Incoming) -> bool:
        """Acknowledge ``m`` to the broker; False when it arrived on an older connection."""
        if m.qos == 0 or self._client is None:
            return False
        with self._gen_lock:
            if m.generation != self._generation:
                return False
            return self._client.ack(m.mid, m.qos) == paho.MQTT_ERR_SUCCESS

    def publish(self, topic: str, payload: bytes) -> asyncio.Future[None]:
        """Publish with QoS 1; the future completes on PUBACK."""
        assert self._loop is not None and self._client is not None
        fut: asyncio.Future[None] = self._loop.create_future()
        info = self._client.publish(topic, payload, qos=1)
        if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
            fut.set_exception(MqttError(self.endpoint, f"publish failed: {info.rc}"))
        else:
            # on_publish reaches us via call_soon_threadsafe, so it cannot run before this
            self._published[info.mid] = fut
        return fut
