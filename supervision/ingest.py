"""The ingest worker: MQTT shared subscription → verify → store → acknowledge.

Three tasks in one TaskGroup:

* *consume* takes messages from the :class:`~supervision.mqtt.MqttSource`, verifies
  each (registered key for the topic's gateway, signature, schema, sequence) and
  encodes it for the sink, collecting a :class:`_Pending` batch until it holds
  ``max_lines`` points, its oldest message waited ``max_delay``, or *write* is idle
  (group commit: an idle store gets what there is at once, a busy one gets bigger
  writes, so parsing the next batch always overlaps the store's work on this one);
* *write* writes one pending batch at a time, retrying with capped, jittered
  back-off while the store is unavailable, waits for the PUBACKs of any
  dead-letters, and only then acknowledges every message the batch covers — each
  exactly once;
* *audit* checks, after ``event_gap_grace``, whether event-log counters missing
  between two event batches reached the store after all; those still missing become
  ``event_gap`` security events.

A full hand-over queue (size 1) stops *consume*; the broker then stops sending
once ``receive_maximum`` messages are unacknowledged: memory stays bounded while
the store is down and nothing is lost. A message the store refuses (4xx) is
isolated by writing the batch's messages one by one; the refused ones are
dead-lettered. Dead-lettered messages are acknowledged only after the dead-letter
publication was acknowledged by the broker; one the broker refuses (an MQTT 5 PUBACK
reason code ≥ 0x80) is not acknowledged at all, so the broker keeps it and delivers
it again on the next session.

A message can only ever cost itself: whatever it holds, handling it ends in a dead
letter with a reason (any exception on the way included: ``internal_error``), a
drop that is counted, or a write. Nothing stored is overwritten with other bytes: a
batch number seen (or stored) with another digest is a ``conflict``, numbers that
went back are a ``reset`` — both dead-lettered and filed as security events.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import logging
import signal
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

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
from supervision.model import (
    Batch,
    SchemaError,
    SecurityEvent,
    event_numbers,
    parse_status,
    parse_topic,
    parse_verified,
)
from supervision.mqtt import Incoming, MqttError, MqttSource, PublishRefused
from supervision.sinks import (
    Chunk,
    Sink,
    StoreConflict,
    StoredBatch,
    StoreRejected,
    StoreUnavailable,
)

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


T = TypeVar("T")

# a dead letter of a message above max_payload carries at most this much of it
_OVERSIZE_KEPT: Final = 65_536
# suspected event-log gaps waiting for their grace period, at most
_MAX_SUSPECTS: Final = 10_000
# one warning per reason (dead letter, refusal) per this many seconds, then debug
_LOG_EVERY: Final = 60.0
# characters of a detail (or a topic) kept in a dead letter and in the log
_DETAIL_MAX: Final = 1000
# Per gateway, the sequence tracker this worker builds keeps, once the store showed it
# answers lookups (which settle anything older): the numbers most recently stored with
# their digests, and the outstanding gap ranges (docs/ingest.md, "City scale").
_REMEMBER_WITH_LOOKUPS: Final = 128
_GAP_RANGES_WITH_LOOKUPS: Final = 128
# message records (forgery, dead_letter) remembered so that a redelivery is not filed again
_FILED_MAX: Final = 10_000


@dataclass(slots=True, eq=False)
class _Entry:
    """One message of a pending write and what becomes of it.

    ``chunks`` go to the store with the write; ``key`` — ``(gateway, seq, digest,
    sealed)`` — is recorded in the sequence tracker once they are stored; a message
    with a ``dead_letter`` is acknowledged once that publication is, and not at all if
    the broker refuses it. ``rejected``: the store refused the chunks (now
    dead-lettered).
    """

    message: Incoming
    chunks: list[Chunk] = field(default_factory=list)
    key: tuple[str, int, bytes, int] | None = None
    dead_letter: asyncio.Future[None] | None = None
    rejected: bool = False
    lines: int = 0
    readings: int = 0


@dataclass(slots=True)
class _Pending:
    """Messages collected for one store write, and chunks not tied to a message."""

    started: float
    entries: list[_Entry] = field(default_factory=list)
    extra: list[Chunk] = field(default_factory=list)
    lines: int = 0
    readings: int = 0

    def add(self, e: _Entry) -> None:
        self.entries.append(e)
        self.lines += e.lines
        self.readings += e.readings


@dataclass(slots=True)
class _EventLogState:
    """The highest event-log counter known for a gateway, and that entry's time."""

    n: int
    ts_us: int


