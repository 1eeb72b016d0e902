"""Batch bodies (docs/wire.md): the seal function the outbox calls on every put."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from gateway.wire.signing import Signer

SCHEMA_VERSION = 1
CONTENT_KEY = {"data": "readings", "alarm": "alarms", "event": "events"}

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def topic_base(prefix: str, site: str, gateway: str) -> str:
    """``{prefix}/v1/{site}/{gateway}``; kinds and ``status``/``cmd`` hang below it."""
    return f"{prefix}/v1/{site}/{gateway}"


def make_sealer(
    gateway: str, site: str, signer: Signer
) -> Callable[[str, int, int, list[dict[str, Any]]], bytes]:
    """The outbox's seal function: body JSON for ``kind``, signed."""

    def seal(kind: str, seq: int, sealed_us: int, records: list[dict[str, Any]]) -> bytes:
        body = {
            "v": SCHEMA_VERSION,
            "type": kind,
            "gateway": gateway,
            "site": site,
            "seq": seq,
            "sealed": sealed_us,
            CONTENT_KEY[kind]: records,
        }
        return signer.sign_payload(_dumps(body).encode("utf-8"))

    return seal
