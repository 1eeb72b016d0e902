"""Returning freed heap pages to the system, so a daemon that runs for months stays small."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc


def release_free_memory() -> None:
    """Hand freed heap pages back to the system (glibc ``malloc_trim``; elsewhere nothing).

    Start-up builds large short-lived objects (the parameter baseline of a big site
    is megabytes of JSON); without this the daemon would keep their pages for months.
    """
    gc.collect()  # cyclic garbage first, so its pages are free too
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass
