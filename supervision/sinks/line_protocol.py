"""InfluxDB line protocol for received batches, built directly as strings.

The schema (docs/ingest.md):

``reading,site=S,gateway=G,device=D,point=P[,instrument=I][,unit=U] <fields> <ts ns>``
  fields: ``value`` (float) or ``value_bool`` / ``value_str``; ``raw`` likewise;
  ``quality``, ``reason``, ``flags`` (comma-joined), ``verdict``, ``certificate``
  (strings); ``U``, ``k`` (floats); ``server_ts`` (integer µs, an OPC UA server's
  timestamp of the value, when the reading has one); ``seq`` (integer, the batch). A
  reading with a null value keeps its quality fields so a missed poll stays visible.
``alarm`` / ``event``: tags site, gateway and the item's identifying keys; fields the
  item's other scalars plus ``seq``.
``batch,site=S,gateway=G,kind=K seq=Ni,n=Ni,sealed=Ni,digest="…" <sealed µs·1000 + seq mod 1000>``
  one point per received batch, the ground truth for completeness and gaps;
  ``digest`` (SHA-256 of the body bytes) is what a conflict is detected by.
``gateway_status,site=S,gateway=G state="online",version="…"``.
``security,site=S,gateway=G,kind=K seq=Ni,detail="…"[,reason="…"][,topic="…",digest="…"] <ts>``
  a security event (supervision.model.SecurityEvent).

Numbers are always floats so an integer-looking value never causes a field type
conflict; non-finite floats are left out (line protocol cannot carry them). Every
point is a pure function of the batch bytes, so a redelivery rewrites identical
points: writes are idempotent.

A :class:`LineEncoder` memoises what repeats from poll to poll (series keys, the
fixed part of a reading's line, readings already checked), bounded; each sink owns
one. The module-level functions use a fresh one per call.
"""

from __future__ import annotations

import math
import sys
from typing import Any, Final

from gateway.wire.verify import MAX_TS_US
from supervision.model import (
    Batch,
    ReadingChecker,
    Row,
    Scalar,
    SchemaError,
    SecurityEvent,
    Status,
)

__all__ = [
    "LineEncoder",
    "batch_lines",
    "escape_measurement",
    "escape_string",
    "escape_tag",
    "reading_line",
    "reading_lines",
    "security_line",
    "status_line",
]

_TAG: Final = str.maketrans({",": "\\,", "=": "\\=", " ": "\\ ", "\\": "\\\\"})
_MEASUREMENT: Final = str.maketrans({",": "\\,", " ": "\\ ", "\\": "\\\\"})
_STRING: Final = str.maketrans({'"': '\\"', "\\": "\\\\"})
_SERIES_CACHE_MAX: Final = 100_000


def escape_tag(s: str) -> str:
    """Escape a tag key, tag value or field key (commas, equals signs, spaces, backslashes)."""
    return s.translate(_TAG)


def escape_measurement(s: str) -> str:
    """Escape a measurement name (commas, spaces, backslashes)."""
    return s.translate(_MEASUREMENT)


def escape_string(s: str) -> str:
    """A string field value, quoted, with double quotes and backslashes escaped."""
    return '"' + s.translate(_STRING) + '"'


def _scalar_field(key: str, v: Scalar) -> str | None:
    """``key=v`` with the field name suffixed by type for bools and strings."""
    t = type(v)
    if t is float:
        return f"{key}={v!r}" if math.isfinite(v) else None  # type: ignore[arg-type]
    if t is bool:
        return f"{key}_bool={'true' if v else 'false'}"
    if t is str:
        return f"{key}_str={escape_string(v)}"  # type: ignore[arg-type]
    return None


def _plain_field(key: str, v: Scalar) -> str | None:
    """``key=v`` typed by the value itself (alarm and event items)."""
    t = type(v)
    if t is float:
        return f"{key}={v!r}" if math.isfinite(v) else None  # type: ignore[arg-type]
    if t is bool:
        return f"{key}={'true' if v else 'false'}"
    if t is str:
        return f"{key}={escape_string(v)}"  # type: ignore[arg-type]
    return None


_INF: Final = float("inf")

# The fixed values of a reading already checked (the fields a poll repeats, absent ones
# None, flags as a tuple) → (its fixed-part text, how many keys such a reading has
# besides raw)
_Known = dict[tuple[Any, ...], tuple[str, int]]


