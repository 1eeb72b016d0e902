"""Where each device's rule and alarm state survives a restart: one small JSON file each.

Written atomically (temporary file, then rename) when an alarm changes state and
once a minute, read once when the device task is built. An unreadable file is
logged and the device starts with fresh rule state; it never stops the gateway.

A write that fails (a full disk, a read-only state directory) is logged once per
device as an error, at debug level while it keeps failing, and once as
"written again"; it never raises: the device keeps its state in memory and the
next save writes it. :meth:`RuleStore.save_all` takes the snapshots on the event
loop (the state belongs to it) and encodes and writes them in a worker thread, so
a big site's minute save does not stall the loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gateway.metrology.pipeline import DeviceMetrology

log = logging.getLogger("metrogate.runtime")


class RuleStore:
    """Rule state files under ``directory`` (``{device}.json``)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.failures = 0
        """Writes that failed since start."""
        self._failing: set[str] = set()  # devices whose last write failed
        self._lock = threading.Lock()  # one writer of the files at a time (loop or thread)

    def restore(self, metro: DeviceMetrology) -> None:
        """Load ``metro``'s saved state, if any; a broken file is logged and ignored.

        Whatever the file holds (bytes, JSON nested past the parser's depth, a value of
        the wrong type or size somewhere inside), the device starts: with the whole saved
        state or, when any of it cannot be taken, with none of it.
        """
        saved = self.directory / f"{metro.device}.json"
        if not saved.exists():
            return
        fresh = metro.to_state()
        try:
            metro.load_state(json.loads(saved.read_bytes()))
        except Exception as exc:  # a best-effort file must never stop the start
            metro.load_state(fresh)  # never half a state
            why = str(exc)[:200] or type(exc).__name__
            log.error("rule state of %s unreadable (%s); starting fresh", metro.device, why)

    def save(self, metro: DeviceMetrology) -> bool:
        """Write ``metro``'s state atomically, now; False (logged) when it could not be."""
        return self._write(metro.device, metro.to_state())

    async def save_all(self, metros: Iterable[DeviceMetrology]) -> None:
        """Write every state: snapshots here, encoding and files in a worker thread."""
        snapshots = []
        for metro in metros:
            snapshots.append((metro.device, metro.to_state()))
            await asyncio.sleep(0)  # one device at a time: the loop runs in between
        if snapshots:
            await asyncio.to_thread(self._write_all, snapshots)

    def _write_all(self, snapshots: list[tuple[str, dict[str, Any]]]) -> None:
        for device, state in snapshots:
            self._write(device, state)

    def _write(self, device: str, state: dict[str, Any]) -> bool:
        with self._lock:
            return self._write_locked(device, state)

    def _write_locked(self, device: str, state: dict[str, Any]) -> bool:
        tmp = self.directory / f"{device}.json.tmp"
        try:
            text = json.dumps(state)
            self.directory.mkdir(exist_ok=True)
            tmp.write_text(text)
            os.replace(tmp, self.directory / f"{device}.json")
        except (OSError, ValueError, TypeError) as exc:
            self.failures += 1
            if device not in self._failing:
                self._failing.add(device)
                log.error("rule state of %s not saved (%s); kept in memory, retried", device, exc)
            else:
                log.debug("rule state of %s still not saved (%s)", device, exc)
            return False
        if device in self._failing:
            self._failing.discard(device)
            log.info("rule state of %s saved again", device)
        return True
