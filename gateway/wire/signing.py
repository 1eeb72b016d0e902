"""Ed25519 signing of batches: the two-line signed payload of docs/wire.md.

``sign_payload(body, key)`` returns ``body + b"\\n" + signature-json``;
``verify_payload(payload, keys)`` checks it and returns the body bytes. The
signature covers exactly the body bytes a receiver gets.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ALG = "Ed25519"


class SignatureError(Exception):
    """A signed payload failed verification; ``kind`` names the failure."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind


def key_id(public_key: Ed25519PublicKey) -> str:
    """First 16 hex digits of SHA-256 over the raw 32-byte public key."""
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Signer:
    """A private key with its key id, ready to sign bodies."""

    private_key: Ed25519PrivateKey
    kid: str

    @classmethod
    def from_private_key(cls, key: Ed25519PrivateKey) -> Signer:
        return cls(key, key_id(key.public_key()))

    def sign_payload(self, body: bytes) -> bytes:
        """The signed payload: ``body``, a newline, then the signature line."""
        sig = base64.b64encode(self.private_key.sign(body)).decode("ascii")
        trailer = f'{{"alg":"{ALG}","kid":"{self.kid}","sig":"{sig}"}}'
        return body + b"\n" + trailer.encode("ascii")


def split_payload(payload: bytes) -> tuple[bytes, dict[str, str]]:
    """Split a signed payload into its body bytes and its parsed signature line."""
    cut = payload.rfind(b"\n")
    if cut < 0:
        raise SignatureError("unsigned", "payload has no signature line")
    body, trailer = payload[:cut], payload[cut + 1 :]
    try:
        sig = json.loads(trailer)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SignatureError("malformed", f"signature line is not JSON ({exc})") from None
    if not isinstance(sig, dict) or not all(
        isinstance(sig.get(k), str) for k in ("alg", "kid", "sig")
    ):
        raise SignatureError("malformed", "signature line lacks alg, kid or sig")
    return body, sig


def verify_payload(payload: bytes, keys: Mapping[str, Ed25519PublicKey]) -> tuple[bytes, str]:
    """Check a signed payload against known public keys (by key id).

    Returns ``(body, kid)``; raises :class:`SignatureError` with kind ``unsigned``,
    ``malformed``, ``unknown_key``, ``bad_algorithm`` or ``bad_signature``.
    """
    body, sig = split_payload(payload)
    if sig["alg"] != ALG:
        raise SignatureError("bad_algorithm", f"algorithm {sig['alg']!r} is not {ALG}")
    key = keys.get(sig["kid"])
    if key is None:
        raise SignatureError("unknown_key", f"no public key with id {sig['kid']}")
    try:
        raw_sig = base64.b64decode(sig["sig"], validate=True)
        key.verify(raw_sig, body)
    except (InvalidSignature, ValueError):
        raise SignatureError("bad_signature", "signature does not match the body") from None
    return body, sig["kid"]