def _fixed_key(r: dict[str, Any]) -> tuple[Any, ...]:
    """What :meth:`LineEncoder.reading_lines` looks a reading up by (the same expression,
    inlined there); raises TypeError when it cannot be a key."""
    get = r.get
    flags = get("flags")
    if flags is not None:
        if type(flags) is not list:
            raise TypeError("flags is not a list")
        flags = tuple(flags)
    key = (get("device"), get("point"), get("unit"), get("instrument"), get("certificate"),
           get("quality"), get("reason"), get("verdict"), get("U"), get("k"), flags)  # fmt: skip
    hash(key)
    return key


def _series_text(site: str, gateway: str, r: Row) -> str:
    """Escaped ``reading,<tags>`` of a checked reading."""
    s = (
        f"reading,site={escape_tag(site)},gateway={escape_tag(gateway)}"
        f",device={escape_tag(r.device)},point={escape_tag(r.point)}"
    )
    if r.instrument is not None:
        s += f",instrument={escape_tag(r.instrument)}"
    if r.unit is not None:
        s += f",unit={escape_tag(r.unit)}"
    return s


def _fixed_text(series: str, r: Row) -> str:
    """``series`` and the fields that rarely change (quality, flags, U, k, …)."""
    s = f'{series} quality="{r.quality}"'
    if r.reason is not None:
        s += f',reason="{r.reason}"'
    if r.flags:
        s += f',flags="{",".join(r.flags)}"'
    u = r.uncertainty
    if u is not None and u < _INF:
        s += f",U={u!r}"
    k = r.coverage
    if k is not None and k < _INF:
        s += f",k={k!r}"
    if r.verdict is not None:
        s += f',verdict="{r.verdict}"'
    if r.certificate is not None:
        s += f",certificate={escape_string(r.certificate)}"
    return s


def _varying(line: str, seq_field: str, r: Row) -> str:
    """The fixed part ``line`` completed with what varies: value, raw, server_ts, seq, ts."""
    v = r.value
    if type(v) is float:
        if -_INF < v < _INF:  # also false for NaN
            line += f",value={v!r}"
    elif v is not None:
        f = _scalar_field("value", v)
        if f is not None:
            line += "," + f
    raw = r.raw
    if raw is not None:
        if type(raw) is float:
            if -_INF < raw < _INF:
                line += f",raw={raw!r}"
        else:
            f = _scalar_field("raw", raw)
            if f is not None:
                line += "," + f
    if r.server_ts_us is not None:
        line += f",server_ts={r.server_ts_us}i"
    return f"{line},{seq_field} {r.ts_us}000"


