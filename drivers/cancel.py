"""Cancellation that library code can swallow on Python 3.11, made to stick."""

from __future__ import annotations

import asyncio


def reraise_pending_cancel() -> None:
    """Raise ``CancelledError`` if the current task was asked to stop.

    On Python 3.11, ``asyncio.wait_for`` (used inside pymodbus and aiomqtt) can return
    a result and drop a cancellation that arrived at the same moment; a loop that goes
    on after such a call would then never stop. Call this after awaiting library code,
    in a task that never leaves a request of its own behind (see
    :func:`cancel_requests` for one that may).
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def cancel_requests() -> int:
    """The cancellations the current task was asked for and has not withdrawn.

    Take it before awaiting library code and hand it to :func:`reraise_cancel_since`
    after. The count, not its being non-zero, is what tells: on Python 3.11 a
    ``TaskGroup`` whose child fails while the group is already closing cancels its
    parent and never withdraws that request, so a task that outlives such a group
    (a publisher reconnecting after a lost connection) carries a stale one.
    """
    task = asyncio.current_task()
    return task.cancelling() if task is not None else 0


def reraise_cancel_since(before: int) -> None:
    """Raise ``CancelledError`` if the current task was asked to stop since ``before``."""
    if cancel_requests() > before:
        raise asyncio.CancelledError
