"""The event log (audit trail): append-only, hash-chained, signed, with a counter.

File format (docs/trust.md has the full description): one entry per line, each
line ``<body>\\t<signature>\\n`` where ``<body>`` is the canonical JSON (sorted keys,
compact, UTF-8) of::

    {"n": 7, "ts": <UTC µs>, "type": "parameter_changed", "source": "config",
     "data": {...}, "software": "<16 hex>", "prev": "<sha256 hex of line 6>"}

and ``<signature>`` is the signature line of docs/wire.md
(``{"alg":"Ed25519","kid":…,"sig":…}``) over the body bytes. ``prev`` is the SHA-256
of the previous line's bytes (without its ``\\n``); the first entry has 64 zeros.
``n`` is the event counter: 1 for the first entry, +1 per entry, never reset. A
side file ``<log>.counter`` holds the last ``n`` and line hash so that deleting
entries from the end is detected too.

Opening a log verifies all of it and raises :class:`EventLogCorrupt` naming every
problem; a corrupt log is never rewritten. The one exception is a torn last line
(power lost mid-write, no final newline): its bytes are moved to a side file, and a
``log_tail_recovered`` entry records that, so nothing disappears silently.

When ``max_entries - reserve`` entries exist, parameter changes are refused
(:class:`EventLogFull`); other events may use the reserve up to ``max_entries``.
The log never overwrites old entries.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from drivers.base import Clock, utc_now_us
from gateway.wire.signing import SignatureError, Signer, verify_payload

__all__ = [
    "GENESIS",
    "ChainReport",
    "ChangeKind",
    "EventLog",
    "EventLogCorrupt",
    "EventLogError",
    "EventLogFull",
    "EventLogLocked",
    "EventType",
    "LogProblem",
    "ParamChange",
    "canonical_parameters",
    "check_chain",
    "counter_path_for",
    "diff_parameters",
    "flatten_parameters",
]

GENESIS = "0" * 64
"""The ``prev`` of the first entry."""

_BODY_KEYS = {"n": int, "ts": int, "type": str, "source": str, "data": dict, "software": str}


class EventType(StrEnum):
    """Entry types the gateway writes (``append`` accepts others too)."""

    STARTUP = "startup"
    SHUTDOWN = "shutdown"
    SOFTWARE_CHANGED = "software_changed"
    CONFIG_LOADED = "config_loaded"
    PARAMETERS_BASELINE = "parameters_baseline"
    PARAMETER_CHANGED = "parameter_changed"
    INSTRUMENT_IDENTITY = "instrument_identity"
    INSTRUMENT_IDENTITY_CHANGED = "instrument_identity_changed"
    CLOCK_JUMP = "clock_jump"
    CLOCK_SYNC = "clock_sync"
    OUTBOX_DROP = "outbox_drop"
    NONCRITICAL_PAUSED = "noncritical_paused"
    NONCRITICAL_RESUMED = "noncritical_resumed"
    TAMPER_COUNTER = "tamper_counter"
    LOG_TAIL_RECOVERED = "log_tail_recovered"


class EventLogError(Exception):
    """Base class of event-log errors; ``path`` is the log file."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


@dataclass(frozen=True, slots=True)
class LogProblem:
    """One thing wrong with a log: where (file line, entry number), what (``kind``), why."""

    line: int
    n: int | None
    kind: str
    message: str

    def __str__(self) -> str:
        entry = "" if self.n is None else f" (entry {self.n})"
        return f"line {self.line}{entry}: {self.kind}: {self.message}"


class EventLogCorrupt(EventLogError):
    """The log failed verification; ``problems`` lists every finding, first one first."""

    def __init__(self, path: Path, problems: list[LogProblem]) -> None:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(path, f"event log is corrupt: {problems[0]}{more}")
        self.problems = problems


class EventLogFull(EventLogError):
    """The log reached its limit; the entry was not written (nothing is overwritten)."""


class EventLogLocked(EventLogError):
    """Another process holds the log open."""


class ChangeKind(StrEnum):
    CHANGED = "changed"
    ADDED = "added"
    REMOVED = "removed"


@dataclass(frozen=True, slots=True)
class ParamChange:
    """A legally relevant parameter that differs; ``old``/``new`` is None when absent."""

    param: str
    old: Any
    new: Any
    kind: ChangeKind

    def event_data(self) -> dict[str, Any]:
        """The ``data`` of a ``parameter_changed`` entry."""
        return {"param": self.param, "change": self.kind.value, "old": self.old, "new": self.new}