@dataclass(frozen=True, slots=True)
class _Suspect:
    """Event-log counters ``lo..hi`` not seen between two entries; checked at ``due``."""

    site: str
    gateway: str
    lo: int
    hi: int
    ts_us: int  # the entry after the gap: where the security event is filed
    due: float


class _Unknown:
    """The store cannot say what it holds (a write-only API)."""


_UNKNOWN: Final = _Unknown()


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
        event_gap_grace: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = source
        self._sink = sink
        self._keyring = keyring
        self._cfg = batch
        self._dl_topic = dead_letter_topic
        self._worker = worker
        self._own_tracker = tracker is None  # sized to the store by _restore
        self._tracker = tracker or SequenceTracker()
        self._full_memory = (self._tracker.remember, self._tracker.max_gap_ranges)
        self._gateways = keyring.gateways
        self._grace = event_gap_grace
        self._clock = clock
        self._replay_warned: set[str] = set()
        # (kind, digest) of the message records filed lately, oldest first (bounded)
        self._filed: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._resetting: set[str] = set()  # gateways whose numbering went back, until it passes
        # digests of batches accepted but not stored yet, by (gateway, seq)
        self._inflight: dict[tuple[str, int], bytes] = {}
        self._event_logs: dict[str, _EventLogState] = {}
        self._suspects: list[_Suspect] = []
        self._lookups = True  # False once the store showed it cannot answer queries
        self._logged: dict[str, float] = {}
        self._internal_logged: set[type[BaseException]] = set()
        self.dead_letters_ok = True  # False while the last dead-letter publication was refused
        # *consume* fills _pending; a full or overdue one is queued (one at most, then
        # consume waits); *write* takes the queued one, else the pending one as it is
        self._pending: _Pending | None = None
        self._extra: list[Chunk] = []  # security events for the next write
        self._ready: asyncio.Queue[_Pending | None] = asyncio.Queue(maxsize=1)
        self._work = asyncio.Event()  # set when there may be something for *write*
        self._writer_waiting = False
        self._counts: Counter[str] = Counter()
        self.ops: Any = None  # the /metrics + /health server while running (its .port)

    @property
    def counts(self) -> Counter[str]:
        """What happened, by outcome (docs/ingest.md); includes the source's QoS 0 drops."""
        dropped = self._source.qos0_dropped
        if dropped:
            self._counts["dropped.qos0"] = dropped
        return self._counts

    @property
    def tracker(self) -> SequenceTracker:
        """The sequence tracker (gaps, duplicates, replays per gateway)."""
        return self._tracker

    # -- logging and counting ----------------------------------------------------------

    def _log_limited(self, key: str, msg: str, *args: object) -> None:
        """A warning for ``key`` at most once per minute; debug in between."""
        now = self._clock()
        if now - self._logged.get(key, -_LOG_EVERY) >= _LOG_EVERY:
            self._logged[key] = now
            log.warning(msg, *args)
        else:
            log.debug(msg, *args)

    def _security(self, ev: SecurityEvent) -> Chunk:
        """Count and log a security event; the chunk that files it in the store."""
        self._counts["security"] += 1
        self._counts[f"security.{ev.kind}"] += 1
        self._log_limited(
            f"security.{ev.kind}", "security event %s from %s: %s", ev.kind, ev.gateway, ev.detail
        )
        return self._sink.encode_security(ev)

    def _message_record(self, m: Incoming, reason: str, detail: str) -> Chunk | None:
        """The ``forgery`` / ``dead_letter`` security event of a dead-lettered message, or
        None: for ``sequence_conflict`` and ``sequence_reset`` (filed as ``conflict`` and
        ``reset`` by their callers), and for a message this worker filed already (a
        redelivery: its receipt time, and so its InfluxDB point, would be new)."""
        if reason in ("sequence_conflict", "sequence_reset"):
            return None
        try:
            gateway: str | None = parse_topic(m.topic)[1]
        except SchemaError:
            gateway = None
        if gateway not in self._gateways:
            gateway = None
        ev = SecurityEvent.of_message(
            gateway, reason, detail, m.topic, m.received_ns // 1000, m.payload
        )
        key = (ev.kind, ev.digest)
        if key in self._filed:
            self._filed.move_to_end(key)
            return None
        self._filed[key] = None
        if len(self._filed) > _FILED_MAX:
            self._filed.popitem(last=False)
        return self._security(ev)

    # -- dead letters --------------------------------------------------------------------

    def _dead_entry(self, m: Incoming, reason: str, detail: str, *, quiet: bool = False) -> _Entry:
        """An entry for ``m`` whose dead letter is being published."""
        e = _Entry(m)
        self._dead_letter(e, reason, detail, quiet=quiet)
        record = self._message_record(m, reason, detail[:_DETAIL_MAX])
        if record is not None:
            e.chunks.append(record)
            e.lines += self._sink.lines_in(record)
        return e

    def _dead_letter(self, e: _Entry, reason: str, detail: str, *, quiet: bool = False) -> None:
        m = e.message
        self._counts["dead_letter"] += 1
        self._counts[f"dead_letter.{reason}"] += 1
        detail = detail[:_DETAIL_MAX]  # it may quote the message: bounded like the rest
        if not quiet:
            self._log_limited(
                f"dead_letter.{reason}",
                "dead-letter %s from %s: %s",
                reason,
                m.topic[:_DETAIL_MAX],
                detail,
            )
        doc: dict[str, Any] = {
            "v": 1,
            "reason": reason,
            "detail": detail,
            "topic": m.topic,
            "worker": self._worker,
            "received": m.received_ns // 1000,
        }
        payload = m.payload
        if m.oversize:
            payload = payload[:_OVERSIZE_KEPT]
            doc |= {"size": m.size, "truncated": True}
        doc["payload_b64"] = base64.b64encode(payload).decode("ascii")
        body = json.dumps(doc, separators=(",", ":")).encode()
        try:
            e.dead_letter = self._source.publish(self._dl_topic, body)
        except Exception as exc:  # a publication that cannot even start is a refusal
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            fut.set_exception(PublishRefused(self._source.endpoint, f"{type(exc).__name__}"))
            e.dead_letter = fut

    async def _dead_letter_delivered(self, e: _Entry) -> bool:
        """Wait for the PUBACK of ``e``'s dead letter: True if the broker took it."""
        assert e.dead_letter is not None
        try:
            # paho resends an unacknowledged publish after a reconnect: keep waiting
            while True:
                try:
                    async with asyncio.timeout(30):
                        await asyncio.shield(e.dead_letter)
                    break
                except TimeoutError:
                    log.warning("dead-letter publication still unacknowledged after 30 s")
        except (PublishRefused, MqttError) as exc:
            reason = exc.reason if isinstance(exc, PublishRefused) else "closed"
            self._counts["refused"] += 1
            self._counts[f"refused.{reason}"] += 1
            self._counts["unacknowledged"] += 1
            self.dead_letters_ok = False
            self._log_limited(
                "refused",
                "dead-letter publication for %s refused by the broker (%s): the message "
                "stays unacknowledged there and is delivered again on the next session",
                e.message.topic,
                reason,
            )
            return False
        self.dead_letters_ok = True
        return True

    # -- verification ------------------------------------------------------------------

    async def _take(self, m: Incoming) -> _Entry:
        """What becomes of one message; never raises (the per-message boundary)."""
        self._counts["received"] += 1
        try:
            return await self._accept(m)
        except BatchError as exc:
            return self._dead_entry(m, exc.kind, exc.detail)
        except SchemaError as exc:
            return self._dead_entry(m, exc.reason, exc.detail)
        except Exception as exc:  # whatever else one message did: it costs only itself
            self._counts["internal_error"] += 1
            first = type(exc) not in self._internal_logged
            self._internal_logged.add(type(exc))
            detail = f"{type(exc).__name__}: {exc}"[:_DETAIL_MAX]
            log.error(
                "message on %s could not be handled, dead-lettered: %s",
                m.topic[:_DETAIL_MAX],
                detail,
                exc_info=first,
            )
            return self._dead_entry(m, "internal_error", detail, quiet=True)

    async def _accept(self, m: Incoming) -> _Entry:
        """Verify and encode one message (raises BatchError/SchemaError for bad content).

        Order: topic; status of a registered gateway (that of any other is dropped,
        counted, unparsed); gateway registered; size; signature and body's form
        (:func:`gateway.wire.verify.verify_batch`); key registered for the topic's
        gateway; content and topic match; then the sequence verdict.
        """
        site, gateway, kind = parse_topic(m.topic)
        registered = gateway in self._gateways
        if kind == "status" and not registered:
            self._counts["dropped.status_unregistered"] += 1
            return _Entry(m)
        if not registered:
            raise SchemaError("unknown_gateway", f"no key registered for gateway {gateway}")
        if m.oversize:
            raise SchemaError(
                "too_large", f"{m.size} bytes, above mqtt.max_payload ({len(m.payload)})"
            )
        if kind == "status":
            status = parse_status(m.payload, site, gateway)
            chunk = self._sink.encode_status(status, m.received_ns)
            return _Entry(m, [chunk], lines=self._sink.lines_in(chunk))
        vb = verify_batch(m.payload, self._keyring.keys)
        if self._keyring.gateway_of[vb.kid] != gateway:
            raise SchemaError("key_mismatch", f"key {vb.kid} is not registered for {gateway}")
        # the sink checks each reading while encoding it (one pass; SchemaError too)
        batch = parse_verified(vb, site, gateway, kind, rows=False)
        chunk = self._sink.encode(batch)
        self._counts["verified"] += 1
        return await self._sequence(m, batch, chunk)

    async def _sequence(self, m: Incoming, batch: Batch, chunk: Chunk) -> _Entry:
        """The entry for a verified batch, by its sequence number (docs/ingest.md)."""
        gateway, seq, sealed = batch.gateway, batch.seq, batch.sealed_us
        assert batch.digest is not None  # parse_verified sets it
        digest = bytes.fromhex(batch.digest)  # 32 bytes: what the tracker keeps
        in_flight = self._inflight.get((gateway, seq))
        if in_flight is not None:  # a copy of a batch not stored yet
            if in_flight == digest:
                self._counts["duplicate"] += 1
                return _Entry(m)  # acknowledged after the write that stores the first copy
            return self._conflict(m, batch, "another batch with this number is being written")
        verdict = self._tracker.classify(gateway, seq, digest=digest, sealed=sealed).kind
        if verdict is SeqKind.DUPLICATE:
            # already stored: acknowledging it with this write is safe
            self._counts["duplicate"] += 1
            return _Entry(m)
        if verdict is SeqKind.CONFLICT:
            return self._conflict(m, batch, "this worker stored this number with other bytes")
        if verdict is SeqKind.RESET:
            return self._reset(m, batch)
        replayed: Chunk | None = None
        if verdict is SeqKind.GAP_FILL:
            self._counts["gap_fill"] += 1
        elif verdict is SeqKind.REPLAY:
            stored = await self._stored(gateway, seq, sealed)
            if isinstance(stored, StoredBatch):
                if stored.digest is not None and stored.digest != batch.digest:
                    return self._conflict(m, batch, "the store holds this number with other bytes")
                self._counts["replay"] += 1  # stored as it is: nothing to write but the event
                return _Entry(m, [self._replay(batch, "stored already with the same bytes")])
            if stored is None:
                self._counts["late"] += 1  # below the highest, never stored: a late delivery
            else:
                # Written anyway: a store that cannot be asked makes its points identical
                # to those stored if it is a redelivery (idempotent).
                self._counts["replay"] += 1
                replayed = self._replay(batch, "below what this worker saw; written again")
                if gateway not in self._replay_warned:
                    self._replay_warned.add(gateway)
                    log.warning("%s seq %d is below what this worker saw: replay?", gateway, seq)
        else:
            self._resetting.discard(gateway)  # new numbers: above anything seen before
        e = _Entry(
            m,
            [chunk],
            key=(gateway, seq, digest, sealed),
            lines=self._sink.lines_in(chunk),
            readings=batch.size,
        )
        if batch.kind == "event":
            e.chunks += self._check_event_log(batch)
        if replayed is not None:
            e.chunks.append(replayed)
        self._inflight[(gateway, seq)] = digest
        return e

    def _replay(self, batch: Batch, why: str) -> Chunk:
        """The ``replay`` security event of a verified batch received again (filed at its
        seal time: once, however often it comes)."""
        detail = f"{batch.gateway} seq {batch.seq} received again: {why}"
        return self._security(
            SecurityEvent(batch.site, batch.gateway, "replay", batch.seq, batch.sealed_us, detail)
        )

    def _conflict(self, m: Incoming, batch: Batch, why: str) -> _Entry:
        detail = f"{batch.gateway} seq {batch.seq}: {why} (digest {batch.digest})"
        e = self._dead_entry(m, "sequence_conflict", detail)
        ev = SecurityEvent(
            batch.site, batch.gateway, "conflict", batch.seq, batch.sealed_us, detail[:500]
        )
        e.chunks.append(self._security(ev))
        return e

    def _reset(self, m: Incoming, batch: Batch) -> _Entry:
        gw = batch.gateway
        high, high_sealed = self._tracker.high(gw), self._tracker.high_sealed(gw)
        detail = (
            f"{gw} seq {batch.seq} sealed at {batch.sealed_us} µs is at or below the highest "
            f"number {high}, sealed earlier ({high_sealed} µs): its numbering went back"
        )
        e = self._dead_entry(m, "sequence_reset", detail)
        if gw not in self._resetting:  # one security event per episode, every batch counted
            self._resetting.add(gw)
            ev = SecurityEvent(batch.site, gw, "reset", batch.seq, batch.sealed_us, detail)
            e.chunks.append(self._security(ev))
        return e

    async def _stored(self, gateway: str, seq: int, sealed: int) -> StoredBatch | _Unknown | None:
        """What the store holds as ``seq`` of ``gateway`` (waits while it is down)."""
        if not self._lookups:
            return _UNKNOWN
        found = await self._asking(lambda: self._sink.stored_batch(gateway, seq, sealed))
        return found

    async def _asking(self, query: Callable[[], Awaitable[T]]) -> T | _Unknown:
        """Run a store query, retrying while the store is unavailable; _UNKNOWN (and no
        more queries) once the store shows it cannot answer."""
        backoff = Backoff(self._cfg.retry_initial, self._cfg.retry_max)
        while True:
            try:
                return await query()
            except StoreUnavailable as exc:
                self._counts["lookup_failures"] += 1
                log.warning("store unavailable for a lookup, retrying: %s", exc)
                await asyncio.sleep(backoff.next_delay())
            except Exception as exc:  # LookupUnsupported, StoreRejected, an odd answer
                self._lookups = False
                if self._own_tracker:  # from now on the tracker alone decides
                    self._tracker.remember, self._tracker.max_gap_ranges = self._full_memory
                log.warning(
                    "the store cannot be queried (%s: %s): a batch number is checked only "
                    "against those this worker has seen",
                    type(exc).__name__,
                    exc,
                )
                return _UNKNOWN

    def _check_event_log(self, batch: Batch) -> list[Chunk]:
        """Check the event-log counters of a batch against those before it.

        A counter at or below the highest known, on an entry later than that one, is an
        ``event_reset`` (filed now); counters skipped are suspected missing and checked
        against the store after the grace period (:meth:`_audit`); an entry earlier
        than the highest is a late delivery.
        """
        out: list[Chunk] = []
        gw = batch.gateway
        st = self._event_logs.get(gw)
        for n, ts in event_numbers(batch):
            if st is None:
                st = self._event_logs[gw] = _EventLogState(n, ts)
                continue
            if n > st.n:
                if n > st.n + 1:
                    self._suspect(batch.site, gw, st.n + 1, n - 1, ts)
                st.n, st.ts_us = n, ts
            elif ts > st.ts_us:
                detail = (
                    f"{gw} event-log counter {n} follows {st.n} (entry at {ts} µs, after "
                    f"{st.ts_us} µs): the event log numbers again from lower down"
                )
                out.append(
                    self._security(SecurityEvent(batch.site, gw, "event_reset", n, ts, detail))
                )
                st.n, st.ts_us = n, ts
            # else: an entry older than the highest, delivered late
        return out

    def _suspect(self, site: str, gateway: str, lo: int, hi: int, ts_us: int) -> None:
        if len(self._suspects) >= _MAX_SUSPECTS:
            self._suspects.pop(0)
            self._counts["event_gap_unchecked"] += 1
        self._suspects.append(_Suspect(site, gateway, lo, hi, ts_us, self._clock() + self._grace))

    async def _audit(self) -> None:
        """File the event-log counters still missing once their grace period is over."""
        while True:
            await asyncio.sleep(max(0.05, min(self._grace / 4, 5.0)))
            now = self._clock()
            due = [s for s in self._suspects if s.due <= now]
            if not due:
                continue
            self._suspects = [s for s in self._suspects if s.due > now]
            for s in due:
                found: set[int] | _Unknown = _UNKNOWN
                if self._lookups:
                    found = await self._asking(
                        functools.partial(self._sink.event_numbers, s.gateway, s.lo, s.hi)
                    )
                stored: set[int] = set() if isinstance(found, _Unknown) else found
                for lo, hi in _missing(s.lo, s.hi, stored):
                    span = str(lo) if lo == hi else f"{lo}..{hi}"
                    detail = f"{s.gateway} event-log counters {span} never arrived"
                    if isinstance(found, _Unknown):
                        detail += " (the store could not be asked)"
                    ev = SecurityEvent(s.site, s.gateway, "event_gap", lo, s.ts_us, detail)
                    self._extra.append(self._security(ev))
                    self._work.set()

    # -- the tasks -----------------------------------------------------------------------

    async def _restore(self) -> None:
        """Take what the store holds as the starting point: the highest batch number of
        each gateway (numbers at or below it are then looked up before being written)
        and the highest event-log counter."""
        highs = await self._asking(self._sink.highs)
        if isinstance(highs, _Unknown):
            return
        if self._own_tracker:  # the store settles what the tracker no longer holds
            self._tracker.remember = _REMEMBER_WITH_LOOKUPS
            self._tracker.max_gap_ranges = _GAP_RANGES_WITH_LOOKUPS
        for h in highs:
            if h.seq is not None:
                self._tracker.restore(h.gateway, h.seq, h.sealed_us)
            if h.event_n is not None and h.event_ts_us is not None:
                self._event_logs[h.gateway] = _EventLogState(h.event_n, h.event_ts_us)
        if highs:
            log.info("ingest: resuming after what the store holds for %d gateways", len(highs))

    async def _consume(self) -> None:
        loop = asyncio.get_running_loop()
        max_lines, max_delay = self._cfg.max_lines, self._cfg.max_delay
        await self._restore()
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
            entry = await self._take(m)
            # *write* may have taken the pending batch while this task waited
            p = self._pending
            if p is None:
                p = self._pending = _Pending(loop.time())
            p.add(entry)
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
        commit), else the first of them once there is one; with any security events
        filed meanwhile."""
        while True:
            p: _Pending | None = None
            if not self._ready.empty():
                p = self._ready.get_nowait()
                if p is None:
                    return None
            elif self._pending is not None and self._pending.entries:
                p, self._pending = self._pending, None
            elif self._extra:
                p = _Pending(0.0)
            if p is not None:
                p.extra, self._extra = p.extra + self._extra, []
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
                if self._extra:  # filed after the last batch: written before leaving
                    await self._store(_Pending(0.0, extra=self._extra))
                return
            await self._store(p)
            acked = 0
            for e in p.entries:
                if e.key is not None:
                    gw, seq, digest, sealed = e.key
                    if self._inflight.get((gw, seq)) == digest:
                        del self._inflight[gw, seq]
                    if not e.rejected:
                        self._tracker.record(gw, seq, digest=digest, sealed=sealed)
                if e.dead_letter is not None and not await self._dead_letter_delivered(e):
                    self._source.forgo(e.message)
                else:
                    self._source.ack(e.message)
                    acked += 1
            self._counts["acked"] += acked
            self._counts["readings_written"] += sum(e.readings for e in p.entries if not e.rejected)
            self._counts["writes"] += 1

    async def _store(self, p: _Pending) -> None:
        """Write ``p``; an entry the store refused is marked and dead-lettered."""
        chunks = [c for e in p.entries if not e.rejected for c in e.chunks] + p.extra
        if not chunks:
            return
        try:
            await self._retrying(chunks)
            return
        except StoreRejected as exc:
            log.warning("store refused a batch (%s); isolating the messages at fault", exc)
        for e in p.entries:
            if not e.chunks:
                continue
            try:
                await self._retrying(e.chunks)
            except StoreRejected as one:
                self._counts["store_rejected"] += 1
                e.rejected = True
                if e.dead_letter is not None:
                    log.error("store refused the record of a dead-lettered message: %s", one)
                elif isinstance(one, StoreConflict) and e.key is not None:
                    m, (gw, seq, _, sealed) = e.message, e.key
                    detail = f"{gw} seq {seq}: {one}"
                    self._dead_letter(e, "sequence_conflict", detail)
                    site = parse_topic(m.topic)[0]
                    ev = SecurityEvent(site, gw, "conflict", seq, sealed, detail[:500])
                    await self._store_quietly([self._security(ev)])
                else:
                    self._dead_letter(e, "store_rejected", str(one))
                    record = self._message_record(e.message, "store_rejected", str(one))
                    if record is not None:
                        await self._store_quietly([record])
        for chunk in p.extra:
            await self._store_quietly([chunk])

    async def _store_quietly(self, chunks: list[Chunk]) -> None:
        try:
            await self._retrying(chunks)
        except StoreRejected as exc:
            log.error("store refused a security event record: %s", exc)

    async def _retrying(self, chunks: list[Chunk]) -> None:
        """Write until the store accepts (returns) or refuses the content (StoreRejected).

        Anything but StoreUnavailable that the write raises counts as a refusal of the
        content (never a dead worker); the messages at fault are then isolated."""
        backoff = Backoff(self._cfg.retry_initial, self._cfg.retry_max)
        down_since: float | None = None
        while True:
            try:
                await self._sink.write(chunks)
            except StoreUnavailable as exc:
                self._counts["write_failures"] += 1
                if down_since is None:
                    down_since = time.monotonic()
                    log.error("store unavailable, holding messages and retrying: %s", exc)
                else:
                    log.debug("store still unavailable: %s", exc)
                await asyncio.sleep(backoff.next_delay())
                continue
            except StoreRejected:
                raise
            except Exception as exc:
                log.error("store write failed unexpectedly (%s: %s)", type(exc).__name__, exc)
                raise StoreRejected(self._sink.name, f"{type(exc).__name__}: {exc}") from exc
            if down_since is not None:
                log.warning("store recovered after %.1f s", time.monotonic() - down_since)
            return

    async def _report(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            log.info("ingest stats: %s", json.dumps(dict(self.counts), sort_keys=True))

    @property
    def connected(self) -> asyncio.Event:
        """Set while the MQTT connection is up and the broker confirmed the subscription."""
        return self._source.connected

    def stop(self) -> None:
        """Finish: write and acknowledge what was received, then make :meth:`run` return."""
        self._source.close_input()

    async def run(self, stats_interval: float = 0.0) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._write(), name="ingest-write")
            audit = tg.create_task(self._audit(), name="ingest-audit")
            reporter = None
            if stats_interval > 0:
                reporter = tg.create_task(self._report(stats_interval), name="ingest-stats")
            await self._consume()
            audit.cancel()
            if reporter is not None:
                reporter.cancel()


def _missing(lo: int, hi: int, found: set[int]) -> list[tuple[int, int]]:
    """The ranges of ``lo..hi`` not in ``found`` (linear in ``found``)."""
    out: list[tuple[int, int]] = []
    nxt = lo
    for n in sorted(x for x in found if lo <= x <= hi):
        if n > nxt:
            out.append((nxt, n - 1))
        nxt = n + 1
    if nxt <= hi:
        out.append((nxt, hi))
    return out


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
                event_gap_grace=cfg.event_gap_grace,
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
        IngestCollector(
            lambda: ingest.counts, tracker=ingest.tracker, gateways=lambda: keyring.gateways
        )
    )

    def health() -> dict[str, object]:
        up = ingest.connected.is_set()
        return {
            "status": "ok" if up and ingest.dead_letters_ok else "degraded",
            "worker": cfg.mqtt.client_id,
            "broker_connected": up,
            "dead_letters": "ok" if ingest.dead_letters_ok else "refused",
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
