"""Crash child for "logged means published": a gateway killed between log and outbox.

Usage: ``python event_crash_child.py CONFIG MARKER``

Runs the gateway of ``CONFIG`` until it is ready, records an ``outbox_drop`` event
carrying ``MARKER``, makes it durable in the event log (the writer's commit step),
prints ``logged <n>`` and SIGKILLs itself before the entry can be sealed into the
outbox — the window a crash can hit. Bounded: gives up after 30 s.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from gateway.acquisition.clock import ClockMonitor, SyncState
from gateway.config.loader import load_config
from gateway.daemon import Gateway


async def main(config: str, marker: str) -> None:
    gateway = Gateway(
        load_config(config), clock_monitor=ClockMonitor(probe=lambda: SyncState.SYNCHRONISED)
    )
    task = asyncio.create_task(gateway.run(asyncio.Event()), name="gateway")
    async with asyncio.timeout(30):
        await gateway.ready.wait()
    assert gateway.events is not None
    gateway.record_event("outbox_drop", {"marker": marker}, source="outbox")
    (entry,) = gateway.events.log.commit()  # durable in the log, not yet in the outbox
    print(f"logged {entry['n']}", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    await task  # never reached


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
