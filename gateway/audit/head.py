"""The signed head of an event log (``events.log.counter``): where the log ends.

The hash chain shows entries deleted from the start or the middle of a log; only a
record kept beside it shows entries cut from its end. The head is that record: the
number ``n`` and line hash ``last`` of the last entry written, **signed with the
gateway key**, so a cut log with a rewritten head no longer verifies. It is
rewritten atomically (temp file, fsync, rename, fsync of the directory) after
every write to the log.

It also carries the outbox's sequence mark (:class:`SeqMark`), so that batch
sequence numbers never go back even when ``outbox.db`` is lost (docs/trust.md,
"Sequence numbers never go back").

Format: a signed payload as on the wire (docs/wire.md): a body line, a newline, a
signature line over the body bytes::

    {"last":"<sha256>","n":7,"outbox":{"boot":"<boot id>","clean":false,"events":7,
     "next":120,"reserved":10120},"ts":<UTC µs>,"type":"event_log_head","v":1}
    {"alg":"Ed25519","kid":"…","sig":"…"}

(the body is one line; ``outbox`` is absent until an outbox recorded a mark).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.common.files import write_atomic
from gateway.wire.signing import SignatureError, Signer, verify_payload

__all__ = ["HEAD_TYPE", "HeadError", "LogHead", "SeqMark", "encode_head", "read_head"]

HEAD_TYPE = "event_log_head"
_MAX_HEAD_BYTES = 4096  # a head is ~300 bytes; anything much larger is not one


@dataclass(frozen=True, slots=True)
class SeqMark:
    """What the outbox last recorded about its sequence numbers (docs/trust.md).

    ``next``: its next sequence number when recorded. ``reserved``: no batch is
    sealed with a sequence number at or above it before a higher mark is durable.
    ``events``: the highest event-log entry number it had sealed into an event
    batch (0: none). ``clean``: recorded when the outbox closed cleanly, so
    ``next`` is then exact. ``boot``: the kernel's boot id when recorded ("" when
    unknown): a crash without a reboot loses nothing the outbox committed.
    """

    next: int
    reserved: int
    events: int
    clean: bool
    boot: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "next": self.next,
            "reserved": self.reserved,
            "events": self.events,
            "clean": self.clean,
            "boot": self.boot,
        }


@dataclass(frozen=True, slots=True)
class LogHead:
    """A verified head: the last entry's number and line hash, and the outbox mark."""

    n: int
    last: str
    seq: SeqMark | None = None
    kid: str = ""


class HeadError(Exception):
    """A head file that cannot be trusted; ``kind`` is the problem kind of docs/trust.md:
    ``counter_unsigned`` (no valid signature line: written by hand, or by a metrogate
    before heads were signed), ``unknown_key`` (signed with a key not among the trusted
    ones), ``counter_forged`` (the signature does not match: the file was altered),
    ``counter_malformed`` (signed, but not a head)."""

    def __init__(self, path: Path, kind: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.kind = kind
        self.message = message


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def encode_head(head: LogHead, signer: Signer, *, ts_us: int) -> bytes:
    """The signed bytes of ``head`` (what :func:`write_head` stores)."""
    body: dict[str, Any] = {"v": 1, "type": HEAD_TYPE, "n": head.n, "last": head.last}
    body["ts"] = ts_us
    if head.seq is not None:
        body["outbox"] = head.seq.as_json()
    return signer.sign_payload(_canonical(body)) + b"\n"


def write_head(path: Path, head: LogHead, signer: Signer, *, ts_us: int) -> None:
    """Replace the head file atomically and durably (temp, fsync, rename, fsync dir)."""
    write_atomic(path, encode_head(head, signer, ts_us=ts_us), 0o640)


def _int(obj: Mapping[str, Any], key: str, *, low: int = 0) -> int:
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{key!r} is not an integer >= {low}")
    return value


def parse_head(path: Path, data: bytes, keys: Mapping[str, Ed25519PublicKey]) -> LogHead:
    """Verify and parse the bytes of a head file; raises :class:`HeadError`."""
    if len(data) > _MAX_HEAD_BYTES:
        raise HeadError(path, "counter_malformed", f"counter file is {len(data)} bytes")
    payload = data[:-1] if data.endswith(b"\n") else data
    try:
        body, kid = verify_payload(payload, keys)
    except SignatureError as exc:
        if exc.kind in ("unsigned", "malformed"):
            raise HeadError(
                path,
                "counter_unsigned",
                "counter file is not signed (written by hand, or by a metrogate that did "
                "not sign it yet; see 'metrogate audit reinit')",
            ) from None
        if exc.kind == "unknown_key":
            raise HeadError(
                path, "unknown_key", "counter file is signed with a key not given"
            ) from None
        raise HeadError(
            path, "counter_forged", f"counter signature does not verify ({exc.kind})"
        ) from None
    try:
        obj = json.loads(body)
        if not isinstance(obj, dict) or obj.get("type") != HEAD_TYPE or obj.get("v") != 1:
            raise ValueError("not an event-log head")
        last = obj.get("last")
        if not isinstance(last, str) or len(last) != 64:
            raise ValueError("'last' is not a sha256 hex digest")
        seq = None
        if "outbox" in obj:
            mark = obj["outbox"]
            if not isinstance(mark, dict) or not isinstance(mark.get("clean"), bool):
                raise ValueError("'outbox' is not a sequence mark")
            seq = SeqMark(
                next=_int(mark, "next", low=1),
                reserved=_int(mark, "reserved", low=1),
                events=_int(mark, "events"),
                clean=mark["clean"],
                boot=str(mark.get("boot", "")),
            )
        return LogHead(_int(obj, "n"), last, seq, kid)
    except (ValueError, UnicodeDecodeError) as exc:
        raise HeadError(path, "counter_malformed", f"counter file is not a head ({exc})") from None


def read_head(path: Path, keys: Mapping[str, Ed25519PublicKey]) -> LogHead | None:
    """The verified head stored at ``path``, or None when there is no such file.

    Raises :class:`HeadError` when the file exists but cannot be trusted.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return parse_head(path, data, keys)
