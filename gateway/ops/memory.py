"""Returning freed heap pages to the system, so a daemon that runs for months stays small."""

from __future__ import annotations

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


def freeze_heap() -> None:
    """Collect, then exempt every object alive now from later collections (``gc.freeze``).

    Called once the daemon is up: its configuration, drivers and code objects live as
    long as the process. A full collection otherwise walks all of them again and again —
    40–80 ms with a 60 MB heap, a stall of the event loop that every device task waits
    through (docs/architecture.md). Afterwards a collection walks only what was made
    since.
    """
    gc.collect()
    gc.freeze()


def release_free_memory() -> None:
    """Hand freed heap pages back to the system (glibc ``malloc_trim``; elsewhere nothing).

    Start-up builds large short-lived objects (the parameter baseline of a big site
    is megabytes of JSON); without this the daemon would keep their pages for months.
    """
    gc.collect()  # cyclic garbage first, so its pages are free too
    libc = _libc()
    trim = getattr(libc, "malloc_trim", None)
    if trim is not None:
        trim(0)