def flatten_parameters(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings and lists as one flat dict with ``a.b[2].c`` keys.

    Empty mappings and lists stay as leaf values so a change to or from empty is
    visible. Collections should be keyed by id (not listed) by the caller, so that
    inserting one device does not shift the keys of all the others.
    """
    flat: dict[str, Any] = {}

    def walk(value: Any, key: str) -> None:
        if isinstance(value, Mapping) and value:
            for k, v in value.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(value, list | tuple) and value:
            for i, v in enumerate(value):
                walk(v, f"{key}[{i}]")
        else:
            flat[key] = value

    for k, v in params.items():
        walk(v, f"{prefix}{k}")
    return flat


def _canonical(obj: Any) -> bytes:
    """The one JSON encoding used for entry bodies: sorted keys, compact, UTF-8."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def canonical_parameters(params: Mapping[str, Any]) -> bytes:
    """The flat form of ``params`` (:func:`flatten_parameters`) as canonical JSON: what
    :meth:`EventLog.reconcile_parameters` compares, computable ahead of it."""
    return _canonical(flatten_parameters(params))


@dataclass(frozen=True, slots=True)
class _Baseline:
    """The data of a ``parameters_baseline`` entry: :func:`canonical_parameters` bytes,
    written into the entry as they are (a big site's set is megabytes as objects)."""

    parameters: bytes


def diff_parameters(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[ParamChange]:
    """The changes from ``old`` to ``new``, one per flat dotted key, sorted by key.

    Values are compared as their JSON forms, so ``(1, 2)`` equals ``[1, 2]`` and
    ``1`` differs from ``1.0`` only if JSON spells them differently.
    """
    a = json.loads(_canonical(flatten_parameters(old)))
    b = json.loads(_canonical(flatten_parameters(new)))
    changes: list[ParamChange] = []
    for key in sorted(a.keys() | b.keys()):
        if key not in b:
            changes.append(ParamChange(key, a[key], None, ChangeKind.REMOVED))
        elif key not in a:
            changes.append(ParamChange(key, None, b[key], ChangeKind.ADDED))
        elif _canonical(a[key]) != _canonical(b[key]):
            changes.append(ParamChange(key, a[key], b[key], ChangeKind.CHANGED))
    return changes


def counter_path_for(path: Path) -> Path:
    """Where the non-resettable counter of the log at ``path`` lives."""
    return path.with_name(path.name + ".counter")


def line_hash(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


class _LineError(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _parse_body(body: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _LineError("malformed", f"entry is not JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise _LineError("malformed", "entry is not a JSON object")
    for key, typ in _BODY_KEYS.items():
        if not isinstance(obj.get(key), typ) or isinstance(obj.get(key), bool):
            raise _LineError("malformed", f"entry lacks {key!r} or it is not {typ.__name__}")
    prev = obj.get("prev")
    if not isinstance(prev, str) or len(prev) != 64:
        raise _LineError("malformed", "entry lacks 'prev' or it is not a sha256 hex digest")
    return obj


@dataclass(slots=True)
class _Record:
    line: int
    raw: bytes
    hash: str
    body: dict[str, Any] | None = None
    sig_ok: bool = False

    @property
    def n(self) -> int | None:
        return None if self.body is None else int(self.body["n"])


@dataclass(slots=True)
class ChainReport:
    """The result of :func:`check_chain`: entries in file order and every problem found."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    problems: list[LogProblem] = field(default_factory=list)
    last_n: int = 0
    last_hash: str = GENESIS
    good_length: int = 0
    torn_tail: bytes | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def check_chain(data: bytes, keys: Mapping[str, Ed25519PublicKey]) -> ChainReport:
    """Verify a whole log: each line's form and signature, the counter and the links.

    Problem kinds: ``malformed``, ``unsigned``, ``unknown_key``, ``bad_algorithm``,
    ``bad_signature`` (per line); ``deleted`` (entry numbers missing), ``reordered``
    (entries out of order), ``duplicated`` (an entry appears twice), ``broken_chain``
    (``prev`` is not the hash of the preceding entry); ``torn_tail`` (last line has
    no newline). ``good_length`` is the byte length of the complete lines.
    """
    report = ChainReport()
    parts = data.split(b"\n")
    tail = parts.pop()  # what follows the last newline: b"" for a complete file
    records: list[_Record] = []
    for i, raw in enumerate(parts, start=1):
        rec = _Record(i, raw, line_hash(raw))
        records.append(rec)
        cut = raw.rfind(b"\t")
        try:
            if cut < 0:
                raise _LineError("unsigned", "line has no signature")
            body = raw[:cut]
            rec.body = _parse_body(body)
            try:
                verify_payload(body + b"\n" + raw[cut + 1 :], keys)
            except SignatureError as exc:
                raise _LineError(exc.kind, str(exc).split(": ", 1)[-1]) from None
            rec.sig_ok = True
        except _LineError as exc:
            report.problems.append(LogProblem(i, rec.n, exc.kind, str(exc)))
    report.good_length = len(data) - len(tail)
    if tail:
        report.torn_tail = tail
        report.problems.append(
            LogProblem(
                len(parts) + 1, None, "torn_tail", f"last line is incomplete ({len(tail)} bytes)"
            )
        )

    numbered = [r for r in records if r.n is not None]
    hashes_by_n: dict[int, set[str]] = {}
    max_n = 0
    for idx, rec in enumerate(numbered):
        n = rec.n
        assert n is not None  # filtered above
        expected = max_n + 1
        if n == expected:
            before = records[rec.line - 2] if rec.line > 1 else None
            assert rec.body is not None
            if before is None:
                want: str | None = GENESIS
            elif before.n == n - 1 and before.sig_ok:
                want = before.hash
            else:
                want = None  # predecessor already reported; one problem per fault
            if want is not None and rec.body["prev"] != want:
                report.problems.append(
                    LogProblem(
                        rec.line, n, "broken_chain", "prev is not the hash of the entry before it"
                    )
                )
        elif n <= max_n:
            kind = "duplicated" if rec.hash in hashes_by_n.get(n, set()) else "reordered"
            report.problems.append(
                LogProblem(rec.line, n, kind, f"entry {n} appears after entry {max_n}")
            )
        else:
            later = {r.n for r in numbered[idx + 1 :]}
            moved = [m for m in range(expected, n) if m in later]
            if moved:
                report.problems.append(
                    LogProblem(
                        rec.line, n, "reordered", f"entry {n} appears before entry {moved[0]}"
                    )
                )
            else:
                span = str(expected) if n - 1 == expected else f"{expected}..{n - 1}"
                report.problems.append(
                    LogProblem(rec.line, n, "deleted", f"entries {span} are missing before it")
                )
        hashes_by_n.setdefault(n, set()).add(rec.hash)
        max_n = max(max_n, n)
        if rec.body is not None:
            report.entries.append(rec.body)
    report.problems.sort(key=lambda p: p.line)
    if records:
        report.last_n = max_n
        report.last_hash = records[-1].hash
    return report


def read_counter(path: Path) -> tuple[int, str] | None:
    """The ``(n, last line hash)`` stored beside a log, or None if there is no counter file.

    Raises ``ValueError`` if the file exists but cannot be understood.
    """
    try:
        obj = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    if (
        not isinstance(obj, dict)
        or not isinstance(obj.get("n"), int)
        or not isinstance(obj.get("last"), str)
    ):
        raise ValueError(f"{path}: counter file is malformed")
    return int(obj["n"]), str(obj["last"])


def check_counter(report: ChainReport, counter: tuple[int, str] | None) -> list[LogProblem]:
    """Compare a verified chain with its stored counter (``truncated``, ``counter_mismatch``).

    The counter is written after the entry, so it may lag the log by one entry
    (power lost in between); that is not a problem.
    """
    if counter is None:
        return []
    n, last = counter
    line = report.last_n + 1
    if report.last_n < n:
        return [
            LogProblem(
                line,
                None,
                "truncated",
                f"log ends at entry {report.last_n} but {n} entries were written",
            )
        ]
    if report.last_n == n and report.last_hash != last and n > 0:
        return [
            LogProblem(line - 1, n, "counter_mismatch", "last entry differs from the one recorded")
        ]
    if report.last_n > n + 1:
        return [
            LogProblem(
                line - 1, report.last_n, "counter_mismatch", f"counter file says {n} entries"
            )
        ]
    return []


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class EventLog:
    """The gateway's audit trail; a sync context manager (open on construction).

    Construction verifies the whole log with ``trusted_keys`` (default: the
    signer's own public key; pass old public keys too after a key change) and the
    counter file, and raises :class:`EventLogCorrupt` on any problem except a torn
    last line, :class:`EventLogLocked` if another process has it open. Every
    append is written and fsync'ed before it returns. Thread-safe.
    """

    def __init__(
        self,
        path: Path,
        signer: Signer,
        *,
        software_id: str,
        max_entries: int = 100_000,
        reserve: int | None = None,
        trusted_keys: Mapping[str, Ed25519PublicKey] | None = None,
        clock_us: Clock = utc_now_us,
    ) -> None:
        if max_entries < 2:
            raise ValueError("max_entries must be at least 2")
        self.path = path
        self._signer = signer
        self._software = software_id
        self._max = max_entries
        self._param_limit = max_entries - (
            max(1, max_entries // 10) if reserve is None else reserve
        )
        self._clock = clock_us
        self._lock = threading.Lock()
        self._counter_path = counter_path_for(path)
        keys = dict(trusted_keys or {})
        keys[signer.kid] = signer.private_key.public_key()

        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            self._refuse_if_counted(path)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
        try:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise EventLogLocked(path, "event log is in use by another process") from None
            torn = self._verify_and_load(keys)
        except BaseException:
            os.close(self._fd)
            raise
        self._closed = False
        self._identity_logged: set[str] = set()
        if torn is not None:
            self.append(EventType.LOG_TAIL_RECOVERED, torn, source="eventlog")

    # -- opening ---------------------------------------------------------------

    def _refuse_if_counted(self, path: Path) -> None:
        """A missing log whose counter says entries were written was deleted: refuse."""
        try:
            counter = read_counter(self._counter_path)
        except ValueError:
            counter = None  # reported by the full check once the file is open
        if counter is not None and counter[0] > 0:
            problem = LogProblem(
                1, None, "truncated", f"log file is missing but {counter[0]} entries were written"
            )
            raise EventLogCorrupt(path, [problem])

    def _verify_and_load(self, keys: Mapping[str, Ed25519PublicKey]) -> dict[str, Any] | None:
        """Verify the file; load state; move a torn tail aside. Returns its event data."""
        size = os.fstat(self._fd).st_size
        data = os.pread(self._fd, size, 0) if size else b""
        report = check_chain(data, keys)
        try:
            counter = read_counter(self._counter_path)
        except ValueError as exc:
            raise EventLogCorrupt(
                self.path, [LogProblem(0, None, "counter_mismatch", str(exc))]
            ) from None
        report.problems.extend(check_counter(report, counter))
        fatal = [p for p in report.problems if p.kind != "torn_tail"]
        if fatal:
            raise EventLogCorrupt(self.path, fatal)

        self._n = report.last_n
        self._last_hash = report.last_hash
        self._params: dict[str, Any] | None = None  # while entries are folded in
        self._params_packed: bytes | None = None  # at rest: see _pack_params
        self._identities: dict[str, Any] = {}
        self._tamper: dict[str, Any] = {}
        self._software_seen: str | None = None
        for e in report.entries:
            self._absorb(e)
        self._pack_params()

        torn: dict[str, Any] | None = None
        if report.torn_tail is not None:
            # keep the torn bytes, cut them from the log, and say so in the log itself
            side = self.path.with_name(f"{self.path.name}.torn-{self._n + 1}")
            with open(side, "wb") as f:
                f.write(report.torn_tail)
                f.flush()
                os.fsync(f.fileno())
            os.ftruncate(self._fd, report.good_length)
            os.fsync(self._fd)
            torn = {
                "bytes": len(report.torn_tail),
                "sha256": hashlib.sha256(report.torn_tail).hexdigest(),
                "saved_to": side.name,
            }
        if counter is None or counter[0] != self._n:
            self._write_counter()
        return torn

    def _absorb(self, entry: Mapping[str, Any]) -> None:
        """Fold one entry into the state reconstructed from the log."""
        t, d = entry["type"], entry["data"]
        if t == EventType.PARAMETERS_BASELINE and isinstance(d.get("parameters"), dict):
            self._params, self._params_packed = dict(d["parameters"]), None
        elif t == EventType.PARAMETER_CHANGED and (params := self._unpacked_params()) is not None:
            if d.get("change") == ChangeKind.REMOVED:
                params.pop(d.get("param"), None)
            else:
                params[d.get("param")] = d.get("new")
        elif t in (EventType.INSTRUMENT_IDENTITY, EventType.INSTRUMENT_IDENTITY_CHANGED):
            self._identities[d.get("device")] = d.get("identity")
        elif t == EventType.TAMPER_COUNTER:
            self._tamper[d.get("device")] = d.get("counters")
        elif t == EventType.STARTUP:
            sw = d.get("software")
            if isinstance(sw, Mapping):
                self._software_seen = sw.get("sha256")

    def _unpacked_params(self) -> dict[str, Any] | None:
        """The flat parameters as a dict to read or change (None: no baseline yet)."""
        if self._params is None and self._params_packed is not None:
            self._params = json.loads(zlib.decompress(self._params_packed))
            self._params_packed = None
        return self._params

    def _pack_params(self) -> None:
        """Keep the parameters as compressed canonical JSON between changes.

        A big site's baseline is tens of thousands of values (megabytes as Python
        objects, ~1/20 of that packed); they are only read when parameters change.
        """
        if self._params is not None:
            self._params_packed = zlib.compress(_canonical(self._params), 1)
            self._params = None

    # -- writing ---------------------------------------------------------------

    def _write_counter(self) -> None:
        tmp = self._counter_path.with_name(self._counter_path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(_canonical({"n": self._n, "last": self._last_hash}) + b"\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._counter_path)
        _fsync_dir(self._counter_path.parent)

    def _append_many(
        self, items: Iterable[tuple[str, dict[str, Any] | _Baseline, str]], limit: int
    ) -> list[dict[str, Any]]:
        batch = list(items)
        with self._lock:
            if self._closed:
                raise EventLogError(self.path, "event log is closed")
            if self._n + len(batch) > limit:
                raise EventLogFull(
                    self.path,
                    f"event log holds {self._n} of {self._max} entries; "
                    f"refusing {len(batch)} more (limit {limit} for this kind of entry)",
                )
            lines: list[bytes] = []
            entries: list[dict[str, Any]] = []
            n, prev = self._n, self._last_hash
            for type_, data, source in batch:
                n += 1
                body: dict[str, Any] = {
                    "n": n,
                    "ts": self._clock(),
                    "type": str(type_),
                    "source": source,
                    "software": self._software,
                    "prev": prev,
                }
                if isinstance(data, _Baseline):
                    # "data" sorts before every other key: canonical JSON starts with it
                    head = b'{"data":{"parameters":' + data.parameters + b"},"
                    body_bytes = head + _canonical(body)[1:]
                else:
                    body["data"] = data
                    body_bytes = _canonical(body)
                payload = self._signer.sign_payload(body_bytes)
                cut = payload.rfind(b"\n")
                line = body_bytes + b"\t" + payload[cut + 1 :]
                prev = line_hash(line)
                lines.append(line + b"\n")
                entry = json.loads(body_bytes)
                entry["sig"] = json.loads(payload[cut + 1 :])
                entries.append(entry)
            os.write(self._fd, b"".join(lines))
            os.fsync(self._fd)
            self._n, self._last_hash = n, prev
            self._write_counter()
            for (_, data, _), e in zip(batch, entries, strict=True):
                if isinstance(data, _Baseline):  # packed as it is: no dict to build
                    self._params, self._params_packed = None, zlib.compress(data.parameters, 1)
                else:
                    self._absorb(e)
            self._pack_params()
            return entries

    def append(self, type: str, data: dict[str, Any], *, source: str = "gateway") -> dict[str, Any]:
        """Write one entry; return it (body plus ``sig``) for publishing on ``…/event``.

        ``data`` must be JSON-able (no NaN). Raises :class:`EventLogFull` once
        ``max_entries`` entries exist.
        """
        return self._append_many([(type, data, source)], self._max)[0]

    def record_parameter_changes(
        self, changes: list[ParamChange], *, source: str
    ) -> list[dict[str, Any]]:
        """Write one ``parameter_changed`` entry per change, all or none.

        Raises :class:`EventLogFull` (writing nothing) when they do not fit below the
        parameter-change limit; the caller must then refuse the changes.
        """
        items = [(EventType.PARAMETER_CHANGED.value, c.event_data(), source) for c in changes]
        return self._append_many(items, self._param_limit)

    def reconcile_parameters(
        self, current: Mapping[str, Any] | bytes, *, source: str
    ) -> list[dict[str, Any]]:
        """Log how the legally relevant parameters differ from what the log last recorded.

        The previous values come from the log itself (its baseline entry plus every
        change since), never from an unprotected side file. The first call on a new
        log writes one ``parameters_baseline`` entry with the full flat set. Raises
        :class:`EventLogFull` when the changes do not fit; nothing is written then.
        ``current`` may be given as :func:`canonical_parameters` bytes.
        """
        canonical = current if isinstance(current, bytes) else canonical_parameters(current)
        with self._lock:
            unchanged = self._params is None and self._params_packed is not None
            unchanged = unchanged and zlib.decompress(self._params_packed or b"") == canonical
        if unchanged:  # the usual restart: nothing to compare value by value
            return self.record_parameter_changes([], source=source)
        with self._lock:
            previous = self._unpacked_params()
            self._pack_params()  # ``previous`` stays as it is: _absorb changes a fresh copy
        if previous is None:
            items = [(EventType.PARAMETERS_BASELINE.value, _Baseline(canonical), source)]
            return self._append_many(items, self._param_limit)
        changes = diff_parameters(previous, json.loads(canonical))
        return self.record_parameter_changes(changes, source=source)

    def record_startup(
        self, software: Mapping[str, Any], *, config_path: str, config_sha256: str
    ) -> list[dict[str, Any]]:
        """Write ``startup`` (with the software identity), ``software_changed`` when its
        digest differs from the previous start-up's, and ``config_loaded``."""
        sw = dict(software)
        items: list[tuple[str, dict[str, Any], str]] = [
            (EventType.STARTUP.value, {"software": sw, "pid": os.getpid()}, "gateway")
        ]
        if self._software_seen is not None and self._software_seen != sw.get("sha256"):
            change = {"old": self._software_seen, "new": sw.get("sha256")}
            items.append((EventType.SOFTWARE_CHANGED.value, change, "gateway"))
        cfg = {"path": config_path, "sha256": config_sha256}
        items.append((EventType.CONFIG_LOADED.value, cfg, "gateway"))
        return self._append_many(items, self._max)

    def record_instrument_identity(
        self, device: str, identity: Mapping[str, Any], *, source: str
    ) -> dict[str, Any] | None:
        """Log the identity an instrument reported at connect.

        Written the first time per device in this run and whenever it differs from
        the last logged one (``instrument_identity_changed``, with ``previous``);
        returns None when the identity was already logged unchanged in this run.
        """
        ident = json.loads(_canonical(dict(identity)))
        previous = self._identities.get(device)
        if previous == ident and device in self._identity_logged:
            return None
        data: dict[str, Any] = {"device": device, "identity": ident}
        type_ = EventType.INSTRUMENT_IDENTITY
        if previous is not None and previous != ident:
            type_ = EventType.INSTRUMENT_IDENTITY_CHANGED
            data["previous"] = previous
        entry = self.append(type_, data, source=source)
        self._identity_logged.add(device)
        return entry

    def record_tamper_counters(
        self, device: str, counters: Mapping[str, int], *, source: str
    ) -> dict[str, Any] | None:
        """Log a meter's tamper counters when they differ from the last logged values."""
        now = json.loads(_canonical(dict(counters)))
        previous = self._tamper.get(device)
        if previous == now:
            return None
        data = {"device": device, "counters": now, "previous": previous}
        return self.append(EventType.TAMPER_COUNTER, data, source=source)

    # -- state -----------------------------------------------------------------

    @property
    def counter(self) -> int:
        """The number of the last entry written (0 for an empty log); never decreases."""
        return self._n

    @property
    def last_hash(self) -> str:
        return self._last_hash

    @property
    def parameters(self) -> dict[str, Any] | None:
        """The flat legally relevant parameters as the log records them (None: no baseline)."""
        with self._lock:
            params = self._unpacked_params()
            self._pack_params()
        return None if params is None else dict(params)

    @property
    def parameter_changes_allowed(self) -> bool:
        return self._n < self._param_limit

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                os.close(self._fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
