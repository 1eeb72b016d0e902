"""The event log (audit trail): append-only, hash-chained, signed, with a signed head.

File format (docs/trust.md has the full description): one entry per line, each
line ``<body>\\t<signature>\\n`` where ``<body>`` is the canonical JSON (sorted keys,
compact, UTF-8) of::

    {"n": 7, "ts": <UTC µs>, "type": "parameter_changed", "source": "config",
     "data": {...}, "software": "<16 hex>", "prev": "<sha256 hex of line 6>"}

and ``<signature>`` is the signature line of docs/wire.md
(``{"alg":"Ed25519","kid":…,"sig":…}``) over the body bytes. ``prev`` is the SHA-256
of the previous line's bytes (without its ``\\n``); the first entry has 64 zeros.
``n`` is the event counter: 1 for the first entry, +1 per entry, never reset. A
side file ``<log>.counter`` holds the signed head (:mod:`gateway.audit.head`): the
last ``n`` and line hash, so that deleting entries from the end is detected too.
A log started by ``metrogate audit reinit`` begins with a ``log_reinitialised``
entry that continues the numbering and chain of the log it replaces (``data.previous``).

Opening a log verifies all of it and raises :class:`EventLogCorrupt` naming every
problem; a corrupt log is never rewritten. The one exception is a torn last line
(power lost mid-write, no final newline): its bytes are moved to a side file, and a
``log_tail_recovered`` entry records that, so nothing disappears silently. A log
that is missing while the gateway's other state shows it has run before is
refused (:class:`EventLogReset`): only ``metrogate audit reinit`` starts a new one.

Writing is two steps: an entry is *staged* (numbered, chained, signed, in memory;
fast) and then *committed* (one ``write`` and ``fsync`` for everything staged, then
the head). With ``autocommit`` (the default) every append commits before it
returns; the daemon instead commits from a worker thread (:meth:`EventLog.commit`)
so that fsyncs never block its event loop, and publishes entries once committed.

Limits: when ``max_entries - reserve`` entries exist, parameter changes are refused
(:class:`EventLogFull`); other events may use the reserve up to ``max_entries -
lifecycle_room``; the last ``lifecycle_room`` entries are kept for start-up,
shutdown and the notice that the log is full. The log never overwrites old entries.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import threading
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn, Self

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from drivers.base import Clock, utc_now_us
from gateway.audit.head import HeadError, LogHead, SeqMark, read_head, write_head
from gateway.wire.signing import SignatureError, Signer, verify_payload

__all__ = [
    "GENESIS",
    "LIFECYCLE_TYPES",
    "ChainReport",
    "ChangeKind",
    "EventLog",
    "EventLogCorrupt",
    "EventLogError",
    "EventLogFull",
    "EventLogLocked",
    "EventLogReset",
    "EventLogWriteError",
    "EventType",
    "LogProblem",
    "ParamChange",
    "canonical_parameters",
    "check_chain",
    "check_head",
    "counter_path_for",
    "diff_parameters",
    "flatten_parameters",
    "previous_head",
]

log = logging.getLogger("metrogate.eventlog")

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
    LOG_REINITIALISED = "log_reinitialised"
    EVENT_LOG_FULL = "event_log_full"
    PARAMETER_CHANGES_REFUSED = "parameter_changes_refused"
    SEQUENCE_RESUMED = "sequence_resumed"


LIFECYCLE_TYPES: frozenset[str] = frozenset(
    {
        EventType.STARTUP,
        EventType.SOFTWARE_CHANGED,
        EventType.CONFIG_LOADED,
        EventType.SHUTDOWN,
        EventType.LOG_TAIL_RECOVERED,
        EventType.LOG_REINITIALISED,
        EventType.EVENT_LOG_FULL,
        EventType.PARAMETER_CHANGES_REFUSED,
        EventType.SEQUENCE_RESUMED,
    }
)
"""Entry types that may use the lifecycle room (the last entries of a full log)."""


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


class EventLogReset(EventLogError):
    """The log is missing (or empty without its head) but the gateway has run before.

    ``evidence`` names the files that show it. Starting a fresh log would restart the
    event numbers unnoticed; ``metrogate audit reinit`` does it deliberately.
    """

    def __init__(self, path: Path, evidence: list[str]) -> None:
        super().__init__(
            path,
            "event log and its counter are missing, but this gateway has run before ("
            + "; ".join(evidence)
            + "). Restore them, or start a new log deliberately with "
            "'metrogate audit reinit -c CONFIG --reason TEXT'",
        )
        self.evidence = evidence


class EventLogWriteError(EventLogError):
    """Staged entries could not be written (disk full, I/O error); they are kept and
    written by the next successful commit."""


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
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise _LineError("malformed", f"entry is not JSON ({type(exc).__name__})") from None
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
    remembered_hash: str | None = None  # line hash of entry ``remember`` (check_chain)

    @property
    def ok(self) -> bool:
        return not self.problems


def previous_head(entry: Mapping[str, Any]) -> tuple[int, str] | None:
    """``(n, hash)`` of the log a ``log_reinitialised`` entry continues, if it names one."""
    if entry.get("type") != EventType.LOG_REINITIALISED:
        return None
    data = entry.get("data")
    prev = data.get("previous") if isinstance(data, Mapping) else None
    if not isinstance(prev, Mapping):
        return None
    n, digest = prev.get("n"), prev.get("hash")
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        return None
    if not isinstance(digest, str) or len(digest) != 64:
        return None
    return n, digest


def check_chain(
    data: bytes, keys: Mapping[str, Ed25519PublicKey], *, remember: int | None = None
) -> ChainReport:
    """Verify a whole log: each line's form and signature, the counter and the links.

    Problem kinds: ``malformed``, ``unsigned``, ``unknown_key``, ``bad_algorithm``,
    ``bad_signature`` (per line); ``deleted`` (entry numbers missing), ``reordered``
    (entries out of order), ``duplicated`` (an entry appears twice), ``broken_chain``
    (``prev`` is not the hash of the preceding entry); ``torn_tail`` (last line has
    no newline). ``good_length`` is the byte length of the complete lines.

    A first line that is a correctly signed ``log_reinitialised`` entry naming a
    previous head ``(n, hash)`` starts the chain there: it must be entry ``n + 1``
    with ``prev`` equal to ``hash``. The line hash of entry ``remember`` is kept in
    ``remembered_hash`` (to compare with the head).
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
    max_n, start_hash = 0, GENESIS
    first = records[0] if records else None
    if first is not None and first.sig_ok and first.body is not None:
        continued = previous_head(first.body)
        if continued is not None:
            max_n, start_hash = continued
    for idx, rec in enumerate(numbered):
        n = rec.n
        assert n is not None  # filtered above
        expected = max_n + 1
        if n == expected:
            before = records[rec.line - 2] if rec.line > 1 else None
            assert rec.body is not None
            if before is None:
                want: str | None = start_hash
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
        if n == remember:
            report.remembered_hash = rec.hash
        max_n = max(max_n, n)
        if rec.body is not None:
            report.entries.append(rec.body)
    report.problems.sort(key=lambda p: p.line)
    if records:
        report.last_n = max_n
        report.last_hash = records[-1].hash
    return report