class LineEncoder:
    """Builds the line protocol of batches, memoising what repeats (each memo bounded
    by ``max_cached`` entries: a bound, not an LRU — churn of that size is itself a
    problem). One per sink."""

    def __init__(self, max_cached: int = _SERIES_CACHE_MAX) -> None:
        self._max = max_cached
        self._series: dict[tuple[str, str, str, str, str | None, str | None], str] = {}
        self._fixed: dict[tuple[object, ...], str] = {}
        self._known: dict[tuple[str, str], _Known] = {}
        self.checker = ReadingChecker(max_cached)

    def _series_key(self, site: str, gateway: str, r: Row) -> str:
        """Escaped ``reading,<tags>`` (memoised)."""
        key = (site, gateway, r.device, r.point, r.instrument, r.unit)
        s = self._series.get(key)
        if s is None:
            s = _series_text(site, gateway, r)
            if len(self._series) >= self._max:
                self._series.clear()
            self._series[key] = s
        return s

    def _fixed_part(self, site: str, gateway: str, r: Row) -> str:
        """Series key and the fields that rarely change (quality, flags, U, k, …), memoised."""
        key = (site, gateway, r.device, r.point, r.instrument, r.unit, r.quality, r.reason,
               r.flags, r.uncertainty, r.coverage, r.verdict, r.certificate)  # fmt: skip
        s = self._fixed.get(key)
        if s is not None:
            return s
        s = _fixed_text(self._series_key(site, gateway, r), r)
        if len(self._fixed) >= self._max:
            self._fixed.clear()
        self._fixed[key] = s
        return s

    def reading_line(self, site: str, gateway: str, seq_field: str, r: Row) -> str:
        """One ``reading`` point (see the module docstring).

        Quality, reason, verdict and flags were validated against closed sets and a
        pattern (supervision.model), so they need no escaping; the part that repeats
        from poll to poll is built once (:meth:`_fixed_part`).
        """
        return _varying(self._fixed_part(site, gateway, r), seq_field, r)

    def _checked_line(
        self, known: _Known, site: str, gateway: str, seq_field: str, r: object, i: int
    ) -> str:
        """The line of a reading not seen before, checked in full (raises SchemaError).

        Its fixed part is remembered in ``known`` only (the memos of :meth:`reading_line`
        would hold it a second time), under a key whose strings are interned: the device,
        point, unit and quality names that many gateways share are then kept once."""
        row = self.checker.check(r, i)
        fixed = _fixed_text(_series_text(site, gateway, row), row)
        line = _varying(fixed, seq_field, row)
        assert type(r) is dict  # the check passed
        try:
            key = _fixed_key(r)
        except TypeError:
            return line  # hashable whenever the check passed; never cache what is not
        if len(known) >= self._max:
            known.clear()
        # a checked reading has only contract keys and no null but value's: those it has
        # besides raw and server_ts are ts, value and the non-null fixed ones
        varying = (r.get("raw") is not None) + (r.get("server_ts") is not None)
        key = tuple(sys.intern(x) if type(x) is str else x for x in key)
        known[key] = (fixed, len(r) - varying)
        return line

    def reading_lines(
        self, site: str, gateway: str, seq_field: str, readings: list[Any]
    ) -> list[str]:
        """Check each reading as :func:`supervision.model.check_reading` does and build
        its ``reading`` point, in one pass. Raises :class:`~supervision.model.SchemaError`.

        The hot path of the ingest. A reading whose fixed values (identifiers, quality,
        reason, verdict, U, k, flags) equal those of one already checked in full has
        nothing left to check there; equal key count then proves it has no unknown key
        and no null besides ``value`` (every key it has is one of those counted). What
        varies from poll to poll — ts, value, raw — is checked every time; anything
        unusual goes through the full check. The result equals
        ``[reading_line(…, check_reading(r, i)) …]`` (held by tests).
        """
        known = self._known.get((site, gateway))
        if known is None:
            if len(self._known) >= self._max:
                self._known.clear()
            known = self._known[site, gateway] = {}
        lines: list[str] = []
        append = lines.append
        checked_line = self._checked_line
        for i, r in enumerate(readings):
            if type(r) is not dict:
                append(checked_line(known, site, gateway, seq_field, r, i))
                continue
            get = r.get
            flags = get("flags")
            u = get("U")
            k = get("k")
            try:  # flags that are not an array make the key unhashable (r), as a list does
                hit = known.get(
                    (get("device"), get("point"), get("unit"), get("instrument"),
                     get("certificate"), get("quality"), get("reason"), get("verdict"), u, k,
                     flags if flags is None else tuple(flags) if type(flags) is list else r)
                )  # fmt: skip
            except TypeError:  # an array or object where a scalar belongs
                hit = None
            ts = get("ts")
            raw: Any = get("raw")
            server_ts = get("server_ts")
            # True == 1 in a key, not in the contract: a boolean U or k is checked in full
            if (
                hit is None
                or len(r) != hit[1] + (raw is not None) + (server_ts is not None)
                or type(ts) is not int
                or not 0 < ts <= MAX_TS_US
                or type(u) is bool
                or type(k) is bool
                or "value" not in r
                or (
                    server_ts is not None
                    and (type(server_ts) is not int or not 0 <= server_ts <= MAX_TS_US)
                )
            ):
                append(checked_line(known, site, gateway, seq_field, r, i))
                continue
            tail = (
                f",{seq_field} {ts}000"
                if server_ts is None
                else f",server_ts={server_ts}i,{seq_field} {ts}000"
            )
            v = r["value"]
            t = type(v)
            tr = type(raw)
            if (
                t is float
                and (tr is float or (tr is int and -_MAXF < raw < _MAXF))
                and -_INF < v < _INF
                and -_INF < raw < _INF
            ):
                # the common reading (a raw register count or a float), in one step
                append(f"{hit[0]},value={v!r},raw={float(raw)!r}{tail}")
                continue
            line = hit[0]
            if t is float or t is int:
                if -_INF < v < _INF:  # also false for NaN
                    line += f",value={_number(v, i, 'value')!r}"
            elif t is bool:
                line += ",value_bool=true" if v else ",value_bool=false"
            elif t is str:
                line += f",value_str={escape_string(v)}"
            elif v is not None:
                raise SchemaError(
                    "schema", f"readings[{i}].value must be a number, boolean, string or null"
                )
            if raw is not None:
                t = type(raw)
                if t is float or t is int:
                    if -_INF < raw < _INF:
                        line += f",raw={_number(raw, i, 'raw')!r}"
                elif t is bool:
                    line += ",raw_bool=true" if raw else ",raw_bool=false"
                elif t is str:
                    line += f",raw_str={escape_string(raw)}"
                else:
                    raise SchemaError(
                        "schema", f"readings[{i}].raw must be a number, boolean or string"
                    )
            append(line + tail)
        return lines

    def batch_lines(self, batch: Batch) -> list[str]:
        """All points of one batch: its content plus its ``batch`` bookkeeping point.

        Readings left unchecked (``Batch.readings``) are checked here: raises
        :class:`~supervision.model.SchemaError`.
        """
        seq_field = f"seq={batch.seq}i"
        site, gateway = batch.site, batch.gateway
        if batch.readings:
            lines = self.reading_lines(site, gateway, seq_field, batch.readings)
        elif batch.kind == "data":
            lines = [self.reading_line(site, gateway, seq_field, r) for r in batch.rows]
        else:
            head = f"{batch.kind},site={escape_tag(site)},gateway={escape_tag(gateway)}"
            lines = []
            for it in batch.items:
                tags = "".join(f",{escape_tag(k)}={escape_tag(v)}" for k, v in it.tags)
                fields = [seq_field]
                for k, fv in it.fields:
                    f = _plain_field(escape_tag(k), fv)
                    if f is not None:
                        fields.append(f)
                lines.append(f"{head}{tags} {','.join(fields)} {it.ts_us}000")
        # sub-µs digits carry seq mod 1000 so two batches sealed in one µs stay two points
        ts_ns = batch.sealed_us * 1000 + batch.seq % 1000
        digest = "" if batch.digest is None else f',digest="{batch.digest}"'
        lines.append(
            f"batch,site={escape_tag(site)},gateway={escape_tag(gateway)},kind={batch.kind} "
            f"seq={batch.seq}i,n={batch.size}i,sealed={batch.sealed_us}i{digest} {ts_ns}"
        )
        return lines


