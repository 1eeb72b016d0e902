"""Serving a simulated instrument on a real pseudo-terminal (or a TCP socket).

:class:`SimLine` opens a pty pair; a driver opens :attr:`SimLine.path` with
pyserial exactly as it would open ``/dev/ttyUSB0``, and a thread serves the master
side with a :class:`Responder`. The thread paces replies at the configured baud:
a reply is written when its last byte would have arrived on a real line — after
the request's own wire time, the t3.5 silence, the instrument's turnaround and the
reply's wire time — so wire timing is real. ``unplug()``/``replug()`` make the port
vanish and come back (a USB adapter pulled out), keeping a stable symlink path.

:class:`SimTcp` serves the same responder on 127.0.0.1 (RTU over TCP, serial device
servers reached with ``socket://``).
"""

from __future__ import annotations

import contextlib
import functools
import os
import select
import socket
import termios
import threading
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

__all__ = ["Emit", "Responder", "SimLine", "SimTcp"]


@dataclass(frozen=True, slots=True)
class Emit:
    """Bytes to send: ``request_len`` request bytes preceded it; ``delay`` is extra lateness."""

    data: bytes
    request_len: int = 0
    delay: float = 0.0


class Responder(Protocol):
    """A simulated instrument's protocol logic (thread-confined to the serving thread)."""

    stream_period: float | None

    def feed(self, data: bytes) -> list[Emit]:
        """Bytes from the driver; the replies they complete."""
        ...

    def stream(self) -> bytes:
        """The next unsolicited output (only called when ``stream_period`` is set)."""
        ...


class _Pacer:
    def __init__(self, baudrate: int | None, bits: float, turnaround: float) -> None:
        self.char = bits / baudrate if baudrate else 0.0
        self.gap = (0.00175 if (baudrate or 0) > 19200 else 3.5 * 11 / baudrate) if baudrate else 0
        self.turnaround = turnaround

    def due(self, received_at: float, emit: Emit) -> float:
        rx_done = received_at + emit.request_len * self.char
        return rx_done + self.gap + self.turnaround + emit.delay + len(emit.data) * self.char


def _sleep_until(when: float, stop: threading.Event) -> bool:
    left = when - time.monotonic()
    if left > 0:
        return not stop.wait(left)
    return not stop.is_set()


def _serve(
    responder: Responder,
    pacer: _Pacer,
    stop: threading.Event,
    fd: int,
    wake: int,
    read: Callable[[], bytes],
    write: Callable[[bytes], object],
) -> None:
    """Serve one connection until stop or hang-up. ``read``/``write`` wrap the fd."""
    next_stream = time.monotonic()
    for _ in range(100_000_000):
        if stop.is_set():
            return
        period = responder.stream_period
        wait = 0.05 if period is None else max(0.0, next_stream - time.monotonic())
        ready, _, _ = select.select([fd, wake], [], [], wait)
        if stop.is_set() or wake in ready:
            return
        if period is not None and time.monotonic() >= next_stream:
            next_stream += period
            chunk = responder.stream()
            if chunk and not _write_paced(write, chunk, pacer, stop):
                return
        if fd not in ready:
            continue
        try:
            data = read()
        except OSError:
            return
        if not data:
            return
        received_at = time.monotonic()
        for emit in responder.feed(data):
            if not _sleep_until(pacer.due(received_at, emit), stop):
                return
            try:
                write(emit.data)
            except OSError:
                return


def _write_paced(
    write: Callable[[bytes], object], data: bytes, pacer: _Pacer, stop: threading.Event
) -> bool:
    if not _sleep_until(time.monotonic() + len(data) * pacer.char, stop):
        return False
    try:
        write(data)
    except OSError:
        return False
    return True


def _line_of(fd: int) -> tuple[int, str, int, float] | None:
    """The line settings a pty was given by whoever opened it (termios)."""
    try:
        attrs = termios.tcgetattr(fd)
    except termios.error:
        return None
    cflag, ispeed = attrs[2], attrs[4]
    speeds = {getattr(termios, f"B{b}"): b for b in _BAUDS if hasattr(termios, f"B{b}")}
    parity = "N" if not cflag & termios.PARENB else ("O" if cflag & termios.PARODD else "E")
    size = {termios.CS5: 5, termios.CS6: 6, termios.CS7: 7, termios.CS8: 8}[cflag & termios.CSIZE]
    return speeds.get(ispeed, 0), parity, size, 2.0 if cflag & termios.CSTOPB else 1.0


