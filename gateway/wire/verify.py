"""Verification of what a gateway sends: signed batches and their sequence numbers.

The same code serves ``metrogate verify`` and the ingest service:

- :func:`verify_batch` checks one signed payload (docs/wire.md) and returns the
  parsed :class:`VerifiedBatch`, or raises :class:`BatchError` whose ``kind`` names
  the failure: ``unsigned``, ``truncated``, ``malformed``, ``unknown_key``,
  ``bad_algorithm``, ``bad_signature`` or ``schema``.
- :class:`SequenceTracker` classifies each ``(gateway, seq)`` a receiver sees as
  ``new``, ``gap_fill``, ``duplicate``, ``conflict`` (given the payload's digest) or
  ``replay`` and keeps the outstanding gaps.
- :func:`read_capture` / :func:`verify_capture` check a file of captured payloads.
- :func:`loads_bounded` parses JSON only after a cheap scan showed its nesting within
  :data:`MAX_DEPTH`, and :data:`MAX_SEQ` / :data:`MAX_TS_US` bound the integers of the
  contract: whatever bytes arrive, parsing them costs time linear in their size and
  never raises anything but :class:`ValueError` (docs/wire.md, "Limits").
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.common.types import ID_CHARS, ID_MAX_LENGTH
from gateway.wire.encoding import CONTENT_KEY
from gateway.wire.signing import SignatureError, verify_payload

__all__ = [
    "MAX_DEPTH",
    "MAX_SEQ",
    "MAX_SIGNATURE_LINE",
    "MAX_TS_US",
    "BatchError",
    "CaptureReport",
    "Captured",
    "SeqKind",
    "SeqVerdict",
    "SequenceTracker",
    "VerifiedBatch",
    "json_depth",
    "loads_bounded",
    "read_capture",
    "verify_batch",
    "verify_capture",
]

_ID = re.compile(rf"^[{ID_CHARS}]{{1,{ID_MAX_LENGTH}}}$")  # an Ident, as the config says
_SIG_PREFIX = b'{"alg"'

MAX_DEPTH = 32
"""Deepest nesting of arrays and objects a receiver parses (a body needs 4; an event's
``data`` a few more). Python's parser recurses once per level and gives up near 1,000."""
MAX_SEQ = 2**63 - 1
"""Largest batch sequence number or event-log counter: a signed 64-bit integer."""
MAX_TS_US = (2**63 - 1 - 999) // 1000
"""Latest time in µs (2262-04-11): ``ts·1000 + 999`` still fits a signed 64-bit count of
nanoseconds, what InfluxDB and SQLite store."""
MAX_SIGNATURE_LINE = 512
"""Longest signature line (one is about 140 bytes)."""

# -- bounded JSON -----------------------------------------------------------------

# an escaped backslash or quote: removed first, so every quote left delimits a string
_ESCAPED = re.compile(rb'\\[\\"]')
# brackets become parentheses, every byte but brackets and quotes goes
_BRACKETS = bytes.maketrans(b"[]{}", b"()()")
_NOT_STRUCTURE = bytes(sorted(set(range(256)) - set(b'"[]{}')))
_STRING = re.compile(rb'"[^"]*"')


def json_depth(data: bytes, limit: int = MAX_DEPTH) -> int:
    """The nesting depth of arrays and objects in ``data`` (JSON text, valid or not), or
    ``limit + 1`` for anything deeper than ``limit``.

    For a prefix that is valid JSON it is exact; past the first error it may be too
    high, never too low, so a parser that stops at that error never goes deeper. Linear
    in ``len(data)`` plus ``limit`` passes over the brackets, all in C: strings are cut
    out (after escaped quotes and backslashes), then innermost ``()`` pairs are removed
    once per level.
    """
    if b"\\" in data:
        data = _ESCAPED.sub(b"", data)
    t = data.translate(_BRACKETS, _NOT_STRUCTURE)
    if b'"' in t:
        t = t.replace(b'""', b"")  # strings without brackets: most of them, cheaply
        if b'"' in t:
            t = _STRING.sub(b"", t)
    for depth in range(limit + 1):
        if not t:
            return depth
        inner = t.replace(b"()", b"")
        if len(inner) == len(t):  # unbalanced: only unmatched brackets are left
            return min(limit + 1, depth + t.count(b"("))
        t = inner
    return limit + 1


