"""The system clock as evidence: is it synchronised, and did it jump?

A Raspberry Pi has no real-time clock: until NTP has synchronised it, its time is
wherever the last shutdown left it. Readings taken then carry a wrong timestamp, so
they are flagged (:func:`flag_if_unsynchronised`). A clock step (NTP correction,
an operator's ``date -s``) is detected by comparing how far the wall clock and a
clock that cannot be set (``CLOCK_BOOTTIME``, which also counts suspend) moved
between two checks; the runtime logs every :class:`ClockJump` in the event log.
Sequence numbers come from the outbox counter, never from the time, so a jump
cannot reorder them.

Synchronisation is read with ``adjtimex(2)`` (modes 0, read-only, no privilege
needed): the clock is unsynchronised when the call returns ``TIME_ERROR`` or the
``STA_UNSYNC`` status bit is set. Tests inject their own probe.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from drivers.base import Clock, Quality, Reason, utc_now_us
from gateway.wire.reading import Reading

__all__ = [
    "ClockJump",
    "ClockMonitor",
    "ClockSyncChanged",
    "SyncProbe",
    "SyncState",
    "adjtimex_probe",
    "flag_if_unsynchronised",
    "monotonic_us",
]

STA_UNSYNC = 0x0040
TIME_ERROR = 5

CLOCK_FLAG = "clock_not_synchronised"
"""Flag put on readings taken while the clock was not synchronised."""


class SyncState(StrEnum):
    """What the kernel says about the system clock's synchronisation."""

    SYNCHRONISED = "synchronised"
    UNSYNCHRONISED = "unsynchronised"
    UNKNOWN = "unknown"  # not Linux, or adjtimex unavailable


SyncProbe = Callable[[], SyncState]
"""Returns the current synchronisation state (injectable for tests)."""


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):
    """``struct timex`` of <sys/timex.h> (glibc and musl share the layout)."""

    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time", _Timeval),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_reserved", ctypes.c_int * 11),
        ("_slack", ctypes.c_byte * 64),  # headroom in case a libc grows the struct
    ]


_adjtimex: Any = None


def adjtimex_probe() -> SyncState:
    """Ask the kernel (``adjtimex`` with modes 0) whether the clock is synchronised."""
    global _adjtimex  # resolved once, lazily
    if not sys.platform.startswith("linux"):
        return SyncState.UNKNOWN
    if _adjtimex is None:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            fn = libc.adjtimex
        except (OSError, AttributeError):
            return SyncState.UNKNOWN
        fn.argtypes = [ctypes.POINTER(_Timex)]
        fn.restype = ctypes.c_int
        _adjtimex = fn
    tx = _Timex()
    rc = int(_adjtimex(ctypes.byref(tx)))
    if rc < 0:
        return SyncState.UNKNOWN
    if rc == TIME_ERROR or tx.status & STA_UNSYNC:
        return SyncState.UNSYNCHRONISED
    return SyncState.SYNCHRONISED


def monotonic_us() -> int:
    """A clock that cannot be set and keeps counting through suspend, in µs."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    if boottime is not None:
        return time.clock_gettime_ns(boottime) // 1000
    return time.monotonic_ns() // 1000


@dataclass(frozen=True, slots=True)
class ClockJump:
    """The wall clock moved ``step_us`` more (or, if negative, less) than real time did."""

    step_us: int
    wall_before_us: int
    wall_after_us: int

    @property
    def backwards(self) -> bool:
        return self.step_us < 0

    def event_data(self) -> dict[str, Any]:
        """The ``data`` of a ``clock_jump`` event-log entry."""
        return {
            "step_us": self.step_us,
            "direction": "backward" if self.backwards else "forward",
            "wall_before": self.wall_before_us,
            "wall_after": self.wall_after_us,
        }


@dataclass(frozen=True, slots=True)
class ClockSyncChanged:
    """The synchronisation state changed (or was read for the first time)."""

    old: SyncState | None
    new: SyncState

    def event_data(self) -> dict[str, Any]:
        """The ``data`` of a ``clock_sync`` event-log entry."""
        return {"old": None if self.old is None else self.old.value, "new": self.new.value}


ClockEvent = ClockJump | ClockSyncChanged


class ClockMonitor:
    """Watches the wall clock against a monotonic clock and the kernel's sync state.

    Call :meth:`check` periodically (every second or so, from one task); it returns
    the events that happened since the previous call. A backward step larger than
    ``backward_tolerance_us`` or a forward step larger than ``forward_threshold_us``
    is a jump; smaller differences are scheduling noise or NTP slewing.
    :attr:`synchronised` is what readings are judged by; ``UNKNOWN`` counts as
    synchronised (a platform without adjtimex is not penalised for it).
    """

    def __init__(
        self,
        *,
        probe: SyncProbe = adjtimex_probe,
        wall_us: Clock = utc_now_us,
        mono_us: Clock = monotonic_us,
        backward_tolerance_us: int = 100_000,
        forward_threshold_us: int = 2_000_000,
    ) -> None:
        self._probe = probe
        self._wall = wall_us
        self._mono = mono_us
        self._backward_tol = backward_tolerance_us
        self._forward_thr = forward_threshold_us
        self._last_wall = wall_us()
        self._last_mono = mono_us()
        self._state: SyncState | None = None

    @property
    def state(self) -> SyncState:
        """The synchronisation state as of the last :meth:`check` (probing once if never)."""
        if self._state is None:
            return self._probe()
        return self._state

    @property
    def synchronised(self) -> bool:
        return self.state is not SyncState.UNSYNCHRONISED

    def check(self) -> list[ClockEvent]:
        """Events since the last call: at most one jump and one sync-state change."""
        events: list[ClockEvent] = []
        wall, mono = self._wall(), self._mono()
        step = (wall - self._last_wall) - (mono - self._last_mono)
        if step < -self._backward_tol or step > self._forward_thr:
            events.append(ClockJump(step, self._last_wall, wall))
        self._last_wall, self._last_mono = wall, mono
        state = self._probe()
        if state is not self._state:
            events.append(ClockSyncChanged(self._state, state))
            self._state = state
        return events


def flag_if_unsynchronised(reading: Reading, synchronised: bool) -> None:
    """Mark a reading taken while the clock was not synchronised.

    Its value is fine but its time is not to be trusted: quality drops to
    ``uncertain`` with reason ``clock_not_synchronised`` (never raised if already
    worse), and the flag of the same name is added.
    """
    if not synchronised:
        reading.degrade(Quality.UNCERTAIN, Reason.CLOCK_NOT_SYNCHRONISED, CLOCK_FLAG)
