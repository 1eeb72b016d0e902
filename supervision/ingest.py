"""The ingest worker: MQTT shared subscription → verify → store → acknowledge.

Two tasks in one TaskGroup:

* *consume* takes messages from the :class:`~supervision.mqtt.MqttSource`, verifies
  each (registered key for the topic's gateway, signature, schema, sequence) and
  encodes it for the sink, collecting a :class:`_Pending` batch until it holds
  ``max_lines`` points, its oldest message waited ``max_delay``, or *write* is idle
  (group commit: an idle store gets what there is at once, a busy one gets bigger
  writes, so parsing the next batch always overlaps the store's work on this one);
* *write* writes one pending batch at a time, retrying with capped, jittered
  back-off while the store is unavailable, waits for the PUBACKs of any
  dead-letters, and only then acknowledges every message the batch covers.

A full hand-over queue (size 1) stops *consume*; the broker then stops sending
once ``receive_maximum`` messages are unacknowledged: memory stays bounded while
the store is down and nothing is lost. A message the store refuses (4xx) is
isolated by writing the batch's messages one by one; the refused ones are
dead-lettered. Dead-lettered messages are acknowledged only after the dead-letter
publication was acknowledged by the broker.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from drivers.backoff import Backoff
from gateway.wire.verify import BatchError, SeqKind, SequenceTracker, verify_batch
from supervision.config import (
    BatchConfig,
    InfluxV1Store,
    InfluxV2Store,
    IngestConfig,
    SqliteStore,
)
from supervision.keyring import Keyring
from supervision.model import SchemaError, parse_status, parse_topic, parse_verified
from supervision.mqtt import Incoming, MqttSource
from supervision.sinks import Chunk, Sink, StoreRejected, StoreUnavailable

__all__ = ["Ingest", "build_sink", "run_ingest", "running_ingest", "subscription_topics"]

log = logging.getLogger(__name__)


def subscription_topics(
    prefix: str, group: str, kinds: list[str], *, shared: bool = True
) -> list[str]:
    """``$share/{group}/{prefix}/v1/+/+/{kind}`` for each kind (without ``$share/…``
    when not ``shared``)."""
    head = f"$share/{group}/" if shared else ""
    return [f"{head}{prefix}/v1/+/+/{k}" for k in kinds]


def build_sink(store: InfluxV1Store | InfluxV2Store | SqliteStore) -> Sink:
    """The sink a store configuration describes."""
    if isinstance(store, InfluxV1Store):
        from supervision.sinks.influxdb import InfluxV1Sink

        return InfluxV1Sink(
            store.url,
            store.database,
            retention_policy=store.retention_policy,
            username=store.username,
            password=store.password.get_secret_value() if store.password else None,
            timeout=store.timeout,
            create_database=store.create_database,
        )
    if isinstance(store, InfluxV2Store):
        from supervision.sinks.influxdb import InfluxV2Sink

        return InfluxV2Sink(
            store.url,
            store.bucket,
            org=store.org,
            token=store.token.get_secret_value() if store.token else "",
            timeout=store.timeout,
        )
    from supervision.sinks.sqlite import SqliteSink

    return SqliteSink(store.path)


# (gateway, seq, payload digest): what the sequence tracker records once stored
_SeqKey = tuple[str, int, bytes]


@dataclass(slots=True)
class _Pending:
    """Messages collected for one store write: (chunk or None, message, sequence key)."""

    started: float
    entries: list[tuple[Chunk | None, Incoming, _SeqKey | None]] = field(default_factory=list)
    dead_letters: list[asyncio.Future[None]] = field(default_factory=list)
    lines: int = 0
    readings: int = 0


class Ingest:
    """One ingest worker. Build it with its source, sink and keys; ``await run()``.

    ``run`` returns after :meth:`stop` once everything received was written and
    acknowledged; cancelling it instead leaves unacknowledged messages to be
    redelivered (at-least-once holds either way).
    """

    def __init__(
        self,
        source: MqttSource,
        sink: Sink,
        keyring: Keyring,
        *,
        batch: BatchConfig,
        dead_letter_topic: str,
        worker: str,
        tracker: SequenceTracker | None = None,
    ) -> None:
        self._source = source
        self._sink = sink
        self._keyring = keyring
        self._cfg = batch
        self._dl_topic = dead_letter_topic
        self._worker = worker
        self._tracker = tracker or SequenceTracker()
        self._gateways = keyring.gateways
        self._replay_warned: set[str] = set()
        # *consume* fills _pending; a full or overdue one is queued (one at most, then
        # consume waits); *write* takes the queued one, else the pending one as it is
        self._pending: _Pending | None = None
        self._ready: asyncio.Queue[_Pending | None] = asyncio.Queue(maxsize=1)
        self._work = asyncio.Event()  # set when there may be something for *write*
        self._writer_waiting = False
        self.counts: Counter[str] = Counter()
        self.ops: Any = None  # the /metrics + /health server while running (its .port)

    @property
    def tracker(self) -> SequenceTracker:
        """The sequence tracker (gaps, duplicates, replays per gateway)."""
        return self._tracker

    # -- verification ------------------------------------------------------------------

    def _dead_letter(self, m: Incoming, reason: str, detail: str, p: _Pending) -> None:
        self.counts["dead_letter"] += 1
        self.counts[f"dead_letter.{reason}"] += 1
        log.warning("dead-letter %s from %s: %s", reason, m.topic, detail)
        doc = {
            "v": 1,
            "reason": reason,
            "detail": detail,
            "topic": m.topic,
            "worker": self._worker,
            "received": m.received_ns // 1000,
            "payload_b64": base64.b64encode(m.payload).decode("ascii"),
        }
        body = json.dumps(doc, separators=(",", ":")).encode()
        p.dead_letters.append(self._source.publish(self._dl_topic, body))
        p.entries.append((None, m, None))

    def _accept(self, m: Incoming, p: _Pending) -> None:
        """Verify and encode one message into ``p`` (never raises for bad content).

        Order: topic, gateway registered, :func:`gateway.wire.verify.verify_batch`
        (signature, then the body's form), key registered for the topic's gateway,
        content and topic match, then the sequence verdict of the shared
        :class:`gateway.wire.verify.SequenceTracker`.
        """
        self.counts["received"] += 1
        try:
            site, gateway, kind = parse_topic(m.topic)
            if kind == "status":
                status = parse_status(m.payload, site, gateway)
                chunk = self._sink.encode_status(status, m.received_ns)
                p.entries.append((chunk, m, None))
                p.lines += self._sink.lines_in(chunk)
                return
            if gateway not in self._gateways:
                raise SchemaError("unknown_gateway", f"no key registered for gateway {gateway}")
            vb = verify_batch(m.payload, self._keyring.keys)
            if self._keyring.gateway_of[vb.kid] != gateway:
                raise SchemaError("key_mismatch", f"key {vb.kid} is not registered for {gateway}")
            # the sink checks each reading while encoding it (one pass; SchemaError too)
            batch = parse_verified(vb, site, gateway, kind, rows=False)
            chunk = self._sink.encode(batch)
            self.counts["verified"] += 1
        except BatchError as exc:
            self._dead_letter(m, exc.kind, exc.detail, p)
            return
        except SchemaError as exc:
            self._dead_letter(m, exc.reason, exc.detail, p)
            return
        except OverflowError as exc:  # an integer no float can hold (valid JSON, not a value)
            self._dead_letter(m, "schema", f"a number out of range: {exc}", p)
            return
        digest = hashlib.blake2b(m.payload, digest_size=16).digest()
        verdict = self._tracker.classify(gateway, batch.seq, digest=digest).kind
        if verdict is SeqKind.DUPLICATE:
            # already stored: acknowledging it with this write is safe
            self.counts["duplicate"] += 1
            p.entries.append((None, m, None))
            return
        if verdict is SeqKind.CONFLICT:
            self._dead_letter(
                m, "sequence_conflict", f"{gateway} seq {batch.seq} seen with other bytes", p
            )
            return
        if verdict is SeqKind.GAP_FILL:
            self.counts["gap_fill"] += 1
        elif verdict is SeqKind.REPLAY:
            # Written anyway: its points are identical to those stored (idempotent), and
            # a worker's local view cannot tell a captured batch sent again from a late
            # redelivery after a restart or one that another worker's share delayed.
            self.counts["replay"] += 1
            if gateway not in self._replay_warned:
                self._replay_warned.add(gateway)
                log.warning("%s seq %d is below what this worker saw: replay?", gateway, batch.seq)
        p.entries.append((chunk, m, (gateway, batch.seq, digest)))
        p.lines += self._sink.lines_in(chunk)
        p.readings += len(batch.rows) + len(batch.readings)

    # -- the two tasks -----------------------------------------------------------------

    async def _consume(self) -> None:
        loop = asyncio.get_running_loop()
        max_lines, max_delay = self._cfg.max_lines, self._cfg.max_delay
        while True:
            p = self._pending
            if p is None:
                m = await self._source.get()
            else:
                try:
                    async with asyncio.timeout(max(0.0, p.started + max_delay - loop.time())):
                        m = await self._source.get()
                except TimeoutError:
                    await self._hand_over()
                    continue
            if m is None:
                await self._hand_over()
                await self._ready.put(None)
                self._work.set()
                return
            # *write* may have taken the pending batch while this task waited
            p = self._pending
            if p is None:
                p = self._pending = _Pending(loop.time())
            self._accept(m, p)
            if p.lines >= max_lines or len(p.entries) >= 50_000:
                await self._hand_over()
            elif self._writer_waiting:
                self._work.set()  # taken as it is once this task waits for messages

    async def _hand_over(self) -> None:
        """Queue the pending batch for *write* (waits while one is queued already)."""
        p, self._pending = self._pending, None
        if p is not None:
            await self._ready.put(p)
            self._work.set()

    async def _next(self) -> _Pending | None:
        """What *write* writes next: the queued batch, else whatever is pending (group
        commit), else the first of them once there is one."""
        while True:
            if not self._ready.empty():
                return self._ready.get_nowait()
            p = self._pending
            if p is not None and p.entries:
                self._pending = None
                return p
            self._work.clear()
            self._writer_waiting = True
            try:
                await self._work.wait()
            finally:
                self._writer_waiting = False

    async def _write(self) -> None:
        while True:
            p = await self._next()
            if p is None:
                return
            rejected = await self._store(p)
            for fut in p.dead_letters:
                await self._await_dead_letter(fut)
            for _, m, key in p.entries:
                if key is not None and id(m) not in rejected:
                    self._tracker.record(key[0], key[1], digest=key[2])
                self._source.ack(m)
            self.counts["acked"] += len(p.entries)
            self.counts["readings_written"] += p.readings
            self.counts["writes"] += 1

    async def _await_dead_letter(self, fut: asyncio.Future[None]) -> None:
        # paho resends an unacknowledged publish after a reconnect: keep waiting
        while True:
            try:
                async with asyncio.timeout(30):
                    await asyncio.shield(fut)
                return
            except TimeoutError:
                log.warning("dead-letter publication still unacknowledged after 30 s")

    async def _store(self, p: _Pending) -> set[int]:
        """Write ``p``; the ``id`` of each message the store refused (now dead-lettered)."""
        chunks = [c for c, _, _ in p.entries if c is not None]
        rejected: set[int] = set()
        if not chunks:
            return rejected
        try:
            await self._retrying(chunks)
        except StoreRejected as exc:
            log.warning("store refused a batch (%s); isolating the messages at fault", exc)
            for chunk, m, _ in list(p.entries):
                if chunk is None:
                    continue
                try:
                    await self._retrying([chunk])
                except StoreRejected as one:
                    self.counts["store_rejected"] += 1
                    rejected.add(id(m))
                    self._dead_letter(m, "store_rejected", str(one), p)
        return rejected

    async def _retrying(self, chunks: list[Chunk]) -> None:
        """Write until the store accepts (returns) or refuses the content (StoreRejected)."""
        backoff = Backoff(self._cfg.retry_initial, self._cfg.retry_max)
        down_since: float | None = None
        while True:
            try:
                await self._sink.write(chunks)
            except StoreUnavailable as exc:
                self.counts["write_failures"] += 1
                if down_since is None:
                    down_since = time.monotonic()
                    log.error("store unavailable, holding messages and retrying: %s", exc)
                else:
                    log.debug("store still unavailable: %s", exc)
                await asyncio.sleep(backoff.next_delay())
                continue
            if down_since is not None:
                log.warning("store recovered after %.1f s", time.monotonic() - down_since)
            return

    async def _report(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            log.info("ingest stats: %s", json.dumps(dict(self.counts), sort_keys=True))

    @property
    def connected(self) -> asyncio.Event:
        """Set while the MQTT connection is up."""
        return self._source.connected

    def stop(self) -> None:
        """Finish: write and acknowledge what was received, then make :meth:`run` return."""
        self._source.close_input()

    async def run(self, stats_interval: float = 0.0) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._write(), name="ingest-write")
            reporter = None
            if stats_interval > 0:
                reporter = tg.create_task(self._report(stats_interval), name="ingest-stats")
            await self._consume()
            if reporter is not None:
                reporter.cancel()


@asynccontextmanager
async def running_ingest(cfg: IngestConfig) -> AsyncIterator[Ingest]:
    """A worker built from ``cfg``, running in this event loop while the block runs.

    Leaving the block stops it the orderly way: what was received is written and
    acknowledged, then the connection and the store are closed.
    """
    keyring = Keyring.load(cfg.keys_dir)
    log.info("ingest: %d gateway keys from %s", len(keyring.gateways), cfg.keys_dir)
    sink = build_sink(cfg.store)
    await sink.open()
    topics = subscription_topics(
        cfg.mqtt.prefix, cfg.mqtt.group, list(cfg.mqtt.kinds), shared=cfg.mqtt.shared
    )
    try:
        async with MqttSource(cfg.mqtt, topics) as source:
            ingest = Ingest(
                source,
                sink,
                keyring,
                batch=cfg.batch,
                dead_letter_topic=cfg.mqtt.dead_letter_topic,
                worker=cfg.mqtt.client_id,
            )
            log.info("ingest %s: %s → %s", cfg.mqtt.client_id, ", ".join(topics), sink.name)
            async with AsyncExitStack() as stack:
                if cfg.ops.enabled:
                    await _serve_ops(stack, cfg, ingest, keyring)
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(ingest.run(cfg.stats_interval), name="ingest")
                    try:
                        yield ingest
                    finally:
                        ingest.stop()
            log.info("ingest stopped: %s", json.dumps(dict(ingest.counts), sort_keys=True))
    finally:
        await sink.aclose()


async def _serve_ops(
    stack: AsyncExitStack, cfg: IngestConfig, ingest: Ingest, keyring: Keyring
) -> None:
    """``/metrics`` and ``/health`` of this worker (docs/operations.md); never fatal."""
    from prometheus_client import CollectorRegistry

    from gateway.common.opsserver import OpsServer
    from supervision.metrics import IngestCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(
        IngestCollector(ingest.counts, tracker=ingest.tracker, gateways=lambda: keyring.gateways)
    )

    def health() -> dict[str, object]:
        up = ingest.connected.is_set()
        return {
            "status": "ok" if up else "degraded",
            "worker": cfg.mqtt.client_id,
            "broker_connected": up,
            "counts": dict(ingest.counts),
        }

    try:
        ingest.ops = await stack.enter_async_context(
            OpsServer(cfg.ops.host, cfg.ops.port, registry, health)
        )
    except OSError as exc:  # metrics must never stop the ingest
        log.error("ops endpoint %s not served: %s", cfg.ops.listen, exc)


async def run_ingest(cfg: IngestConfig, *, stop: asyncio.Event | None = None) -> Counter[str]:
    """Run a worker from its configuration until ``stop`` is set (or SIGTERM/SIGINT)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with running_ingest(cfg) as ingest:
            await stop.wait()
        return ingest.counts
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
