"""Validation of received batch content (docs/wire.md) into plain tuples for the sinks.

The signature, the form of the body and its JSON parse belong to
:func:`gateway.wire.verify.verify_batch`; :func:`parse_verified` then checks the content
(readings, alarms, events) against gateway/wire/schema/batch.schema.json by hand — far
faster than a JSON Schema validator, and held equal to it by
tests/unit/test_ingest_schema.py — and against the topic it arrived on. Anything that
does not follow the contract raises :class:`SchemaError` with a short reason (the
dead-letter reason). Parsing is bounded (:func:`gateway.wire.verify.loads_bounded`)
and every integer of the contract is range-checked (``ts``, ``sealed``, ``since``,
``shelved_until`` within :data:`~gateway.wire.verify.MAX_TS_US`; ``seq`` and ``n``
within :data:`~gateway.wire.verify.MAX_SEQ`); a number no float can hold is a
``schema`` error too, so nothing a message holds raises anything else here.

Readings repeat their identifiers and flags on every poll: a :class:`ReadingChecker`
remembers those it checked (bounded) so that each is checked once. It belongs to the
sink that uses it; :func:`check_reading` checks in full every time.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

from gateway.wire.encoding import CONTENT_KEY
from gateway.wire.verify import MAX_SEQ, MAX_TS_US, VerifiedBatch, loads_bounded

__all__ = [
    "FORGERY_REASONS",
    "KINDS",
    "SECURITY_KINDS",
    "Batch",
    "Item",
    "ReadingChecker",
    "Row",
    "SchemaError",
    "SecurityEvent",
    "Status",
    "body_digest",
    "check_reading",
    "event_numbers",
    "parse_batch",
    "parse_document",
    "parse_status",
    "parse_topic",
    "parse_verified",
    "rows_of",
]

KINDS: Final = ("data", "alarm", "event", "status")
QUALITIES: Final = frozenset({"good", "uncertain", "bad"})
VERDICTS: Final = frozenset({"pass", "conditional_pass", "conditional_fail", "fail"})
REASONS: Final = frozenset(
    {
        "no_communication", "device_failure", "sensor_failure", "out_of_service",
        "config_error", "last_usable_value", "units_exceeded", "calibration_expired",
        "not_stable", "invalid_value", "out_of_calibrated_range", "clock_not_synchronised",
    }
)  # fmt: skip
READING_KEYS: Final = frozenset(
    {"ts", "device", "point", "value", "raw", "unit", "quality", "reason", "flags", "U", "k",
     "instrument", "certificate", "verdict", "server_ts"}
)  # fmt: skip
ALARM_STATES: Final = frozenset(
    {"normal", "active_unacknowledged", "active_acknowledged", "returned_unacknowledged"}
)
SEVERITIES: Final = frozenset({"low", "medium", "high", "critical"})
# Keys of alarm/event items that identify what the item is about; they become tags
# (``type`` of an event: a few dozen audit-trail types, so a bounded tag).
ITEM_TAG_KEYS: Final = ("device", "point", "instrument", "alarm", "kind", "severity", "type")
_BODY_KEYS: Final = frozenset({"v", "type", "gateway", "site", "seq", "sealed"})
_FLAG: Final = re.compile(r"^[a-z0-9_]+(:[A-Za-z0-9_.-]+)?$")
_HEX64: Final = re.compile(r"^[0-9a-f]{64}$")
# identifiers and flags a ReadingChecker remembers (they repeat on every poll)
KNOWN_MAX: Final = 100_000
_ALARM_TYPES: Final[dict[str, tuple[type, ...]]] = {
    "point": (str, type(None)),
    "rule": (str,),
    "event": (str,),
    "active": (bool,),
    "acknowledged": (bool,),
    "shelved": (bool,),
    "shelved_until": (int,),
    "value": (int, float, bool, str, type(None)),
    "limit": (int, float, type(None)),
    "message": (str, type(None)),
    "user": (str,),
}

Scalar = float | bool | str | None


class SchemaError(Exception):
    """A message does not follow the wire contract; ``reason`` is a short stable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Row(NamedTuple):
    """One reading of a data batch, validated; numbers are floats, absent keys None."""

    ts_us: int
    device: str
    point: str
    value: Scalar
    quality: str
    raw: Scalar
    unit: str | None
    reason: str | None
    flags: tuple[str, ...]
    uncertainty: float | None
    coverage: float | None
    instrument: str | None
    certificate: str | None
    verdict: str | None
    server_ts_us: int | None = None
    """An OPC UA server's timestamp of the value (``server_ts``), when the reading has one."""