# an int below this in magnitude converts to a float (above: OverflowError)
_MAXF: Final = 2**1023


def _number(v: int | float, i: int, what: str) -> float:
    try:
        return float(v)
    except OverflowError:
        raise SchemaError("schema", f"readings[{i}].{what} is a number out of range") from None


def reading_line(site: str, gateway: str, seq_field: str, r: Row) -> str:
    """:meth:`LineEncoder.reading_line` with a fresh encoder."""
    return LineEncoder().reading_line(site, gateway, seq_field, r)


def reading_lines(site: str, gateway: str, seq_field: str, readings: list[Any]) -> list[str]:
    """:meth:`LineEncoder.reading_lines` with a fresh encoder."""
    return LineEncoder().reading_lines(site, gateway, seq_field, readings)


def batch_lines(batch: Batch, encoder: LineEncoder | None = None) -> list[str]:
    """:meth:`LineEncoder.batch_lines` with ``encoder`` (or a fresh one)."""
    return (encoder or LineEncoder()).batch_lines(batch)


def security_line(ev: SecurityEvent) -> str:
    """A ``security`` point, filed at the event's own time (idempotent on redelivery).

    The nanoseconds below the event's microsecond are the batch number mod 1000, or
    for a message record (``digest`` set) a number taken from its digest, so records
    of one series at the same microsecond do not overwrite each other."""
    offset = int(ev.digest[:8], 16) if ev.digest else ev.seq
    fields = f"seq={ev.seq}i,detail={escape_string(ev.detail)}"
    if ev.reason:
        fields += f",reason={escape_string(ev.reason)}"
    if ev.digest:
        fields += f",topic={escape_string(ev.topic)},digest={escape_string(ev.digest)}"
    return (
        f"security,site={escape_tag(ev.site)},gateway={escape_tag(ev.gateway)},"
        f"kind={escape_tag(ev.kind)} {fields} {ev.ts_us * 1000 + offset % 1000}"
    )


def status_line(status: Status, received_ns: int) -> str:
    """A ``gateway_status`` point, stamped with the birth time when known."""
    ts = status.since_us * 1000 if status.since_us is not None else received_ns
    fields = f"state={escape_string(status.state)}"
    if status.version is not None:
        fields += f",version={escape_string(status.version)}"
    return (
        f"gateway_status,site={escape_tag(status.site)},gateway={escape_tag(status.gateway)}"
        f" {fields} {ts}"
    )