def _same_line(got: tuple[int, str, int, float] | None, want: tuple[int, str, int, float]) -> bool:
    """Whether the port is set as the simulated instruments are. A pty keeps the baud
    rate and stop bits it is given but not the parity, nor 7 data bits: those cannot
    be told apart here."""
    return got is not None and (got[0], got[3]) == (want[0], float(want[3]))


_BAUDS = (300, 600, 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400)


class SimLine:
    """A responder served on a pty pair by one thread (a context manager)."""

    def __init__(
        self,
        responder: Responder,
        *,
        baudrate: int | None = None,
        bits_per_char: float = 11,
        turnaround: float = 0.0,
        link: Path | None = None,
        line: tuple[int, str, int, float] | None = None,
    ) -> None:
        self.responder = responder
        self.pacer = _Pacer(baudrate, bits_per_char, turnaround)
        self.link = link
        self.line = line
        """``(baudrate, parity, bytesize, stopbits)`` the instruments are set to: what the
        driver sends at another baud rate or with other stop bits reaches them garbled, so
        they do not answer (None: any settings; a pty does not keep parity or 7 data
        bits, so those are not checked)."""
        self._master = -1
        self._slave = -1
        self._tty = ""
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake_r, self._wake_w = -1, -1

    @property
    def path(self) -> str:
        """What the driver opens: the symlink if one was asked for, else the pty."""
        return str(self.link) if self.link is not None else self._tty

    def __enter__(self) -> Self:
        self.replug()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.unplug()

    def replug(self) -> None:
        """Create the pty (again) and start serving it."""
        if self._thread is not None:
            return
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self._tty = os.ttyname(self._slave)
        if self.link is not None:
            with contextlib.suppress(FileNotFoundError):
                self.link.unlink()
            self.link.symlink_to(self._tty)
        self._wake_r, self._wake_w = os.pipe()
        self._stop = threading.Event()
        master, slave = self._master, self._slave

        def read() -> bytes:
            data = os.read(master, 4096)
            if data and self.line is not None and not _same_line(_line_of(slave), self.line):
                return b"\xff"  # garbled: a character at the wrong baud rate or framing
            return data

        self._thread = threading.Thread(
            target=_serve,
            args=(
                self.responder,
                self.pacer,
                self._stop,
                master,
                self._wake_r,
                read,
                lambda data: os.write(master, data),
            ),
            name=f"sim-{self._tty}",
            daemon=True,
        )
        self._thread.start()

    def unplug(self) -> None:
        """Stop serving and destroy the pty: the driver's next read or write fails."""
        if self._thread is None:
            return
        self._stop.set()
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=5)
        self._thread = None
        for fd in (self._master, self._slave, self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        if self.link is not None:
            with contextlib.suppress(FileNotFoundError):
                self.link.unlink()


class SimTcp:
    """A responder served on 127.0.0.1 (one connection at a time) by one thread."""

    def __init__(
        self,
        responder: Responder,
        *,
        baudrate: int | None = None,
        bits_per_char: float = 11,
        turnaround: float = 0.0,
    ) -> None:
        self.responder = responder
        self.pacer = _Pacer(baudrate, bits_per_char, turnaround)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name=f"sim-tcp-{self.port}", daemon=True)

    def __enter__(self) -> Self:
        self._sock.listen(4)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=5)
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
        self._sock.close()

    def _run(self) -> None:
        for _ in range(1_000_000):
            ready, _, _ = select.select([self._sock.fileno(), self._wake_r], [], [], 0.5)
            if self._stop.is_set() or self._wake_r in ready:
                return
            if not ready:
                continue
            conn, _ = self._sock.accept()
            with conn:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                _serve(
                    self.responder,
                    self.pacer,
                    self._stop,
                    conn.fileno(),
                    self._wake_r,
                    functools.partial(conn.recv, 4096),
                    conn.sendall,
                )
