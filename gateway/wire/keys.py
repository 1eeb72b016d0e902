"""Per-gateway Ed25519 key files: generation, loading, permission checks.

A gateway owns one private key, ``gateway.key`` (PEM, PKCS#8, unencrypted, mode
0600), and hands the matching ``gateway.pub`` (PEM, SubjectPublicKeyInfo) to the
supervision platform. The key id (``kid``) is :func:`gateway.wire.signing.key_id` of the
public key. A private key file readable by group or others is refused: a copied key
lets anyone forge evidence in the gateway's name.
"""

from __future__ import annotations

import base64
import logging
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)

from gateway.common.files import write_atomic
from gateway.wire.signing import Signer, key_id

log = logging.getLogger("metrogate.keys")

PRIVATE_KEY_NAME = "gateway.key"
PUBLIC_KEY_NAME = "gateway.pub"

__all__ = [
    "PRIVATE_KEY_NAME",
    "PUBLIC_KEY_NAME",
    "KeyExistsError",
    "KeyFileError",
    "KeyPair",
    "KeyPermissionError",
    "KeyStoreError",
    "check_private_key_mode",
    "generate_keypair",
    "load_key_registry",
    "load_public_key",
    "load_public_keys",
    "load_signer",
    "public_key_base64",
    "public_key_from_text",
    "registered_key_files",
    "resolve_key_text",
]


class KeyStoreError(Exception):
    """Base class of key-file errors; ``path`` names the file concerned."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


class KeyPermissionError(KeyStoreError):
    """A private key file is readable or writable by group or others; ``mode`` is its mode."""

    def __init__(self, path: Path, mode: int) -> None:
        super().__init__(
            path,
            f"private key has mode {mode:04o}; it must not be accessible by group or others "
            f"(run: chmod 600 {path})",
        )
        self.mode = mode


class KeyFileError(KeyStoreError):
    """A key file is missing, unreadable, or not an Ed25519 key in PEM form."""


class KeyExistsError(KeyStoreError):
    """``generate_keypair`` would overwrite an existing private key."""


@dataclass(frozen=True, slots=True)
class KeyPair:
    """Where :func:`generate_keypair` wrote the keys, and the key id."""

    private_path: Path
    public_path: Path
    kid: str


def generate_keypair(directory: Path, *, overwrite: bool = False, name: str = "gateway") -> KeyPair:
    """Create a fresh Ed25519 key pair in ``directory`` (created 0700 if missing).

    Writes ``{name}.key`` (mode 0600) and ``{name}.pub`` (mode 0644), each
    atomically; ``name`` is ``gateway`` for a gateway's key and the operator id for
    an operator's. Raises :class:`KeyExistsError` if the private key exists and
    ``overwrite`` is false: replacing a key changes the owner's identity.
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    private_path = directory / f"{name}.key"
    public_path = directory / f"{name}.pub"
    if private_path.exists() and not overwrite:
        raise KeyExistsError(private_path, "a private key already exists (use --force to replace)")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    public_pem = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    write_atomic(private_path, private_pem, 0o600)
    write_atomic(public_path, public_pem, 0o644)
    return KeyPair(private_path, public_path, key_id(key.public_key()))