class JsonTooDeep(ValueError):
    """JSON text nested deeper than the limit (a :class:`ValueError`, like a bad parse)."""


def loads_bounded(data: bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` of ``data`` once :func:`json_depth` showed it within ``max_depth``.

    NaN and Infinity are refused (they are not JSON; the gateway never writes them).
    Raises :class:`ValueError` (:class:`JsonTooDeep` for the depth; UnicodeDecodeError
    for bytes that are not UTF-8) and nothing else.
    """
    if json_depth(data, max_depth) > max_depth:
        raise JsonTooDeep(f"nested deeper than {max_depth} levels")
    return json.loads(data, parse_constant=_reject_constant)


class BatchError(Exception):
    """A payload failed verification; ``kind`` names the failure (see module doc)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.detail = message


@dataclass(frozen=True, slots=True)
class VerifiedBatch:
    """A batch whose signature and form have been checked."""

    body: dict[str, Any]
    body_bytes: bytes
    kid: str
    gateway: str
    site: str
    seq: int
    type: str
    sealed: int


def _looks_truncated(fragment: bytes) -> bool:
    """True when ``fragment`` is the start of a JSON object that was cut off."""
    if not fragment.startswith(b"{"):
        return False
    try:
        loads_bounded(fragment)
    except JsonTooDeep:
        return False  # not a batch body cut short: something else entirely
    except ValueError:
        return True
    return False


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _check_schema(body: bytes) -> dict[str, Any]:
    try:
        # NaN/Infinity are not JSON: the gateway never writes them (allow_nan=False)
        obj = loads_bounded(body)
    except ValueError as exc:
        raise BatchError("schema", f"body is not JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise BatchError("schema", "body is not a JSON object")
    v = obj.get("v")
    if v != 1 or type(v) is not int:  # True == 1 in Python, not in JSON
        raise BatchError("schema", f"unsupported schema version {v!r}")
    kind = obj.get("type")
    if not isinstance(kind, str) or kind not in CONTENT_KEY:  # a list would not even hash
        raise BatchError("schema", f"unknown batch type {kind!r}")
    for key in ("gateway", "site"):
        v = obj.get(key)
        if not isinstance(v, str) or not _ID.match(v):
            raise BatchError("schema", f"{key!r} missing or not an id")
    for key, lo, hi in (("seq", 1, MAX_SEQ), ("sealed", 0, MAX_TS_US)):
        v = obj.get(key)
        if type(v) is not int or not lo <= v <= hi:
            raise BatchError("schema", f"{key!r} missing or not an integer in {lo}..{hi}")
    if not isinstance(obj.get(CONTENT_KEY[kind]), list):
        raise BatchError("schema", f"{CONTENT_KEY[kind]!r} missing or not an array")
    return obj


def verify_batch(payload: bytes, keys: Mapping[str, Ed25519PublicKey]) -> VerifiedBatch:
    """Verify one signed payload against public keys by key id, then check its body.

    Raises :class:`BatchError` and nothing else, whatever ``payload`` holds; the
    signature is checked before the body is parsed, so nothing unauthenticated is
    ever interpreted, and every parse is bounded (:func:`loads_bounded`).
    """
    cut = payload.rfind(b"\n")
    if cut < 0:
        if _looks_truncated(payload):
            raise BatchError("truncated", "payload ends inside the body; no signature line")
        raise BatchError("unsigned", "payload has no signature line")
    trailer = payload[cut + 1 :]
    cut_in_prefix = _SIG_PREFIX.startswith(trailer)  # also true for an empty trailer
    if cut_in_prefix or (trailer.startswith(_SIG_PREFIX) and _looks_truncated(trailer)):
        raise BatchError("truncated", "signature line is incomplete")
    if len(trailer) > MAX_SIGNATURE_LINE or json_depth(trailer, 1) > 1:
        kind = "malformed" if trailer.startswith(b"{") else "unsigned"
        raise BatchError(kind, "last line is not a signature line (too long or nested)")
    try:
        body_bytes, kid = verify_payload(payload, keys)
    except SignatureError as exc:
        detail = str(exc).split(": ", 1)[-1]
        if exc.kind == "malformed" and not trailer.startswith(b"{"):
            # the last line is not a signature at all: a body without one
            raise BatchError("unsigned", "last line is not a signature line") from None
        raise BatchError(exc.kind, detail) from None
    obj = _check_schema(body_bytes)
    return VerifiedBatch(
        body=obj,
        body_bytes=body_bytes,
        kid=kid,
        gateway=obj["gateway"],
        site=obj["site"],
        seq=obj["seq"],
        type=obj["type"],
        sealed=obj["sealed"],
    )


# -- sequence tracking ----------------------------------------------------------


class SeqKind(StrEnum):
    """How a receiver should treat a verified batch, by its sequence number."""

    NEW = "new"  # above everything seen: store it
    GAP_FILL = "gap_fill"  # a missing number arriving late: store it
    DUPLICATE = "duplicate"  # a redelivery of a recent batch: drop it quietly
    CONFLICT = "conflict"  # a recent number with other bytes: a gateway never does that
    RESET = "reset"  # at or below the highest number, sealed after it: numbering went back
    REPLAY = "replay"  # an old batch sent again: drop it and raise a security event


@dataclass(frozen=True, slots=True)
class SeqVerdict:
    kind: SeqKind
    gateway: str
    seq: int
    new_gaps: tuple[tuple[int, int], ...] = ()
    """Ranges ``(first, last)`` of numbers this batch showed to be missing."""


_DIGEST_BYTES = 32


def _digest32(digest: bytes) -> bytes:
    """``digest`` as the 32 bytes a tracker keeps: itself when it has 32 (a raw SHA-256),
    else its SHA-256 (so equal digests stay equal and different ones different)."""
    return digest if len(digest) == _DIGEST_BYTES else hashlib.sha256(digest).digest()


@dataclass(slots=True, eq=False)
class _Gateway:
    """What a tracker keeps of one gateway, in flat arrays (a few bytes per number).

    ``gap_lo[i]..gap_hi[i]`` are the outstanding gaps, sorted and disjoint. The numbers
    accepted most recently (at most the tracker's ``remember``) are a ring: slot ``i``
    holds ``seqs[i]``, when it was accepted (``at[i]``, receiver clock) and its digest
    (``digests[32·i:32·i+32]``, valid where ``has_digest[i]``); ``next`` is the slot
    written next, once the ring is full the oldest.
    """

    high: int
    baseline: int
    high_sealed: int | None = None  # ``sealed`` of the batch numbered ``high``, if given
    gap_lo: array[int] = field(default_factory=lambda: array("q"))
    gap_hi: array[int] = field(default_factory=lambda: array("q"))
    seqs: array[int] = field(default_factory=lambda: array("q"))
    at: array[float] = field(default_factory=lambda: array("d"))
    digests: bytearray = field(default_factory=bytearray)
    has_digest: bytearray = field(default_factory=bytearray)
    next: int = 0

    def slot(self, seq: int) -> int | None:
        """The ring slot of ``seq``, if it is among the numbers remembered."""
        try:
            return self.seqs.index(seq)
        except ValueError:
            return None

    def remember(self, seq: int, t: float, digest: bytes | None, capacity: int) -> None:
        """Put ``seq`` in the ring (over the oldest once it holds ``capacity``)."""
        d = bytes(_DIGEST_BYTES) if digest is None else _digest32(digest)
        if len(self.seqs) < capacity:
            self.seqs.append(seq)
            self.at.append(t)
            self.digests += d
            self.has_digest.append(digest is not None)
            return
        i = self.next
        self.seqs[i], self.at[i] = seq, t
        self.digests[i * _DIGEST_BYTES : (i + 1) * _DIGEST_BYTES] = d
        self.has_digest[i] = digest is not None
        self.next = (i + 1) % capacity

    def digest_at(self, i: int) -> bytes | None:
        if not self.has_digest[i]:
            return None
        return bytes(self.digests[i * _DIGEST_BYTES : (i + 1) * _DIGEST_BYTES])

    def keep_newest(self, capacity: int) -> None:
        """Shrink the ring to its ``capacity`` most recent numbers."""
        n = len(self.seqs)
        if n <= capacity:
            return
        order = [(self.next + k) % n for k in range(n)][n - capacity :]  # oldest first
        seqs, at = (
            array("q", (self.seqs[i] for i in order)),
            array("d", (self.at[i] for i in order)),
        )
        digests = bytearray().join(
            self.digests[i * _DIGEST_BYTES : (i + 1) * _DIGEST_BYTES] for i in order
        )
        self.has_digest = bytearray(self.has_digest[i] for i in order)
        self.seqs, self.at, self.digests, self.next = seqs, at, digests, 0


class SequenceTracker:
    """Per-gateway sequence bookkeeping for receivers.

    Definitions, for a verified batch ``seq`` from ``gateway`` at receiver time ``now``:

    - **new**: ``seq`` is above every number accepted so far (or the first seen from
      that gateway). Numbers skipped between the previous highest and ``seq`` become
      **gaps**, reported in :attr:`SeqVerdict.new_gaps` and kept by :meth:`gaps`.
    - **gap_fill**: ``seq`` is one of the outstanding gaps (a late delivery).
    - **duplicate**: ``seq`` was accepted within the last ``duplicate_window_s``
      seconds *and* lies within ``duplicate_window_seq`` of the highest number: a
      redelivery after a reconnect or a receiver restart. Harmless.
    - **conflict**: as *duplicate*, but the caller passed a ``digest`` of the payload
      and it differs from the one recorded with ``seq``: the same number with other
      bytes, which a gateway never produces (its outbox seals the bytes once).
    - **reset**: ``seq`` is at or below the highest number but the caller's ``sealed``
      is later than that of the highest batch: the gateway numbers again from lower
      down (its sequence state was lost). Batches are sealed in number order, so a
      late delivery, a redelivery or a replay was sealed earlier than the highest one.
      Checked before *duplicate* and *conflict*.
    - **replay**: ``seq`` is at or below the highest number, not an outstanding gap,
      and not recently accepted (it was settled long ago, or is below the first
      number this tracker saw). A valid signature on it means someone re-sent a
      captured batch.

    A gateway never reuses a number (the outbox persists it), so these cases are
    disjoint. :meth:`classify` is pure; :meth:`record` also updates the state and
    must be called only once the batch has been stored, so that a failed store and
    the broker's redelivery are not mistaken for a duplicate. State is small and
    JSON-able (:meth:`to_json`/:meth:`from_json`) so a receiver can persist it;
    a fresh tracker treats everything below its first number as a replay.

    Memory is bounded per gateway, in flat arrays: the ``remember`` most recent
    accepted numbers with their digests (49 bytes each; default ``2 ×
    duplicate_window_seq``) — a number that fell out of them is *replay* rather than
    *duplicate* or *conflict*, for a receiver that can ask its store to settle it —
    and at most ``max_gap_ranges`` outstanding gap ranges (16 bytes each); the oldest
    are then given up as lost (counted in :attr:`lost`). Both can be lowered on a
    running tracker (the newest are kept).
    """

    def __init__(
        self,
        *,
        duplicate_window_s: float = 3600.0,
        duplicate_window_seq: int = 10_000,
        max_gap_ranges: int = 10_000,
        remember: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._win_s = duplicate_window_s
        self._win_seq = duplicate_window_seq
        self._max_gaps = max_gap_ranges
        self._remember = 2 * duplicate_window_seq if remember is None else remember
        if self._remember < 1 or self._max_gaps < 1:
            raise ValueError("remember and max_gap_ranges must be at least 1")
        self._clock = clock
        self._gw: dict[str, _Gateway] = {}
        self.lost = 0

    @property
    def remember(self) -> int:
        """Recent numbers kept per gateway with their digests (see the class doc)."""
        return self._remember

    @remember.setter
    def remember(self, n: int) -> None:
        if n < 1:
            raise ValueError("remember must be at least 1")
        if n < self._remember:
            for st in self._gw.values():
                st.keep_newest(n)
        self._remember = n

    @property
    def max_gap_ranges(self) -> int:
        """Outstanding gap ranges kept per gateway (see the class doc)."""
        return self._max_gaps

    @max_gap_ranges.setter
    def max_gap_ranges(self, n: int) -> None:
        if n < 1:
            raise ValueError("max_gap_ranges must be at least 1")
        self._max_gaps = n
        for st in self._gw.values():
            self._cap_gaps(st)

    def classify(
        self,
        gateway: str,
        seq: int,
        now: float | None = None,
        digest: bytes | None = None,
        sealed: int | None = None,
    ) -> SeqVerdict:
        """The verdict for ``seq`` (of a payload with ``digest``, sealed at ``sealed`` µs)
        without changing any state."""
        t = self._clock() if now is None else now
        st = self._gw.get(gateway)
        if st is None:
            return SeqVerdict(SeqKind.NEW, gateway, seq)
        if seq > st.high:
            gaps = ((st.high + 1, seq - 1),) if seq > st.high + 1 else ()
            return SeqVerdict(SeqKind.NEW, gateway, seq, gaps)
        if sealed is not None and st.high_sealed is not None and sealed > st.high_sealed:
            return SeqVerdict(SeqKind.RESET, gateway, seq)
        i = st.slot(seq)
        if i is not None and t - st.at[i] <= self._win_s and st.high - seq <= self._win_seq:
            known = st.digest_at(i)
            if digest is not None and known is not None and known != _digest32(digest):
                return SeqVerdict(SeqKind.CONFLICT, gateway, seq)
            return SeqVerdict(SeqKind.DUPLICATE, gateway, seq)
        if self._gap_index(st, seq) is not None:
            return SeqVerdict(SeqKind.GAP_FILL, gateway, seq)
        return SeqVerdict(SeqKind.REPLAY, gateway, seq)

    def record(
        self,
        gateway: str,
        seq: int,
        now: float | None = None,
        digest: bytes | None = None,
        sealed: int | None = None,
    ) -> SeqVerdict:
        """Classify ``seq`` and, if it is new or fills a gap, accept it (with ``digest``
        and ``sealed``)."""
        t = self._clock() if now is None else now
        v = self.classify(gateway, seq, t, digest, sealed)
        st = self._gw.get(gateway)
        if v.kind is SeqKind.NEW:
            if st is None:
                st = self._gw[gateway] = _Gateway(high=seq, baseline=seq, high_sealed=sealed)
            else:
                for lo, hi in v.new_gaps:
                    st.gap_lo.append(lo)
                    st.gap_hi.append(hi)
                st.high = seq
                st.high_sealed = sealed
                self._cap_gaps(st)
        elif v.kind is SeqKind.GAP_FILL:
            assert st is not None  # a gap implies state
            self._fill(st, seq)
        else:
            return v
        st.remember(seq, t, digest, self._remember)
        return v

    observe = record

    def gaps(self, gateway: str) -> list[tuple[int, int]]:
        """Outstanding missing ranges ``(first, last)`` for ``gateway``, oldest first."""
        st = self._gw.get(gateway)
        return [] if st is None else list(zip(st.gap_lo, st.gap_hi, strict=True))

    def high(self, gateway: str) -> int | None:
        st = self._gw.get(gateway)
        return None if st is None else st.high

    def high_sealed(self, gateway: str) -> int | None:
        """``sealed`` of the highest batch accepted from ``gateway``, when known."""
        st = self._gw.get(gateway)
        return None if st is None else st.high_sealed

    def restore(self, gateway: str, high: int, sealed: int | None) -> None:
        """Take ``high`` (sealed at ``sealed``) as settled, e.g. the highest number a store
        holds when a receiver starts; numbers below it are then *replay* (or *reset*),
        for the receiver to look up. Never lowers what is known."""
        st = self._gw.get(gateway)
        if st is None:
            self._gw[gateway] = _Gateway(high=high, baseline=high, high_sealed=sealed)
        elif high > st.high:
            st.high, st.high_sealed = high, sealed

    def forget(self, gateway: str) -> None:
        """Drop all state for a gateway (re-enrolled after its state was wiped)."""
        self._gw.pop(gateway, None)

    def _cap_gaps(self, st: _Gateway) -> None:
        """Give up the oldest gaps beyond ``max_gap_ranges`` as lost."""
        excess = len(st.gap_lo) - self._max_gaps
        if excess > 0:
            self.lost += sum(st.gap_hi[:excess]) - sum(st.gap_lo[:excess]) + excess
            del st.gap_lo[:excess], st.gap_hi[:excess]

    @staticmethod
    def _gap_index(st: _Gateway, seq: int) -> int | None:
        i = bisect_right(st.gap_lo, seq) - 1
        return i if i >= 0 and st.gap_lo[i] <= seq <= st.gap_hi[i] else None

    def _fill(self, st: _Gateway, seq: int) -> None:
        i = self._gap_index(st, seq)
        assert i is not None
        lo, hi = st.gap_lo[i], st.gap_hi[i]
        if lo == hi:
            del st.gap_lo[i], st.gap_hi[i]
        elif seq == lo:
            st.gap_lo[i] = seq + 1
        elif seq == hi:
            st.gap_hi[i] = seq - 1
        else:  # split in two
            st.gap_hi[i] = seq - 1
            st.gap_lo.insert(i + 1, seq + 1)
            st.gap_hi.insert(i + 1, hi)

    def to_json(self) -> dict[str, Any]:
        """State to persist (receiver times are not portable, so recent lists go too)."""
        return {
            gw: {"high": st.high, "baseline": st.baseline, "gaps": [list(g) for g in self.gaps(gw)]}
            | ({} if st.high_sealed is None else {"high_sealed": st.high_sealed})
            for gw, st in self._gw.items()
        }

    def load_json(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`to_json` output; restored numbers count as settled long ago."""
        for gw, s in state.items():
            gaps = [(int(lo), int(hi)) for lo, hi in s["gaps"]]
            self._gw[gw] = _Gateway(
                high=int(s["high"]),
                baseline=int(s["baseline"]),
                gap_lo=array("q", (lo for lo, _ in gaps)),
                gap_hi=array("q", (hi for _, hi in gaps)),
                high_sealed=None if s.get("high_sealed") is None else int(s["high_sealed"]),
            )


# -- captures of batches --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Captured:
    """One captured payload: where it was in the file, its bytes, when it was received."""

    where: str
    payload: bytes
    received_s: float | None = None


def read_capture(data: bytes) -> list[Captured]:
    """Split a capture file into payloads. Two formats are understood:

    - **JSON lines**, one object per line:
      ``{"payload_b64": "<base64 of the exact payload>", "topic": …, "received_us": …}``
      (``topic`` and ``received_us`` optional);
    - **payload stream**: payloads one after another, each followed by a newline,
      as ``mosquitto_sub -t TOPIC`` prints them (one payload alone is also such a
      file, with or without a final newline). A line starting ``{"alg"`` is a
      signature line and closes the payload; a body line not followed by one is a
      payload on its own, which verification then names ``unsigned`` or
      ``truncated``.
    """
    lines = data.split(b"\n")
    if lines and lines[-1] in (b"", b"\r"):
        lines.pop()
    try:
        first = loads_bounded(lines[0]) if lines else None
    except ValueError:
        first = None
    out: list[Captured] = []
    if isinstance(first, dict) and "payload_b64" in first:
        for i, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                rec = loads_bounded(line)
                payload = base64.b64decode(rec["payload_b64"], validate=True)
                rx = rec.get("received_us")
                received = None if rx is None else float(rx) / 1e6
            except (ValueError, KeyError, TypeError, OverflowError):
                out.append(Captured(f"line {i}", b""))  # verifies as malformed/truncated
                continue
            out.append(Captured(f"line {i}", payload, received))
        return out
    pending: tuple[int, bytes] | None = None
    for i, line in enumerate(lines, start=1):
        if line.startswith(_SIG_PREFIX):
            if pending is None:
                out.append(Captured(f"line {i}", b"\n" + line))
            else:
                out.append(Captured(f"line {pending[0]}", pending[1] + b"\n" + line))
                pending = None
        else:
            if pending is not None:
                out.append(Captured(f"line {pending[0]}", pending[1]))
            pending = (i, line)
    if pending is not None:
        out.append(Captured(f"line {pending[0]}", pending[1]))
    return out


@dataclass(slots=True)
class CaptureReport:
    """Result of :func:`verify_capture`: problems make it fail, notes do not."""

    batches: list[VerifiedBatch] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_capture(
    captured: Iterable[Captured],
    keys: Mapping[str, Ed25519PublicKey],
    *,
    tracker: SequenceTracker | None = None,
    gateway_of: Mapping[str, str] | None = None,
) -> CaptureReport:
    """Verify each captured payload, then the sequence continuity per gateway.

    ``gateway_of`` binds key ids to the gateway each key belongs to (as the ingest's
    keyring does, from ``{gateway}.pub`` file names); a key id it does not name may
    sign for any gateway. Problems: any :class:`BatchError` (by kind),
    ``key_mismatch`` (a batch naming a gateway its key is not registered for),
    ``replay``, ``conflict`` (a number seen twice with different bytes, which a gateway
    never does), ``reset`` (a number at or below the highest, sealed after it), and
    ``gap`` (numbers still missing at the end). Notes: ``duplicate`` (identical
    redelivery). Without receive times in the capture, only the sequence-distance
    window of the tracker separates a duplicate from a replay.
    """
    tr = SequenceTracker() if tracker is None else tracker
    rep = CaptureReport()
    digests: dict[tuple[str, int], bytes] = {}
    for c in captured:
        try:
            b = verify_batch(c.payload, keys)
        except BatchError as exc:
            rep.problems.append(f"{c.where}: {exc.kind}: {exc.detail}")
            continue
        owner = None if gateway_of is None else gateway_of.get(b.kid)
        if owner is not None and owner != b.gateway:
            rep.problems.append(
                f"{c.where}: key_mismatch: batch names gateway {b.gateway}, "
                f"its key {b.kid} is registered for {owner}"
            )
            continue
        rep.batches.append(b)
        digest = hashlib.sha256(c.payload).digest()
        rx = 0.0 if c.received_s is None else c.received_s
        v = tr.record(b.gateway, b.seq, rx, digest, b.sealed)
        at = f"{c.where}: gateway {b.gateway} seq {b.seq}"
        earlier = digests.setdefault((b.gateway, b.seq), digest)
        if v.kind is SeqKind.RESET:
            rep.problems.append(f"{at}: reset: numbered below the highest but sealed after it")
        elif earlier != digest or v.kind is SeqKind.CONFLICT:
            rep.problems.append(f"{at}: conflict: same sequence number, different content")
        elif v.kind is SeqKind.REPLAY:
            rep.problems.append(f"{at}: replay: an old batch was sent again")
        elif v.kind is SeqKind.DUPLICATE:
            rep.notes.append(f"{at}: duplicate: identical redelivery")
    for gw in sorted({b.gateway for b in rep.batches}):
        for lo, hi in tr.gaps(gw):
            span = str(lo) if lo == hi else f"{lo}..{hi}"
            rep.problems.append(f"gateway {gw}: gap: sequence numbers {span} are missing")
    return rep