class Item(NamedTuple):
    """One alarm or event entry: its time, identifying tags and remaining scalar fields."""

    ts_us: int
    tags: tuple[tuple[str, str], ...]
    fields: tuple[tuple[str, Scalar], ...]


def _new_row(values: tuple[Any, ...]) -> Row:
    # tuple.__new__ skips the NamedTuple's generated __new__ (a measurable share per reading)
    return tuple.__new__(Row, values)


@dataclass(frozen=True, slots=True)
class Batch:
    """A verified, parsed batch. ``rows`` for data batches, ``items`` for alarm/event.

    A data batch parsed with ``rows=False`` (:func:`parse_document`) has no ``rows``
    but ``readings``: the reading objects as received, *not yet checked* — whoever
    consumes them checks each one as :func:`check_reading` does (:func:`rows_of`, or
    the line protocol's single pass). Exactly one of ``rows`` and ``readings`` is set.
    """

    kind: str
    site: str
    gateway: str
    seq: int
    sealed_us: int
    rows: list[Row]
    items: list[Item]
    readings: list[Any] = field(default_factory=list)
    digest: str | None = None
    """SHA-256 (hex) of the body bytes, kept with the batch record: the same number with
    another digest is a conflict (docs/ingest.md). None for a body given as a dict."""

    @property
    def size(self) -> int:
        return len(self.rows) + len(self.items) + len(self.readings)


# the dead-letter reasons that say a message is not what it claims to be (a forgery):
# no signature, a signature that does not verify, a key unknown or registered for
# another gateway, content naming another gateway or kind than its topic
FORGERY_REASONS: Final = frozenset(
    {"unsigned", "bad_signature", "unknown_key", "bad_algorithm", "key_mismatch",
     "topic_mismatch"}
)  # fmt: skip
# kinds of a security event (docs/ingest.md, "Security events")
SECURITY_KINDS: Final = (
    "conflict", "reset", "event_gap", "event_reset", "replay", "forgery", "dead_letter"
)  # fmt: skip
# characters of a detail / topic kept in a security event
_SECURITY_DETAIL_MAX: Final = 500
_SECURITY_TOPIC_MAX: Final = 300
_CONTROL: Final = {c: "?" for c in [*range(32), 127]}


def _printable(s: str, limit: int) -> str:
    """``s`` cut to ``limit`` characters, control characters replaced (it may be a
    forger's text on its way into a store and a web page)."""
    return s[:limit].translate(_CONTROL)


UNREGISTERED: Final = "-"
"""The site and gateway a security record is filed under when the message's topic
names no registered gateway (docs/ingest.md, Security events)."""