def check_private_key_mode(path: Path) -> None:
    """Raise :class:`KeyPermissionError` if group or others have any access to ``path``."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as exc:
        raise KeyFileError(path, f"cannot stat private key ({exc.strerror})") from None
    if mode & 0o077:
        raise KeyPermissionError(path, mode)


def load_signer(path: Path) -> Signer:
    """Load the gateway's private key from ``path`` into a :class:`Signer`.

    Refuses (:class:`KeyPermissionError`) a file accessible by group or others, and
    raises :class:`KeyFileError` for a missing file or anything but an unencrypted
    PEM Ed25519 private key.
    """
    check_private_key_mode(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(path, f"cannot read private key ({exc.strerror})") from None
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(path, f"not a PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(path, f"not an Ed25519 key ({type(key).__name__})")
    return Signer.from_private_key(key)


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Load one PEM Ed25519 public key; :class:`KeyFileError` if it is anything else."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(path, f"cannot read public key ({exc.strerror})") from None
    try:
        key = load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(path, f"not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(path, f"not an Ed25519 key ({type(key).__name__})")
    return key


def _raw_base64_key(text: str) -> bytes | None:
    s = text.strip()
    if len(s) != 44 or not s.endswith("="):
        return None
    try:
        raw = base64.b64decode(s, validate=True)
    except ValueError:
        return None
    return raw if len(raw) == 32 else None


def resolve_key_text(text: str, base: Path) -> str:
    """``text`` as given when it is a base64 key, else its path made absolute from ``base``."""
    if _raw_base64_key(text) is not None:
        return text.strip()
    path = Path(text.strip())
    return str(path if path.is_absolute() else base / path)


def public_key_from_text(text: str) -> Ed25519PublicKey:
    """A public key given in config: raw 32 bytes in base64, or a PEM file's path.

    Raises :class:`KeyFileError` when it is neither.
    """
    raw = _raw_base64_key(text)
    if raw is not None:
        return Ed25519PublicKey.from_public_bytes(raw)
    return load_public_key(Path(text.strip()))


def public_key_base64(key: Ed25519PublicKey) -> str:
    """The raw 32-byte public key in base64 (the form ``operators[].public_key`` takes)."""
    return base64.b64encode(key.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode("ascii")


def load_public_keys(paths_or_dir: Path | Iterable[Path]) -> dict[str, Ed25519PublicKey]:
    """Public keys by key id, from key files and/or directories.

    A directory contributes every ``*.pub`` file in it (not recursive); a file is
    loaded whatever its name. Raises :class:`KeyFileError` on the first bad file and
    when nothing at all was found, since verifying against no key can only fail.
    """
    paths = [paths_or_dir] if isinstance(paths_or_dir, Path) else list(paths_or_dir)
    keys: dict[str, Ed25519PublicKey] = {}
    for p in paths:
        files = sorted(p.glob("*.pub")) if p.is_dir() else [p]
        for f in files:
            key = load_public_key(f)
            keys[key_id(key)] = key
    if not keys:
        where = ", ".join(str(p) for p in paths) or "(no paths)"
        raise KeyFileError(Path(where), "no public keys found")
    return keys


def registered_key_files(directory: Path) -> dict[str, Path]:
    """The platform's key files in ``directory`` by gateway id: ``<gateway-id>.pub``
    and ``<gateway-id>/gateway.pub`` (the latter wins for the same id)."""
    found = {f.stem: f for f in sorted(directory.glob("*.pub"))}
    found |= {f.parent.name: f for f in sorted(directory.glob(f"*/{PUBLIC_KEY_NAME}"))}
    return found


def load_key_registry(
    paths: Iterable[Path],
) -> tuple[dict[str, Ed25519PublicKey], dict[str, str]]:
    """Public keys by key id, and the gateway each key is registered for (by key id).

    A directory is read as the platform's keys directory
    (:func:`registered_key_files`): each key belongs to the gateway its file names. A
    file named ``<gateway-id>.pub`` belongs to that gateway; a file given as
    ``gateway.pub`` (as ``metrogate keygen`` writes it) belongs to no gateway in
    particular, and so does a ``gateway.pub`` directly inside a directory. Raises
    :class:`KeyFileError` on a bad file and when no key was found.
    """
    paths = list(paths)
    keys: dict[str, Ed25519PublicKey] = {}
    gateway_of: dict[str, str] = {}
    for p in paths:
        files = registered_key_files(p) if p.is_dir() else {p.stem: p}
        for gateway, f in files.items():
            key = load_public_key(f)
            kid = key_id(key)
            keys[kid] = key
            if gateway != Path(PUBLIC_KEY_NAME).stem:
                gateway_of[kid] = gateway
    if not keys:
        where = ", ".join(str(p) for p in paths) or "(no paths)"
        raise KeyFileError(Path(where), "no public keys found")
    return keys, gateway_of


def ensure_signer(path: Path, *, create: bool) -> Signer:
    """The signing key at ``path``; created (with its ``.pub``) when missing and ``create``."""
    if not path.exists() and create:
        generate_keypair(path.parent)
        if path.name != PRIVATE_KEY_NAME:
            os.replace(path.parent / PRIVATE_KEY_NAME, path)
        log.warning("created a new signing key %s; hand its .pub to the platform", path)
    return load_signer(path)
