"""Stores the ingest service writes to, behind one small interface.

A :class:`Sink` turns a parsed batch into its own opaque *chunk* (``encode``, pure
and synchronous, called once per message) and writes a list of chunks as one
transaction-like request (``write``). ``write`` either returns — the store accepted
everything — or raises :class:`StoreUnavailable` (transient: retry the same chunks
later) or :class:`StoreRejected` (the store refused the content: retrying the same
request cannot succeed). Writes are idempotent, so retrying after an ambiguous
failure is always safe.

Stored history is never rewritten: each batch record keeps the digest of its body
(:attr:`supervision.model.Batch.digest`), and a sink that can check it before writing
refuses the same ``(gateway, seq)`` with another digest (:class:`StoreConflict`). The
queries (:meth:`Sink.stored_batch`, :meth:`Sink.highs`, :meth:`Sink.event_numbers`) let
a restarted worker decide what its memory no longer holds; a store with a write-only
API raises :class:`LookupUnsupported` from them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from supervision.model import Batch, SecurityEvent, Status

__all__ = [
    "Chunk",
    "GatewayHigh",
    "LookupUnsupported",
    "Sink",
    "StoreConflict",
    "StoreError",
    "StoreRejected",
    "StoreUnavailable",
    "StoredBatch",
]

# What a sink's encode returns; opaque to everything but that sink.
Chunk = Any


class StoreError(Exception):
    """Base class of store failures; ``store`` names the endpoint."""

    def __init__(self, store: str, message: str) -> None:
        super().__init__(f"{store}: {message}")
        self.store = store


class StoreUnavailable(StoreError):
    """The store could not be reached or asked us to come back later (retry)."""


class StoreRejected(StoreError):
    """The store refused the content itself (a 4xx such as a field type conflict)."""


class StoreConflict(StoreRejected):
    """The store holds this batch number of this gateway with another digest."""


class LookupUnsupported(StoreError):
    """The store cannot answer queries (a write-only API such as VictoriaMetrics')."""


@dataclass(frozen=True, slots=True)
class StoredBatch:
    """What the store holds for one ``(gateway, seq)``: its digest (None when stored
    before digests were kept) and seal time."""

    digest: str | None
    sealed_us: int


@dataclass(frozen=True, slots=True)
class GatewayHigh:
    """The highest batch number a store holds for a gateway (and when it was sealed),
    and the highest event-log counter (and that entry's time)."""

    gateway: str
    seq: int | None = None
    sealed_us: int | None = None
    event_n: int | None = None
    event_ts_us: int | None = None


class Sink(Protocol):
    """A store. One writer at a time calls ``write``; ``encode`` may run concurrently."""

    name: str

    def encode(self, batch: Batch) -> Chunk:
        """The store's representation of one verified batch (pure).

        Readings the batch carries unchecked (``Batch.readings``, parsed with
        ``rows=False``) are checked here: raises :class:`~supervision.model.SchemaError`.
        """
        ...

    def encode_status(self, status: Status, received_ns: int) -> Chunk:
        """The store's representation of one gateway status message (pure)."""
        ...

    def encode_security(self, event: SecurityEvent) -> Chunk:
        """The store's record of one security event (pure)."""
        ...

    async def stored_batch(self, gateway: str, seq: int, sealed_us: int) -> StoredBatch | None:
        """What the store holds as batch ``seq`` of ``gateway`` (``sealed_us``: the seal
        time of the batch in hand, where an identical one would be), None if nothing.
        Raises StoreUnavailable, LookupUnsupported."""
        ...

    async def highs(self) -> list[GatewayHigh]:
        """The highest batch number and event-log counter stored, per gateway.
        Raises StoreUnavailable, LookupUnsupported."""
        ...

    async def event_numbers(self, gateway: str, lo: int, hi: int) -> set[int]:
        """The event-log counters in ``lo..hi`` stored for ``gateway``.
        Raises StoreUnavailable, LookupUnsupported."""
        ...

    def lines_in(self, chunk: Chunk) -> int:
        """How many points/rows a chunk holds (for batching by size)."""
        ...

    async def open(self) -> None:
        """Prepare the store (create database/tables when configured); may raise StoreError."""
        ...

    async def write(self, chunks: Sequence[Chunk]) -> None:
        """Write all chunks; returns only once the store accepted them."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
