"""Returning freed heap pages to the system, so a daemon that runs for months stays small.

And keeping the collector off what lives as long as the process: a big site's
configuration is hundreds of thousands of objects, and every full collection of
the cyclic garbage collector would walk all of them — a stall of the event loop
of ~50–100 ms, once a minute. :func:`freeze_long_lived` moves what exists after
start-up (or a reload) into the collector's permanent generation (``gc.freeze``);
objects there are still freed by reference counting when dropped (a replaced
configuration is: it holds no reference cycles).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import gc


@functools.cache
def _libc() -> ctypes.CDLL | None:
    # find_library runs ldconfig: once per process, not at every trim
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def _malloc_trim() -> None:
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is not None:
        trim(0)


def release_free_memory() -> None:
    """Hand freed heap pages back to the system (glibc ``malloc_trim``; elsewhere nothing).

    Start-up builds large short-lived objects (the parameter baseline of a big site
    is megabytes of JSON); without this the daemon would keep their pages for months.
    """
    gc.collect()  # cyclic garbage first, so its pages are free too
    _malloc_trim()


async def release_free_memory_async() -> None:
    """:func:`release_free_memory` for a running daemon: the trim in a worker thread
    (ctypes lets go of the GIL there); the collection stays short once the long-lived
    objects are frozen."""
    gc.collect()
    await asyncio.to_thread(_malloc_trim)


def freeze_long_lived(*, collect: bool = True) -> None:
    """Exempt every object alive now from the collector's full collections (see above).

    ``collect`` first collects the cyclic garbage, so none of it is kept frozen.
    """
    if collect:
        gc.collect()
    gc.freeze()


def thaw() -> None:
    """Undo :func:`freeze_long_lived` (when the gateway stops inside a longer-lived
    process: the demo, tests), so what it froze is collected normally again."""
    gc.unfreeze()
