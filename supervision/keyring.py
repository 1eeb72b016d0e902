"""Registered gateway public keys: which key may sign for which gateway.

A keys directory holds ``<gateway-id>.pub`` (PEM, as written by ``metrogate
keygen`` as ``gateway.pub``) or ``<gateway-id>/gateway.pub``. A batch verifies only
if its key id is registered *for the gateway named in its topic*.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.wire.keys import KeyFileError, load_public_key, registered_key_files
from gateway.wire.signing import key_id

__all__ = ["Keyring"]


@dataclass(frozen=True, slots=True)
class Keyring:
    """Public keys by key id, and the gateway each key belongs to."""

    keys: Mapping[str, Ed25519PublicKey]
    gateway_of: Mapping[str, str]

    @property
    def gateways(self) -> frozenset[str]:
        return frozenset(self.gateway_of.values())

    @classmethod
    def from_keys(cls, by_gateway: Mapping[str, Ed25519PublicKey]) -> Keyring:
        keys = {key_id(k): k for k in by_gateway.values()}
        return cls(keys, {key_id(k): g for g, k in by_gateway.items()})

    @classmethod
    def load(cls, directory: Path) -> Keyring:
        """Load every registered key; :class:`gateway.wire.keys.KeyFileError` on a bad file."""
        if not directory.is_dir():
            raise KeyFileError(directory, "keys directory does not exist")
        found = {g: load_public_key(f) for g, f in registered_key_files(directory).items()}
        return cls.from_keys(found)
