"""Cancellation that library code can swallow on Python 3.11, made to stick."""

from __future__ import annotations

import asyncio


def reraise_pending_cancel() -> None:
    """Raise ``CancelledError`` if the current task was asked to stop.

    On Python 3.11, ``asyncio.wait_for`` (used inside pymodbus and aiomqtt) can return
    a result and drop a cancellation that arrived at the same moment; a loop that goes
    on after such a call would then never stop. Call this after awaiting library code.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