def check_head(report: ChainReport, head: LogHead | None) -> list[LogProblem]:
    """Compare a verified chain with its (verified) head: ``truncated``, ``counter_mismatch``.

    ``report`` must come from :func:`check_chain` with ``remember=head.n``. The head
    is written after the entries, so a log may run ahead of it (power lost in
    between): that is not a problem, as long as entry ``head.n`` is the one recorded.
    """
    if head is None:
        return []
    line = report.last_n + 1
    if report.last_n < head.n:
        what = "the log is empty" if not report.entries else f"log ends at entry {report.last_n}"
        return [LogProblem(line, None, "truncated", f"{what} but {head.n} entries were written")]
    if head.n > 0 and report.remembered_hash != head.last:
        return [
            LogProblem(line - 1, head.n, "counter_mismatch", "entry differs from the one recorded")
        ]
    return []


def _write_all(fd: int, data: bytes) -> None:
    """``os.write`` until everything is written (a regular file may take it in parts)."""
    view = memoryview(data)
    while view:
        done = os.write(fd, view)
        view = view[done:]


@dataclass(slots=True)
class _Staged:
    """An entry numbered, chained and signed, not yet written."""

    line: bytes  # with its newline
    hash: str
    entry: dict[str, Any]


class EventLog:
    """The gateway's audit trail; a sync context manager (open on construction).

    Construction verifies the whole log with ``trusted_keys`` (default: the
    signer's own public key; pass old public keys too after a key change) and its
    signed head, and raises :class:`EventLogCorrupt` on any problem except a torn
    last line, :class:`EventLogLocked` if another process has it open, and
    :class:`EventLogReset` when the log is missing although one of ``history`` (files
    or directories the gateway writes as it runs, such as the outbox) exists.

    With ``autocommit`` every append is written and fsync'ed before it returns;
    without, entries are staged and :meth:`commit` writes them (any thread).
    Thread-safe.
    """

    def __init__(
        self,
        path: Path,
        signer: Signer,
        *,
        software_id: str,
        max_entries: int = 100_000,
        reserve: int | None = None,
        lifecycle_room: int | None = None,
        trusted_keys: Mapping[str, Ed25519PublicKey] | None = None,
        clock_us: Clock = utc_now_us,
        history: Iterable[Path] = (),
        autocommit: bool = True,
    ) -> None:
        if max_entries < 2:
            raise ValueError("max_entries must be at least 2")
        self.path = path
        self._signer = signer
        self._software = software_id
        self._max = max_entries
        reserve = max(1, max_entries // 10) if reserve is None else reserve
        self._param_limit = max_entries - reserve
        if lifecycle_room is None:
            lifecycle_room = min(reserve, 1000, max(1, reserve // 2))
        self._ordinary_limit = max_entries - lifecycle_room
        self._clock = clock_us
        self._autocommit = autocommit
        self._lock = threading.Lock()  # in-memory state: numbering, chain, parameters
        self._io_lock = threading.Lock()  # the files: one commit or head write at a time
        self._counter_path = counter_path_for(path)
        self._pending: list[_Staged] = []
        self._broken: str | None = None
        keys = dict(trusted_keys or {})
        keys[signer.kid] = signer.private_key.public_key()

        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            head = read_head(self._counter_path, keys)
        except HeadError as exc:
            raise EventLogCorrupt(path, [LogProblem(0, None, exc.kind, exc.message)]) from None
        fresh = head is None and (not path.exists() or path.stat().st_size == 0)
        if fresh:
            self._refuse_if_run_before(history)
        elif head is not None and not path.exists():
            problem = LogProblem(
                1,
                None,
                "truncated",
                f"log file is missing but its counter says {head.n} entries were written",
            )
            raise EventLogCorrupt(path, [problem])
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
        try:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise EventLogLocked(path, "event log is in use by another process") from None
            torn = self._verify_and_load(keys, head)
        except BaseException:
            os.close(self._fd)
            raise
        self._closed = False
        self._identity_logged: set[str] = set()
        if torn is not None:
            self.append(EventType.LOG_TAIL_RECOVERED, torn, source="eventlog")

    # -- opening ---------------------------------------------------------------

    def _refuse_if_run_before(self, history: Iterable[Path]) -> None:
        """A new log is started only where nothing shows that this gateway has run."""
        evidence: list[str] = []
        for p in history:
            if p.is_dir():
                if any(p.iterdir()):
                    evidence.append(f"{p} is not empty")
            elif p.exists():
                evidence.append(f"{p} exists")
        sides = sorted(self.path.parent.glob(self.path.name + ".torn-*"))
        evidence += [f"{p} exists" for p in sides[:3]]
        if evidence:
            raise EventLogReset(self.path, evidence)

    def _verify_and_load(
        self, keys: Mapping[str, Ed25519PublicKey], head: LogHead | None
    ) -> dict[str, Any] | None:
        """Verify the file; load state; move a torn tail aside. Returns its event data."""
        size = os.fstat(self._fd).st_size
        data = os.pread(self._fd, size, 0) if size else b""
        report = check_chain(data, keys, remember=None if head is None else head.n)
        if head is None and report.entries:
            report.problems.append(
                LogProblem(
                    report.last_n + 1,
                    None,
                    "counter_missing",
                    f"the log has {len(report.entries)} entries but its counter file "
                    f"{self._counter_path.name} is missing",
                )
            )
        report.problems.extend(check_head(report, head))
        fatal = [p for p in report.problems if p.kind != "torn_tail"]
        if fatal:
            raise EventLogCorrupt(self.path, fatal)

        self._n = report.last_n
        self._last_hash = report.last_hash
        self._committed = (self._n, self._last_hash)
        self._size = report.good_length
        self._seq: SeqMark | None = None if head is None else head.seq
        self._seq_at_open = self._seq
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
        if head is None or head.n != self._n:
            self._write_head()
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

    def _write_head(self) -> None:
        """Store the signed head: the last committed entry and the outbox's mark."""
        n, last = self._committed
        head = LogHead(n, last, self._seq, self._signer.kid)
        write_head(self._counter_path, head, self._signer, ts_us=self._clock())

    def _limit_for(self, type_: str) -> int:
        return self._max if type_ in LIFECYCLE_TYPES else self._ordinary_limit

    def _append_many(
        self, items: Iterable[tuple[str, dict[str, Any] | _Baseline, str]], limit: int
    ) -> list[dict[str, Any]]:
        entries = self._stage(list(items), limit)
        if self._autocommit and entries:
            self.commit()
        return entries

    def _stage(
        self, batch: list[tuple[str, dict[str, Any] | _Baseline, str]], limit: int
    ) -> list[dict[str, Any]]:
        """Number, chain and sign ``batch`` (all or none); nothing is written yet."""
        if not batch:
            return []
        with self._lock:
            if self._closed:
                raise EventLogError(self.path, "event log is closed")
            if self._n + len(batch) > limit:
                raise EventLogFull(
                    self.path,
                    f"event log holds {self._n} of {self._max} entries; "
                    f"refusing {len(batch)} more (limit {limit} for this kind of entry)",
                )
            staged: list[_Staged] = []
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
                entry = json.loads(body_bytes)
                entry["sig"] = json.loads(payload[cut + 1 :])
                staged.append(_Staged(line + b"\n", prev, entry))
            self._n, self._last_hash = n, prev
            self._pending.extend(staged)
            for (_, data, _), st in zip(batch, staged, strict=True):
                if isinstance(data, _Baseline):  # packed as it is: no dict to build
                    self._params, self._params_packed = None, zlib.compress(data.parameters, 1)
                else:
                    self._absorb(st.entry)
            self._pack_params()
            return [st.entry for st in staged]

    def commit(self) -> list[dict[str, Any]]:
        """Write every staged entry (one ``write``, one ``fsync``), then the head.

        Returns the entries written, in order (empty when nothing was staged). Safe
        to call from a worker thread; commits are serialised. Raises
        :class:`EventLogWriteError` when the write fails: the file is cut back to
        its last complete entry and the entries stay staged for the next commit.
        """
        with self._io_lock:
            with self._lock:
                pending, self._pending = self._pending, []
            if not pending:
                return []
            if self._broken is not None:
                with self._lock:
                    self._pending[:0] = pending
                raise EventLogWriteError(self.path, self._broken)
            data = b"".join(st.line for st in pending)
            try:
                _write_all(self._fd, data)
                os.fsync(self._fd)
            except OSError as exc:
                self._undo(pending, exc)
            self._size += len(data)
            before = self._committed
            self._committed = (int(pending[-1].entry["n"]), pending[-1].hash)
            try:
                self._write_head()
            except OSError as exc:
                self._size -= len(data)
                self._committed = before
                self._undo(pending, exc)
            return [st.entry for st in pending]

    def _undo(self, pending: list[_Staged], exc: OSError) -> NoReturn:
        """Cut the file back after a failed write and keep ``pending`` staged; raises."""
        why = exc.strerror or str(exc)
        try:
            os.ftruncate(self._fd, self._size)
        except OSError as again:
            # the file may hold part of the entries: writing them again would duplicate them
            self._broken = f"cannot cut back a failed write ({again.strerror}); restart needed"
        with self._lock:
            self._pending[:0] = pending
        raise EventLogWriteError(self.path, f"cannot write the event log ({why})") from exc

    def record_seq(self, mark: SeqMark) -> None:
        """Store the outbox's sequence mark in the head, durably, before returning.

        ``reserved`` never goes down: a lower one is raised to the highest recorded.
        """
        with self._io_lock:
            if self._closed:
                raise EventLogError(self.path, "event log is closed")
            if self._seq is not None and mark.reserved < self._seq.reserved:
                mark = dataclasses.replace(mark, reserved=self._seq.reserved)
            self._seq = mark
            self._write_head()

    def start_from(self, previous: tuple[int, str] | None, seq: SeqMark | None) -> None:
        """Make an empty new log continue an earlier one: its first entry will be
        ``previous[0] + 1`` chained to ``previous[1]``, and its head carries ``seq``.
        Only for :mod:`gateway.audit.reinit`, whose first entry names that head."""
        with self._io_lock, self._lock:
            if self._n != 0 or self._pending:
                raise EventLogError(self.path, "only an empty new log can continue another")
            if previous is not None:
                self._n, self._last_hash = previous
            self._seq = seq

    @property
    def seq_mark(self) -> SeqMark | None:
        """The outbox's sequence mark as the head recorded it when the log was opened."""
        return self._seq_at_open

    @property
    def pending(self) -> int:
        """Entries staged and not yet committed."""
        return len(self._pending)

    def entries_after(self, n: int) -> list[dict[str, Any]]:
        """The committed entries numbered above ``n``, oldest first (for republishing).

        Each is what :meth:`append` returned for it: the body plus ``sig``.
        """
        with self._io_lock:
            data = os.pread(self._fd, self._size, 0) if self._size else b""
        out: list[dict[str, Any]] = []
        for raw in reversed(data.split(b"\n")[:-1]):
            cut = raw.rfind(b"\t")
            entry = json.loads(raw[:cut])
            if entry["n"] <= n:
                break
            entry["sig"] = json.loads(raw[cut + 1 :])
            out.append(entry)
        out.reverse()
        return out

    def append(self, type: str, data: dict[str, Any], *, source: str = "gateway") -> dict[str, Any]:
        """Write one entry; return it (body plus ``sig``) for publishing on ``…/event``.

        ``data`` must be JSON-able (no NaN). Raises :class:`EventLogFull` once
        ``max_entries - lifecycle_room`` entries exist (``max_entries`` for the
        :data:`LIFECYCLE_TYPES`). Without ``autocommit`` the entry is only staged.
        """
        return self._append_many([(type, data, source)], self._limit_for(type))[0]

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

    def refuse_parameter_changes(
        self, current: Mapping[str, Any] | bytes, *, source: str, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Record that the parameters differ from the log's but cannot be logged (full).

        One ``parameter_changes_refused`` entry (in the lifecycle room) with
        ``count`` and the first ``limit`` changes; the log's parameters stay as they
        were, so the next start reports the difference again. Empty when nothing
        differs; raises :class:`EventLogFull` when not even the lifecycle room is left.
        """
        canonical = current if isinstance(current, bytes) else canonical_parameters(current)
        with self._lock:
            previous = self._unpacked_params()
            self._pack_params()
        changes = diff_parameters(previous or {}, json.loads(canonical))
        if not changes:
            return []
        data = {
            "count": len(changes),
            "changes": [c.event_data() for c in changes[:limit]],
            "reason": "event log full",
        }
        return self._append_many(
            [(EventType.PARAMETER_CHANGES_REFUSED.value, data, source)], self._max
        )

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

    @property
    def full(self) -> bool:
        """True once only the lifecycle room is left: other events are refused."""
        return self._n >= self._ordinary_limit

    @property
    def max_entries(self) -> int:
        return self._max

    def close(self) -> None:
        """Commit what is staged (a failure is logged: those entries are lost), close."""
        if self._closed:
            return
        try:
            self.commit()
        except EventLogWriteError as exc:
            log.error("%s; %d staged entries are lost", exc, len(self._pending))
        with self._io_lock, self._lock:
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
