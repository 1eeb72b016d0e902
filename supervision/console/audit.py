"""Verification of event-log entries as the store holds them (audit view).

An entry's signed bytes are its canonical JSON body (sorted keys, compact, UTF-8;
``n``, ``ts``, ``type``, ``source``, ``software``, ``prev``, ``data``), signed by the
gateway's key (docs/trust.md); ``prev`` is the SHA-256 of the previous entry's line
(``body + TAB + signature line``). The store keeps every one of those parts, so the
console rebuilds the bytes, checks the signature against the gateway's registered key,
and checks that each entry follows the one before it (chain and numbering).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.wire.signing import SignatureError, verify_payload
from supervision.console.store import EventRow

__all__ = ["Checked", "verify_entries"]


@dataclass(frozen=True, slots=True)
class Checked:
    entry: EventRow
    status: str  # ok | bad_signature | unknown_key | no_key | malformed | broken_chain | gap
    detail: dict[str, Any]


def _canonical(obj: Any) -> bytes:
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def _line(e: EventRow) -> tuple[bytes, bytes] | None:
    """The entry's body bytes and signature line, or None when a part is missing."""
    if e.n is None or e.sig is None or e.prev is None or e.data is None:
        return None
    try:
        data = json.loads(e.data)
    except ValueError:
        return None
    body: dict[str, Any] = {
        "n": e.n,
        "ts": e.ts_ns // 1000,
        "type": e.type,
        "source": e.source,
        "software": e.software,
        "prev": e.prev,
        "data": data,
    }
    return _canonical(body), e.sig.encode()


def verify_entries(
    entries: Sequence[EventRow], keys: Mapping[str, Ed25519PublicKey]
) -> list[Checked]:
    """Each entry (in order of ``n``) with its verification status."""
    out: list[Checked] = []
    prev_line: bytes | None = None
    prev_n: int | None = None
    for e in sorted(entries, key=lambda x: (x.n if x.n is not None else -1, x.ts_ns)):
        parts = _line(e)
        if parts is None:
            out.append(Checked(e, "malformed", {}))
            prev_line, prev_n = None, e.n
            continue
        body, sig = parts
        status, detail = "ok", {}
        if not keys:
            status = "no_key"
        else:
            try:
                verify_payload(body + b"\n" + sig, keys)
            except SignatureError as exc:
                status = "unknown_key" if exc.kind == "unknown_key" else "bad_signature"
        line = body + b"\t" + sig
        if status == "ok" and prev_n is not None and e.n is not None:
            if e.n > prev_n + 1:
                status, detail = "gap", {"first": prev_n + 1, "last": e.n - 1}
            elif e.n <= prev_n:
                status = "reset"
            elif prev_line is not None and hashlib.sha256(prev_line).hexdigest() != e.prev:
                status = "broken_chain"
        out.append(Checked(e, status, detail))
        prev_line, prev_n = line, e.n
    return out
