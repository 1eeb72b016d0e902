"""Stores the ingest service writes to, behind one small interface.

A :class:`Sink` turns a parsed batch into its own opaque *chunk* (``encode``, pure
and synchronous, called once per message) and writes a list of chunks as one
transaction-like request (``write``). ``write`` either returns — the store accepted
everything — or raises :class:`StoreUnavailable` (transient: retry the same chunks
later) or :class:`StoreRejected` (the store refused the content: retrying the same
request cannot succeed). Writes are idempotent, so retrying after an ambiguous
failure is always safe.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from supervision.model import Batch, Status

__all__ = ["Chunk", "Sink", "StoreError", "StoreRejected", "StoreUnavailable"]

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