@dataclass(frozen=True, slots=True)
class SecurityEvent:
    """Something a receiver saw that a correct gateway never does, as the store files
    it: one record type, one ``security`` table / measurement (docs/ingest.md).

    ``kind`` (:data:`SECURITY_KINDS`):

    * ``conflict`` (a batch number seen with other bytes), ``reset`` (batch numbers
      went back), ``event_gap`` (event-log counters missing), ``event_reset``
      (event-log counters went back), ``replay`` (a batch stored already, received
      again): about a gateway's numbering. ``seq`` is the batch number, or for the
      event-log kinds the first counter concerned; ``ts_us`` the time it is filed
      under (the batch's ``sealed`` or the entry's ``ts``), so a redelivery files it
      once; ``digest`` is empty.
    * ``forgery`` (dead-lettered for a reason of :data:`FORGERY_REASONS`) and
      ``dead_letter`` (any other dead letter but ``sequence_conflict`` and
      ``sequence_reset``, which are ``conflict`` and ``reset``): about one message
      that could not be trusted. ``seq`` is 0, ``ts_us`` its receipt, ``digest`` the
      SHA-256 (hex) of its payload — the record's identity, so a redelivered message
      is one record — and ``topic`` the topic it came on.

    ``reason`` is the dead-letter reason when the message was dead-lettered (else
    empty). ``site`` and ``gateway`` are those of a verified batch; for a message
    not verified, ``site`` is ``-`` and ``gateway`` the topic's gateway if it is
    registered, else ``-`` (so forged topics cannot make new series).
    """

    site: str
    gateway: str
    kind: str
    seq: int
    ts_us: int
    detail: str
    reason: str = ""
    topic: str = ""
    digest: str = ""

    @classmethod
    def of_message(
        cls, gateway: str | None, reason: str, detail: str, topic: str, received_us: int,
        payload: bytes,
    ) -> SecurityEvent:  # fmt: skip
        """The ``forgery`` / ``dead_letter`` record of a dead-lettered message;
        ``gateway`` None when the topic names no registered gateway."""
        kind = "forgery" if reason in FORGERY_REASONS else "dead_letter"
        return cls(
            UNREGISTERED, gateway or UNREGISTERED, kind, 0, received_us,
            _printable(detail, _SECURITY_DETAIL_MAX), reason,
            _printable(topic, _SECURITY_TOPIC_MAX), hashlib.sha256(payload).hexdigest(),
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Status:
    """A gateway's retained birth / last-will message (unsigned)."""

    site: str
    gateway: str
    state: str
    since_us: int | None
    version: str | None


def parse_topic(topic: str) -> tuple[str, str, str]:
    """``{prefix}/v1/{site}/{gateway}/{kind}`` → ``(site, gateway, kind)``.

    The prefix may itself contain slashes; raises :class:`SchemaError` ``bad_topic``.
    """
    parts = topic.rsplit("/", 4)
    if len(parts) != 5 or parts[1] != "v1" or parts[4] not in KINDS:
        raise SchemaError("bad_topic", f"topic {topic!r} is not {{prefix}}/v1/site/gateway/kind")
    return parts[2], parts[3], parts[4]


def _loads(body: bytes) -> Any:
    try:
        return loads_bounded(body)
    except ValueError as exc:
        raise SchemaError("schema", f"body is not JSON ({exc})") from None


def _float(v: int, what: str) -> float:
    try:
        return float(v)
    except OverflowError:
        raise SchemaError("schema", f"{what} is a number out of range") from None


def _is_id(v: object) -> bool:
    return type(v) is str and 0 < len(v) <= 256 and v.isprintable()


def _scalar(v: object, what: str) -> Scalar:
    # bool is an int subclass; keep it a bool, turn every other number into a float
    t = type(v)
    if t is float or t is str or t is bool or v is None:
        return v  # type: ignore[return-value]  # narrowed by the type checks above
    if t is int:
        return _float(v, what)  # type: ignore[arg-type]  # t is int
    raise SchemaError("schema", f"{what} must be a number, boolean, string or null")


def _check_ids(ids: tuple[Any, ...], i: int) -> None:
    device, point, unit, instrument, certificate = ids
    if not _is_id(device) or not _is_id(point):
        raise SchemaError("schema", f"readings[{i}] needs printable string device and point")
    for key, v in (("unit", unit), ("instrument", instrument), ("certificate", certificate)):
        if v is not None and not _is_id(v):
            raise SchemaError("schema", f"readings[{i}].{key} must be a non-empty printable string")


def _check_flags(flags: object, i: int, known: set[str]) -> tuple[str, ...]:
    if type(flags) is not list:
        raise SchemaError("schema", f"readings[{i}].flags must be an array")
    for f in flags:
        if type(f) is not str or (f not in known and not _FLAG.match(f)):
            raise SchemaError("schema", f"readings[{i}].flags has a malformed flag {f!r}")
    if len(flags) > 1 and len(set(flags)) != len(flags):
        raise SchemaError("schema", f"readings[{i}].flags repeats a flag")
    return tuple(flags)


class ReadingChecker:
    """Checks readings against ``$defs/reading`` of gateway/wire/schema/batch.schema.json,
    remembering (at most ``max_known`` of each) the identifier tuples and flags it has
    checked, so a repeat is not checked again. One per sink; not shared."""

    __slots__ = ("_flags", "_ids", "_max")

    def __init__(self, max_known: int = KNOWN_MAX) -> None:
        self._max = max_known
        self._ids: set[tuple[Any, ...]] = set()
        self._flags: set[str] = set()

    def check(self, r: object, i: int) -> Row:
        """``readings[i]`` checked; raises :class:`SchemaError`. Each check is inline."""
        if type(r) is not dict:
            raise SchemaError("schema", f"readings[{i}] is not an object")
        if not r.keys() <= READING_KEYS:
            extra = ", ".join(sorted(map(str, r.keys() - READING_KEYS)))
            raise SchemaError("schema", f"readings[{i}] has unknown keys: {extra}")
        get = r.get
        device, point, unit = get("device"), get("point"), get("unit")
        instrument, certificate = get("instrument"), get("certificate")
        ids = (device, point, unit, instrument, certificate)
        known_ids = self._ids
        try:
            known = ids in known_ids
        except TypeError:  # a list or object where a string belongs
            known = False
        if not known:
            _check_ids(ids, i)
            if len(known_ids) >= self._max:
                known_ids.clear()  # a bound, not an LRU: ids repeat on every poll
            if self._max:
                known_ids.add(ids)
        ts = get("ts")
        if type(ts) is not int or not 0 < ts <= MAX_TS_US:
            raise SchemaError(
                "schema", f"readings[{i}].ts must be a positive integer (µs) ≤ {MAX_TS_US}"
            )
        quality = get("quality")
        if type(quality) is not str or quality not in QUALITIES:
            raise SchemaError(
                "schema", f"readings[{i}].quality {quality!r} is not good/uncertain/bad"
            )
        if "value" not in r:
            raise SchemaError("schema", f"readings[{i}] has no value")
        # only value may be null; an unknown optional key is left out, not sent as null
        if None in r.values() and any(v is None for k, v in r.items() if k != "value"):
            raise SchemaError("schema", f"readings[{i}] has a null other than value")
        value = r["value"]
        t = type(value)
        if t is int:
            value = _float(value, f"readings[{i}].value")
        elif not (t is float or t is str or t is bool or value is None):
            raise SchemaError(
                "schema", f"readings[{i}].value must be a number, boolean, string or null"
            )
        raw = get("raw")
        t = type(raw)
        if t is int:
            raw = _float(raw, f"readings[{i}].raw")  # type: ignore[arg-type]  # t is int
        elif not (t is float or t is str or t is bool or raw is None):
            raise SchemaError("schema", f"readings[{i}].raw must be a number, boolean or string")
        flags = get("flags")
        reason = get("reason")
        if reason is not None and (type(reason) is not str or reason not in REASONS):
            raise SchemaError("schema", f"readings[{i}].reason {reason!r} is unknown")
        verdict = get("verdict")
        if verdict is not None and (type(verdict) is not str or verdict not in VERDICTS):
            raise SchemaError("schema", f"readings[{i}].verdict {verdict!r} is unknown")
        server_ts = get("server_ts")
        if server_ts is not None and (
            type(server_ts) is not int or not 0 <= server_ts <= MAX_TS_US
        ):
            raise SchemaError(
                "schema", f"readings[{i}].server_ts must be an integer in 0..{MAX_TS_US} (µs)"
            )
        u = get("U")
        k = get("k")
        if u is not None:
            t = type(u)
            if not (t is float or t is int) or u < 0 or k is None:
                raise SchemaError("schema", f"readings[{i}].U must be a number ≥ 0, with k")
            u = _float(u, f"readings[{i}].U")
        if k is not None:
            t = type(k)
            if not (t is float or t is int) or k <= 0:
                raise SchemaError("schema", f"readings[{i}].k must be a positive number")
            k = _float(k, f"readings[{i}].k")
        if flags is None or flags == []:
            checked_flags: tuple[str, ...] = ()
        else:
            checked_flags = _check_flags(flags, i, self._flags)
            if len(self._flags) < self._max:
                self._flags.update(checked_flags)
        return _new_row(
            (
                ts,
                device,
                point,
                value,
                quality,
                raw,
                unit,
                reason,
                checked_flags,
                u,
                k,
                instrument,
                certificate,
                verdict,
                server_ts,
            )
        )


def check_reading(r: object, i: int) -> Row:
    """``readings[i]``, checked in full against ``$defs/reading`` of
    gateway/wire/schema/batch.schema.json (a :class:`ReadingChecker` that remembers
    nothing). Raises :class:`SchemaError`."""
    return ReadingChecker(0).check(r, i)


def _member(v: object, allowed: frozenset[str]) -> bool:
    return type(v) is str and v in allowed


def _check_alarm(e: dict[str, Any], where: str) -> None:
    """``$defs/alarm``: the keys of gateway/metrology/alarms.py records, typed."""
    for key in ("alarm", "device"):
        if type(e.get(key)) is not str:
            raise SchemaError("schema", f"{where}.{key} must be a string")
    if not _member(e.get("state"), ALARM_STATES):
        raise SchemaError("schema", f"{where}.state {e.get('state')!r} is unknown")
    if "previous" in e and not _member(e["previous"], ALARM_STATES):
        raise SchemaError("schema", f"{where}.previous {e['previous']!r} is unknown")
    if not _member(e.get("severity"), SEVERITIES):
        raise SchemaError("schema", f"{where}.severity {e.get('severity')!r} is unknown")
    for key, types in _ALARM_TYPES.items():
        if key in e and type(e[key]) not in types:
            raise SchemaError("schema", f"{where}.{key} has the wrong type")
    if "shelved_until" in e and not 0 <= e["shelved_until"] <= MAX_TS_US:
        raise SchemaError("schema", f"{where}.shelved_until must be in 0..{MAX_TS_US}")


def _check_event(e: dict[str, Any], where: str) -> None:
    """``$defs/event``: an audit-trail entry as the gateway's event log stores it."""
    n = e.get("n")
    if type(n) is not int or not 1 <= n <= MAX_SEQ:
        raise SchemaError("schema", f"{where}.n must be an integer in 1..{MAX_SEQ}")
    for key in ("type", "source", "software"):
        if type(e.get(key)) is not str:
            raise SchemaError("schema", f"{where}.{key} must be a string")
    if type(e.get("data")) is not dict:
        raise SchemaError("schema", f"{where}.data must be an object")
    prev = e.get("prev")
    if type(prev) is not str or not _HEX64.match(prev):
        raise SchemaError("schema", f"{where}.prev must be 64 hex digits")
    if type(e.get("sig")) not in (str, dict):
        raise SchemaError("schema", f"{where}.sig must be a string or an object")


def _item(e: object, where: str, kind: str) -> Item:
    if type(e) is not dict:
        raise SchemaError("schema", f"{where} is not an object")
    ts = e.get("ts")
    if type(ts) is not int or not 0 < ts <= MAX_TS_US:
        raise SchemaError("schema", f"{where}.ts must be a positive integer (µs) ≤ {MAX_TS_US}")
    if kind == "alarm":
        _check_alarm(e, where)
    else:
        _check_event(e, where)
    tags: dict[str, str] = {}
    fields: list[tuple[str, Scalar]] = []
    for key, v in e.items():
        if key == "ts":
            continue
        if not _is_id(key):
            raise SchemaError("schema", f"{where} has a key that is not a printable string")
        if key in ITEM_TAG_KEYS and _is_id(v):
            tags[key] = v
        elif isinstance(v, list | dict):
            # nested content stays readable as compact JSON text
            fields.append((key, json.dumps(v, separators=(",", ":"), ensure_ascii=False)))
        elif v is not None:
            fields.append((key, _scalar(v, f"{where}.{key}")))
    data = e.get("data")
    if kind == "event" and isinstance(data, dict):
        # an event about a device or instrument (calibration_*) is found by that tag
        for key in ("device", "instrument"):
            if key not in tags and _is_id(data.get(key)):
                tags[key] = data[key]
    if not fields:
        fields.append(("present", True))  # a point needs at least one field
    return Item(ts, tuple(sorted(tags.items())), tuple(fields))


def parse_batch(body: bytes, site: str, gateway: str, kind: str) -> Batch:
    """Parse and validate a batch body received on ``…/{site}/{gateway}/{kind}``.

    For bodies whose signature was checked elsewhere; the ingest uses
    :func:`parse_verified` on what :func:`gateway.wire.verify.verify_batch` returned, so
    the JSON is parsed once. Raises :class:`SchemaError`.
    """
    doc = _loads(body)
    if type(doc) is not dict:
        raise SchemaError("schema", "body is not a JSON object")
    if doc.get("v") != 1:
        raise SchemaError("schema", f"unsupported schema version {doc.get('v')!r}")
    return parse_document(doc, site, gateway, kind, digest=body_digest(body))


def body_digest(body: bytes) -> str:
    """The digest a batch record keeps: SHA-256 of the body bytes, hex."""
    return hashlib.sha256(body).hexdigest()


def parse_verified(
    vb: VerifiedBatch, site: str, gateway: str, kind: str, *, rows: bool = True
) -> Batch:
    """The content of a verified batch that arrived on ``…/{site}/{gateway}/{kind}``,
    with the digest of its body bytes. ``rows`` as for :func:`parse_document`.
    """
    return parse_document(
        vb.body, site, gateway, kind, rows=rows, digest=body_digest(vb.body_bytes)
    )


def parse_document(
    doc: dict[str, Any],
    site: str,
    gateway: str,
    kind: str,
    *,
    rows: bool = True,
    digest: str | None = None,
) -> Batch:
    """Validate a decoded body against the batch JSON Schema and the topic it came on.

    The body's ``gateway``, ``site`` and ``type`` must match the topic
    (``topic_mismatch``): a batch cannot be replayed under another gateway's name.
    Everything gateway/wire/schema/batch.schema.json rejects is rejected here (``schema``);
    a unit test holds the two together. Raises :class:`SchemaError`.

    ``rows=False`` leaves the readings of a data batch unchecked in
    :attr:`Batch.readings` for a consumer that checks each while turning it into its
    own form (the ingest's sinks: their ``encode`` raises the :class:`SchemaError`);
    everything else is checked here either way.
    """
    if doc.get("type") != kind:
        raise SchemaError("topic_mismatch", f"type {doc.get('type')!r} on a {kind} topic")
    if doc.get("gateway") != gateway or doc.get("site") != site:
        raise SchemaError(
            "topic_mismatch",
            f"body names {doc.get('site')!r}/{doc.get('gateway')!r}, topic {site}/{gateway}",
        )
    seq = doc.get("seq")
    sealed = doc.get("sealed")
    if type(seq) is not int or not 1 <= seq <= MAX_SEQ:
        raise SchemaError("schema", f"seq must be an integer in 1..{MAX_SEQ}")
    if type(sealed) is not int or not 0 <= sealed <= MAX_TS_US:
        raise SchemaError("schema", f"sealed must be an integer in 0..{MAX_TS_US}")
    key = CONTENT_KEY.get(kind)
    if key is None:
        raise SchemaError("schema", f"unknown batch type {kind!r}")
    if not doc.keys() <= _BODY_KEYS | {key}:
        extra = ", ".join(sorted(map(str, doc.keys() - _BODY_KEYS - {key})))
        raise SchemaError("schema", f"unknown or misplaced keys in a {kind} batch: {extra}")
    entries = doc.get(key)
    if type(entries) is not list or not entries:
        raise SchemaError("schema", f"{key} must be a non-empty array")
    if kind != "data":
        items = [_item(e, f"{key}[{i}]", kind) for i, e in enumerate(entries)]
        return Batch(kind, site, gateway, seq, sealed, [], items, digest=digest)
    if not rows:
        return Batch(kind, site, gateway, seq, sealed, [], [], entries, digest)
    checker = ReadingChecker()
    checked = [checker.check(r, i) for i, r in enumerate(entries)]
    return Batch(kind, site, gateway, seq, sealed, checked, [], digest=digest)


def rows_of(batch: Batch, checker: ReadingChecker | None = None) -> list[Row]:
    """The checked rows of a batch, checking ``readings`` left by ``rows=False`` now
    (with ``checker``, e.g. the sink's, or in full).

    Raises :class:`SchemaError` for a reading that does not follow the contract.
    """
    if batch.readings:
        check = (checker or ReadingChecker()).check
        return [check(r, i) for i, r in enumerate(batch.readings)]
    return batch.rows


def event_numbers(batch: Batch) -> list[tuple[int, int]]:
    """``(n, ts)`` of each entry of an event batch, in order (``n`` as an integer)."""
    out = []
    for it in batch.items:
        n = dict(it.fields).get("n")
        if isinstance(n, float):
            out.append((int(n), it.ts_us))
    return out


def parse_status(payload: bytes, site: str, gateway: str) -> Status:
    """Parse a retained status message (birth or last will). Raises :class:`SchemaError`."""
    doc = _loads(payload)
    if type(doc) is not dict or doc.get("v") != 1:
        raise SchemaError("schema", "status is not a version 1 object")
    state = doc.get("state")
    if state not in ("online", "offline"):
        raise SchemaError("schema", f"status state {state!r} is not online/offline")
    if doc.get("gateway") != gateway or doc.get("site") != site:
        raise SchemaError("topic_mismatch", "status names another site/gateway than its topic")
    since = doc.get("since")
    if since is not None and (type(since) is not int or not 0 <= since <= MAX_TS_US):
        raise SchemaError("schema", f"status since must be an integer in 0..{MAX_TS_US} (µs)")
    software = doc.get("software")
    version = software.get("version") if isinstance(software, dict) else None
    return Status(site, gateway, state, since, version if _is_id(version) else None)
