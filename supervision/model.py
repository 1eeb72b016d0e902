"""Parsing and validation of received batches (docs/wire.md), in one pass over the JSON.

:func:`parse_batch` turns a verified body into a :class:`Batch` whose items are
plain tuples ready for any sink; anything that does not follow the wire contract
raises :class:`SchemaError` with a short reason, so the message can be dead-lettered.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

__all__ = [
    "KINDS",
    "Batch",
    "Item",
    "Row",
    "SchemaError",
    "Status",
    "parse_batch",
    "parse_status",
    "parse_topic",
]

KINDS: Final = ("data", "alarm", "event", "status")
QUALITIES: Final = frozenset({"good", "uncertain", "bad"})
VERDICTS: Final = frozenset({"pass", "conditional_pass", "conditional_fail", "fail"})
# Keys of alarm/event items that identify what the item is about; they become tags.
ITEM_TAG_KEYS: Final = ("device", "point", "instrument", "alarm", "kind", "severity")

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


class Item(NamedTuple):
    """One alarm or event entry: its time, identifying tags and remaining scalar fields."""

    ts_us: int
    tags: tuple[tuple[str, str], ...]
    fields: tuple[tuple[str, Scalar], ...]


@dataclass(frozen=True, slots=True)
class Batch:
    """A verified, parsed batch. ``rows`` for data batches, ``items`` for alarm/event."""

    kind: str
    site: str
    gateway: str
    seq: int
    sealed_us: int
    rows: list[Row]
    items: list[Item]

    @property
    def size(self) -> int:
        return len(self.rows) + len(self.items)


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


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _loads(body: bytes) -> Any:
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SchemaError("bad_json", str(exc)) from None


def _is_id(v: object) -> bool:
    return isinstance(v, str) and 0 < len(v) <= 256 and v.isprintable()


def _int(v: object, what: str) -> int:
    if type(v) is not int or v < 0:
        raise SchemaError("schema", f"{what} must be a non-negative integer, got {v!r}")
    return v


def _scalar(v: object, what: str) -> Scalar:
    # bool is an int subclass; keep it a bool, turn every other number into a float
    t = type(v)
    if t is float or t is str or t is bool or v is None:
        return v  # type: ignore[return-value]  # narrowed by the type checks above
    if t is int:
        return float(v)  # type: ignore[arg-type]  # t is int
    raise SchemaError("schema", f"{what} must be a number, boolean, string or null")


def _opt_number(v: object, what: str) -> float | None:
    if v is None:
        return None
    t = type(v)
    if t is float or t is int:
        return float(v)  # type: ignore[arg-type]  # t is int or float
    raise SchemaError("schema", f"{what} must be a number")


def _opt_id(v: object, what: str) -> str | None:
    if v is None:
        return None
    if not _is_id(v):
        raise SchemaError("schema", f"{what} must be a non-empty printable string")
    return v  # type: ignore[return-value]  # _is_id checked it is a str


def _row(r: object, i: int) -> Row:
    if type(r) is not dict:
        raise SchemaError("schema", f"readings[{i}] is not an object")
    ts = r.get("ts")
    device = r.get("device")
    point = r.get("point")
    quality = r.get("quality")
    if type(ts) is not int or ts <= 0:
        raise SchemaError("schema", f"readings[{i}].ts must be a positive integer (µs)")
    if not _is_id(device) or not _is_id(point):
        raise SchemaError("schema", f"readings[{i}] needs printable string device and point")
    if quality not in QUALITIES:
        raise SchemaError("schema", f"readings[{i}].quality {quality!r} is not good/uncertain/bad")
    if "value" not in r:
        raise SchemaError("schema", f"readings[{i}] has no value")
    flags = r.get("flags")
    if flags is None:
        flag_t: tuple[str, ...] = ()
    elif type(flags) is list and all(_is_id(f) for f in flags):
        flag_t = tuple(flags)
    else:
        raise SchemaError("schema", f"readings[{i}].flags must be a list of strings")
    verdict = r.get("verdict")
    if verdict is not None and verdict not in VERDICTS:
        raise SchemaError("schema", f"readings[{i}].verdict {verdict!r} is unknown")
    return Row(
        ts,
        device,  # type: ignore[arg-type]  # _is_id checked it is a str
        point,  # type: ignore[arg-type]
        _scalar(r["value"], f"readings[{i}].value"),
        quality,
        _scalar(r.get("raw"), f"readings[{i}].raw"),
        _opt_id(r.get("unit"), f"readings[{i}].unit"),
        _opt_id(r.get("reason"), f"readings[{i}].reason"),
        flag_t,
        _opt_number(r.get("U"), f"readings[{i}].U"),
        _opt_number(r.get("k"), f"readings[{i}].k"),
        _opt_id(r.get("instrument"), f"readings[{i}].instrument"),
        _opt_id(r.get("certificate"), f"readings[{i}].certificate"),
        verdict,
    )


def _item(e: object, where: str) -> Item:
    if type(e) is not dict:
        raise SchemaError("schema", f"{where} is not an object")
    ts = e.get("ts")
    if type(ts) is not int or ts <= 0:
        raise SchemaError("schema", f"{where}.ts must be a positive integer (µs)")
    tags: list[tuple[str, str]] = []
    fields: list[tuple[str, Scalar]] = []
    for key, v in e.items():
        if key == "ts":
            continue
        if not _is_id(key):
            raise SchemaError("schema", f"{where} has a key that is not a printable string")
        if key in ITEM_TAG_KEYS and _is_id(v):
            tags.append((key, v))
        elif isinstance(v, list | dict):
            # nested content stays readable as compact JSON text
            fields.append((key, json.dumps(v, separators=(",", ":"), ensure_ascii=False)))
        elif v is not None:
            fields.append((key, _scalar(v, f"{where}.{key}")))
    if not fields:
        fields.append(("present", True))  # a point needs at least one field
    return Item(ts, tuple(sorted(tags)), tuple(fields))


def parse_batch(body: bytes, site: str, gateway: str, kind: str) -> Batch:
    """Parse and validate a signed batch body received on ``…/{site}/{gateway}/{kind}``.

    The body's ``gateway``, ``site`` and ``type`` must match the topic: a batch
    cannot be replayed under another gateway's name. Raises :class:`SchemaError`.
    """
    doc = _loads(body)
    if type(doc) is not dict:
        raise SchemaError("schema", "body is not a JSON object")
    if doc.get("v") != 1:
        raise SchemaError("unsupported_version", f"schema version {doc.get('v')!r} is not 1")
    if doc.get("type") != kind:
        raise SchemaError("topic_mismatch", f"type {doc.get('type')!r} on a {kind} topic")
    if doc.get("gateway") != gateway or doc.get("site") != site:
        raise SchemaError(
            "topic_mismatch",
            f"body names {doc.get('site')!r}/{doc.get('gateway')!r}, topic {site}/{gateway}",
        )
    seq = _int(doc.get("seq"), "seq")
    if seq < 1:
        raise SchemaError("schema", "seq starts at 1")
    sealed = _int(doc.get("sealed"), "sealed")
    rows: list[Row] = []
    items: list[Item] = []
    if kind == "data":
        readings = doc.get("readings")
        if type(readings) is not list:
            raise SchemaError("schema", "readings must be an array")
        rows = [_row(r, i) for i, r in enumerate(readings)]
    else:
        key = f"{kind}s"
        entries = doc.get(key)
        if type(entries) is not list:
            raise SchemaError("schema", f"{key} must be an array")
        items = [_item(e, f"{key}[{i}]") for i, e in enumerate(entries)]
    return Batch(kind, site, gateway, seq, sealed, rows, items)


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
    software = doc.get("software")
    version = software.get("version") if isinstance(software, dict) else None
    return Status(
        site,
        gateway,
        state,
        since if type(since) is int else None,
        version if isinstance(version, str) else None,
    )
