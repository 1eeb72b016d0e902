"""Software identification of the legally relevant core (OIML D 31, WELMEC 7.2).

The identity is the name, the version and one SHA-256 over the legally relevant
packages: every ``.py`` file under the folders of :data:`LEGAL_PACKAGES`. The digest
is reproducible with standard tools: it is the SHA-256 of a manifest with one line
per file, sorted by relative path (byte order)::

    <sha256 of file, hex>  <relative path, '/'-separated>\\n

which is exactly what ``sha256sum`` prints, so from the install root
``LC_ALL=C sha256sum $(files) | sort -k2 | sha256sum`` gives the same value.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gateway

NAME = "metrogate"

LEGAL_PACKAGES = (
    "drivers",
    "gateway/acquisition",
    "gateway/audit",
    "gateway/config/models",
    "gateway/delivery",
    "gateway/metrology",
    "gateway/wire",
)
"""Packages (folders under the install root) whose every ``.py`` file is legally relevant:
acquisition, decoding, instrument and point-map parameters, correction maths and rules,
sealing, storage and transmission, signing, the event log. A file belongs to the
identity by where it lives, so moving one out of these folders changes the file list
(``tests/unit/test_software_id.py`` pins it)."""

__all__ = ["LEGAL_PACKAGES", "NAME", "SoftwareId", "compute_software_id", "legal_files"]


@dataclass(frozen=True, slots=True)
class SoftwareId:
    """Name, version and digest of the legally relevant software, with the files covered."""

    name: str
    version: str
    sha256: str
    files: tuple[str, ...]

    @property
    def short(self) -> str:
        """First 16 hex digits of the digest, as event-log entries carry it."""
        return self.sha256[:16]

    def as_dict(self) -> dict[str, Any]:
        """The ``software`` object of the birth message (docs/wire.md)."""
        return {"name": self.name, "version": self.version, "sha256": self.sha256}

    def __str__(self) -> str:
        return f"{self.name} {self.version} sha256:{self.sha256}"


def install_root() -> Path:
    """The directory that holds the ``gateway`` and ``drivers`` packages."""
    return Path(gateway.__file__).resolve().parent.parent


def legal_files(root: Path) -> list[str]:
    """Relative ``/``-paths of the legally relevant files under ``root``, sorted."""
    found: set[str] = set()
    for package in LEGAL_PACKAGES:
        folder = root / package
        if not folder.is_dir():
            continue
        for f in folder.rglob("*.py"):
            if "__pycache__" not in f.parts and f.is_file():
                found.add(f.relative_to(root).as_posix())
    # sort by UTF-8 bytes so the order matches `LC_ALL=C sort`
    return sorted(found, key=lambda s: s.encode())


def compute_software_id(root: Path | None = None, *, version: str | None = None) -> SoftwareId:
    """Identify the software installed at ``root`` (default: this installation).

    Raises ``FileNotFoundError`` when no legally relevant file exists there: an
    identity over nothing would identify nothing.
    """
    base = install_root() if root is None else root
    files = legal_files(base)
    if not files:
        raise FileNotFoundError(f"no legally relevant modules under {base}")
    manifest = hashlib.sha256()
    for rel in files:
        digest = hashlib.sha256((base / rel).read_bytes()).hexdigest()
        manifest.update(f"{digest}  {rel}\n".encode())
    return SoftwareId(
        name=NAME,
        version=gateway.__version__ if version is None else version,
        sha256=manifest.hexdigest(),
        files=tuple(files),
    )
