"""Batch bodies (docs/wire.md): the seal function the outbox calls on every put."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final

from gateway.wire.signing import Signer

SCHEMA_VERSION = 1
CONTENT_KEY: Final[Mapping[str, str]] = MappingProxyType(
    {"data": "readings", "alarm": "alarms", "event": "events"}
)
"""The key of a batch body that holds its records, by batch type (docs/wire.md): the
one definition the sealer, the verifier and the ingest's content check share."""

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
