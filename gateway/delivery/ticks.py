"""One data batch per scheduling tick: the polls that complete together are sealed together.

Devices that share a poll period are due at the same instants, so their polls end
within a few milliseconds of each other. :class:`TickBatcher` collects the data
records the device tasks emit and hands them to the outbox as one batch
``linger`` seconds after the first of them came (``mqtt.batch.linger``), or at once
when ``max_records`` are waiting. Sealing, storing and publishing a batch costs the
same whether it holds one poll or ten (a signature, a transaction, a PUBACK), so ten
devices polled every 10 ms cost 100 batches a second instead of 1,000, and a reading
waits in memory at most ``linger`` before it is durable. ``linger=0`` seals every poll
on its own, as it comes.

Each batch carries a ``stream`` for the outbox's thinning: the device when it holds
one device's records, else a short digest of the set of devices it holds (devices
polled at different periods meet in different sets, each thinned on its own).

The put is the daemon's :class:`~gateway.delivery.writer.OutboxWriter`, which never
raises: what a full or failing disk costs is its business (held, then counted lost).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from typing import Any

__all__ = ["TickBatcher"]

Put = Callable[[list[dict[str, Any]], str | None], object]
"""``put(records, stream)``: store one data batch; never raises (the outbox writer)."""


class TickBatcher:
    """Collects the data records of one tick (see the module docstring).

    :meth:`add` from the device tasks; :meth:`run` is the task that seals a batch
    ``linger`` after it opened; :meth:`flush` seals what is waiting now (at shutdown).
    """

    def __init__(self, put: Put, *, linger: float, max_records: int) -> None:
        if linger < 0 or max_records < 1:
            raise ValueError("linger must be >= 0 and max_records >= 1")
        self._put = put
        self.linger = linger
        self._max_records = max_records
        self._records: list[dict[str, Any]] = []
        self._devices: dict[str, None] = {}  # in the order they came
        self._opened = asyncio.Event()
        self.batches = 0

    def add(self, records: list[dict[str, Any]], device: str) -> None:
        """The data records of one poll of ``device``."""
        if not records:
            return
        self._records += records
        self._devices[device] = None
        if self.linger == 0 or len(self._records) >= self._max_records:
            self.flush()
        elif not self._opened.is_set():
            self._opened.set()

    def flush(self) -> None:
        """Seal what is waiting into one batch now (nothing when nothing waits)."""
        self._opened.clear()
        if not self._records:
            return
        records, self._records = self._records, []
        devices, self._devices = list(self._devices), {}
        self._put(records, _stream(devices))
        self.batches += 1

    async def run(self) -> None:
        """Seal each batch ``linger`` after its first records came; until cancelled."""
        if self.linger == 0:
            return  # every add() puts at once
        while True:
            await self._opened.wait()
            await asyncio.sleep(self.linger)
            self.flush()


def _stream(devices: list[str]) -> str:
    if len(devices) == 1:
        return devices[0]
    digest = hashlib.blake2b("\n".join(sorted(devices)).encode(), digest_size=6).hexdigest()
    return f"set:{digest}"
