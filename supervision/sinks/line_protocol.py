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
``batch,site=S,gateway=G,kind=K seq=Ni,n=Ni,sealed=Ni <sealed µs·1000 + seq mod 1000>``
  one point per received batch, the ground truth for completeness and gaps.
``gateway_status,site=S,gateway=G state="online",version="…"``.

Numbers are always floats so an integer-looking value never causes a field type
conflict; non-finite floats are left out (line protocol cannot carry them). Every
point is a pure function of the batch bytes, so a redelivery rewrites identical
points: writes are idempotent.
"""

from __future__ import annotations

import math
from typing import Any, Final

from supervision.model import Batch, Row, Scalar, SchemaError, Status, check_reading

__all__ = [
    "batch_lines",
    "escape_measurement",
    "escape_string",
    "escape_tag",
    "reading_line",
    "reading_lines",
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


class _SeriesCache:
    """Escaped ``reading,<tags>`` prefixes, memoised: ids repeat on every poll."""

    def __init__(self) -> None:
        self._d: dict[tuple[str, str, str, str, str | None, str | None], str] = {}

    def get(self, site: str, gateway: str, r: Row) -> str:
        key = (site, gateway, r.device, r.point, r.instrument, r.unit)
        s = self._d.get(key)
        if s is None:
            s = (
                f"reading,site={escape_tag(site)},gateway={escape_tag(gateway)}"
                f",device={escape_tag(r.device)},point={escape_tag(r.point)}"
            )
            if r.instrument is not None:
                s += f",instrument={escape_tag(r.instrument)}"
            if r.unit is not None:
                s += f",unit={escape_tag(r.unit)}"
            if len(self._d) >= _SERIES_CACHE_MAX:
                self._d.clear()  # a bound, not an LRU: churn of this size is itself a problem
            self._d[key] = s
        return s


_CACHE = _SeriesCache()


_INF: Final = float("inf")


# ``reading,<tags> <fields that repeat from poll to poll>`` by what they are made of
_FIXED: dict[tuple[object, ...], str] = {}


def _fixed_part(site: str, gateway: str, r: Row) -> str:
    """Series key and the fields that rarely change (quality, flags, U, k, …), memoised."""
    key = (site, gateway, r.device, r.point, r.instrument, r.unit, r.quality, r.reason,
           r.flags, r.uncertainty, r.coverage, r.verdict, r.certificate)  # fmt: skip
    s = _FIXED.get(key)
    if s is not None:
        return s
    s = f'{_CACHE.get(site, gateway, r)} quality="{r.quality}"'
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
    if len(_FIXED) >= _SERIES_CACHE_MAX:
        _FIXED.clear()  # a bound, not an LRU
    _FIXED[key] = s
    return s


def reading_line(site: str, gateway: str, seq_field: str, r: Row) -> str:
    """One ``reading`` point (see the module docstring).

    The hot path of the ingest. Quality, reason, verdict and flags were validated
    against closed sets and a pattern (supervision.model), so they need no escaping;
    the part that repeats from poll to poll is built once (:func:`_fixed_part`).
    """
    line = _fixed_part(site, gateway, r)
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


# Per (site, gateway): the fixed values of a reading already checked (the fields a
# poll repeats, absent ones None, flags as a tuple) → (its _fixed_part text, how many
# keys such a reading has besides raw). Bounded like the caches above.
_Known = dict[tuple[Any, ...], tuple[str, int]]
_KNOWN: dict[tuple[str, str], _Known] = {}


def _fixed_key(r: dict[str, Any]) -> tuple[Any, ...]:
    """What :func:`reading_lines` looks a reading up by (the same expression, inlined
    there); raises TypeError when it cannot be a key."""
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


def _checked_line(known: _Known, site: str, gateway: str, seq_field: str, r: object, i: int) -> str:
    """The line of a reading not seen before, checked in full (raises SchemaError)."""
    row = check_reading(r, i)
    line = reading_line(site, gateway, seq_field, row)
    assert type(r) is dict  # check_reading passed
    try:
        key = _fixed_key(r)
    except TypeError:
        return line  # hashable whenever check_reading passed; never cache what is not
    if len(known) >= _SERIES_CACHE_MAX:
        known.clear()  # a bound, not an LRU
    # a checked reading has only contract keys and no null but value's: those it has
    # besides raw and server_ts are ts, value and the non-null fixed ones
    varying = (r.get("raw") is not None) + (r.get("server_ts") is not None)
    known[key] = (_fixed_part(site, gateway, row), len(r) - varying)
    return line


def reading_lines(site: str, gateway: str, seq_field: str, readings: list[Any]) -> list[str]:
    """Check each reading as :func:`supervision.model.check_reading` does and build its
    ``reading`` point, in one pass. Raises :class:`~supervision.model.SchemaError`.

    The hot path of the ingest. A reading whose fixed values (identifiers, quality,
    reason, verdict, U, k, flags) equal those of one already checked in full has
    nothing left to check there; equal key count then proves it has no unknown key
    and no null besides ``value`` (every key it has is one of those counted). What
    varies from poll to poll — ts, value, raw — is checked every time; anything
    unusual goes through the full check. The result equals
    ``[reading_line(…, check_reading(r, i)) …]`` (held by tests).
    """
    known = _KNOWN.get((site, gateway))
    if known is None:
        if len(_KNOWN) >= _SERIES_CACHE_MAX:
            _KNOWN.clear()
        known = _KNOWN[site, gateway] = {}
    lines: list[str] = []
    append = lines.append
    for i, r in enumerate(readings):
        if type(r) is not dict:
            append(_checked_line(known, site, gateway, seq_field, r, i))
            continue
        get = r.get
        flags = get("flags")
        u = get("U")
        k = get("k")
        try:  # flags that are not an array make the key unhashable (r), as a list inside does
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
            or ts <= 0
            or type(u) is bool
            or type(k) is bool
            or "value" not in r
            or (server_ts is not None and (type(server_ts) is not int or server_ts < 0))
        ):
            append(_checked_line(known, site, gateway, seq_field, r, i))
            continue
        v = r["value"]
        t = type(v)
        tr = type(raw)
        tail = (
            f",{seq_field} {ts}000"
            if server_ts is None
            else f",server_ts={server_ts}i,{seq_field} {ts}000"
        )
        if t is float and (tr is int or tr is float) and -_INF < v < _INF and -_INF < raw < _INF:
            # the common reading (a raw register count or a float), in one step
            append(f"{hit[0]},value={v!r},raw={float(raw)!r}{tail}")
            continue
        line = hit[0]
        if t is float or t is int:
            if -_INF < v < _INF:  # also false for NaN
                line += f",value={float(v)!r}"
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
                    line += f",raw={float(raw)!r}"
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


def batch_lines(batch: Batch) -> list[str]:
    """All points of one batch: its content plus its ``batch`` bookkeeping point.

    Readings left unchecked (``Batch.readings``) are checked here: raises
    :class:`~supervision.model.SchemaError`.
    """
    seq_field = f"seq={batch.seq}i"
    site, gateway = batch.site, batch.gateway
    if batch.readings:
        lines = reading_lines(site, gateway, seq_field, batch.readings)
    elif batch.kind == "data":
        lines = [reading_line(site, gateway, seq_field, r) for r in batch.rows]
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
    lines.append(
        f"batch,site={escape_tag(site)},gateway={escape_tag(gateway)},kind={batch.kind} "
        f"seq={batch.seq}i,n={batch.size}i,sealed={batch.sealed_us}i {ts_ns}"
    )
    return lines


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
