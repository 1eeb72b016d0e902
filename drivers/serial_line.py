"""One owner per serial line: the bus every serial device on a port talks through.

A :class:`SerialBus` is an async context manager that owns one port (a device path
such as ``/dev/ttyUSB0`` or a pyserial URL such as ``socket://host:4001`` or
``rfc2217://host:4001``). Devices submit transactions — one request, then the
reply delimited by a :data:`FrameFinder` — and the bus runs them one at a time, in
arrival order, after the line has been idle for the inter-frame gap (t3.5).

Contract of :meth:`SerialBus.transact`:

* returns the reply frame (exactly the bytes the finder delimited);
* raises :class:`drivers.base.DeviceTimeout` when nothing arrived in time,
  :class:`FrameError` when bytes arrived but no valid frame for this device (bad
  checksum, truncated, oversize, another slave answering),
  :class:`Quarantined` without touching the line while the device is in back-off,
  :class:`drivers.base.DeviceUnreachable` when the port cannot be opened or was
  lost (the next transaction reopens it, so an unplugged adapter that comes back
  heals by itself).

After ``failures_to_quarantine`` consecutive failures a device is skipped for a
back-off period that doubles on each failed probe up to ``max_backoff``
(:class:`drivers.backoff.Backoff` without jitter: the line has one owner, so there
are no peers to spread out); the first transaction after the period is the probe.
Other devices keep their schedule: a silent slave costs only its own timeouts.

Streaming instruments (continuous-output scales, instruments that talk unasked)
own their line alone and use :meth:`SerialBus.receive` instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self

import serial
from serial.rs485 import RS485Settings

from drivers.backoff import Backoff
from drivers.base import DeviceTimeout, DeviceUnreachable, ProtocolError, Reason

__all__ = [
    "FrameError",
    "FrameFinder",
    "FrameRejected",
    "LineSettings",
    "Quarantined",
    "Rs485",
    "SerialBus",
    "line_finder",
    "t35",
    "wire_time",
]

log = logging.getLogger(__name__)

Parity = Literal["N", "E", "O"]

MAX_BUFFER = 1024
"""Bytes a reply may accumulate before it is declared oversize (no frame we speak is longer)."""


try:
    import termios

    _TERMIOS_ERRORS: tuple[type[Exception], ...] = (termios.error,)
except ImportError:  # no termios off POSIX; pyserial raises its own errors there
    _TERMIOS_ERRORS = ()


class FrameRejected(ValueError):
    """Raised by a frame finder when the bytes can never become a valid reply for us."""


class FrameError(ProtocolError):
    """Bytes arrived but they are not a valid reply for this device (line trouble)."""

    reason = Reason.NO_COMMUNICATION


class Quarantined(DeviceUnreachable):
    """The device failed repeatedly and is skipped until its back-off expires."""


FrameFinder = Callable[[bytes], tuple[int, int] | None]
"""Looks for a complete reply in the bytes received so far.

Returns ``(start, end)`` of the first valid reply, ``None`` when more bytes are
needed, or raises :class:`FrameRejected` when a complete frame is definitely not
ours (e.g. a valid frame from another address). Bytes before ``start`` are noise.
"""


def line_finder(terminator: bytes, max_length: int = 256) -> FrameFinder:
    """A finder for text protocols: the first line ending in ``terminator``."""

    def find(buf: bytes) -> tuple[int, int] | None:
        end = buf.find(terminator)
        if end < 0:
            if len(buf) > max_length:
                raise FrameRejected(f"no line terminator within {max_length} bytes")
            return None
        return 0, end + len(terminator)

    return find


@dataclass(frozen=True, slots=True)
class Rs485:
    """Kernel RS-485 direction control (Linux ``TIOCSRS485``), for UARTs that drive DE/RE."""

    rts_level_for_tx: bool = True
    rts_level_for_rx: bool = False
    delay_before_tx: float | None = None
    delay_before_rx: float | None = None


@dataclass(frozen=True, slots=True)
class LineSettings:
    """How a port is configured. ``inter_frame_gap`` None means t3.5 from the baud rate."""

    port: str
    baudrate: int = 9600
    parity: Parity = "E"
    bytesize: int = 8
    stopbits: float = 1
    inter_frame_gap: float | None = None
    rs485: Rs485 | None = None

    @property
    def bits_per_char(self) -> float:
        return 1 + self.bytesize + (0 if self.parity == "N" else 1) + self.stopbits

    @property
    def char_time(self) -> float:
        return self.bits_per_char / self.baudrate

    @property
    def gap(self) -> float:
        return self.inter_frame_gap if self.inter_frame_gap is not None else t35(self.baudrate)


def t35(baudrate: int) -> float:
    """The Modbus RTU inter-frame silence in seconds (fixed 1.75 ms above 19200 baud)."""
    return 0.00175 if baudrate > 19200 else 3.5 * 11 / baudrate


def wire_time(
    request_bytes: int, reply_bytes: int, settings: LineSettings, turnaround: float = 0.0
) -> float:
    """Physical lower bound of one transaction: both frames on the wire, two gaps, turnaround."""
    chars = (request_bytes + reply_bytes) * settings.char_time
    return chars + 2 * settings.gap + turnaround


@dataclass(slots=True)
class _Health:
    backoff: Backoff  # quarantine periods: exact doubling (no jitter), one line owner
    failures: int = 0


@dataclass(slots=True)
class BusStats:
    """Counters for ``metrogate read``/benchmarks; not a metric system."""

    transactions: int = 0
    timeouts: int = 0
    frame_errors: int = 0
    skipped: int = 0
    noise_bytes: int = 0
    opens: int = 0
    losses: int = 0
    per_device_ok: dict[str, int] = field(default_factory=dict)


class SerialBus:
    """The single owner of one serial port (see the module docstring)."""

    def __init__(
        self,
        settings: LineSettings,
        *,
        failures_to_quarantine: int = 3,
        initial_backoff: float = 1.0,
        max_backoff: float = 60.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.endpoint = settings.port
        self.stats = BusStats()
        self._threshold = failures_to_quarantine
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._now = monotonic
        self._lock = asyncio.Lock()
        self._port: Any = None
        self._fd: int | None = None
        self._idle_from = 0.0
        self._health: dict[str, _Health] = {}

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._close()

    # ------------------------------------------------------------------ port handling

    def _open(self, device: str) -> Any:
        if self._port is not None:
            return self._port
        s = self.settings
        is_url = "://" in s.port
        try:
            port = serial.serial_for_url(
                s.port,
                do_not_open=True,
                baudrate=s.baudrate,
                parity=s.parity,
                bytesize=s.bytesize,
                stopbits=s.stopbits,
                timeout=0,
                write_timeout=1.0,
                **({} if is_url else {"exclusive": True}),
            )
            if s.rs485 is not None:
                r = s.rs485
                port.rs485_mode = RS485Settings(
                    r.rts_level_for_tx, r.rts_level_for_rx, False, r.delay_before_tx,
                    r.delay_before_rx,
                )  # fmt: skip
            port.open()
        except (serial.SerialException, OSError, ValueError, *_TERMIOS_ERRORS) as exc:
            # termios.error: the port refuses the line settings (a pty refuses parity)
            raise DeviceUnreachable(device, self.endpoint, f"cannot open port: {exc}") from exc
        self._port = port
        try:
            self._fd = int(port.fileno())
        except (AttributeError, NotImplementedError, OSError, serial.SerialException):
            # rfc2217 has no file descriptor: such ports are polled every millisecond
            self._fd = None
        self.stats.opens += 1
        self._idle_from = self._now()
        if self.stats.opens > 1:
            log.info("serial port %s reopened", self.endpoint)
        return port

    def _close(self) -> None:
        if self._port is not None:
            port, self._port, self._fd = self._port, None, None
            # the port may already be gone: nothing left to release then
            with contextlib.suppress(serial.SerialException, OSError):
                port.close()

    def _lost(self, device: str, exc: BaseException) -> DeviceUnreachable:
        self._close()
        self.stats.losses += 1
        log.warning("serial port %s lost: %s", self.endpoint, exc)
        return DeviceUnreachable(device, self.endpoint, f"port lost: {exc}")

    def _read_available(self, device: str) -> bytes:
        try:
            return bytes(self._port.read(4096))
        except (serial.SerialException, OSError) as exc:
            raise self._lost(device, exc) from exc

    async def _readable(self, deadline: float) -> None:
        """Wait until the port has bytes or the deadline passes (never longer)."""
        left = deadline - self._now()
        if left <= 0:
            return
        if self._fd is None:
            await asyncio.sleep(min(left, 0.001))
            return
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        loop.add_reader(self._fd, ready.set)
        try:
            async with asyncio.timeout(left):
                await ready.wait()
        except TimeoutError:
            pass  # the deadline is the caller's business
        finally:
            if self._fd is not None:
                loop.remove_reader(self._fd)

    async def _wait_until(self, deadline: float) -> None:
        """Sleep to a deadline with sub-millisecond accuracy (the loop's timer rounds to 1 ms)."""
        for _ in range(100_000):
            left = deadline - self._now()
            if left <= 0:
                return
            # coarse sleep first, then yield to the loop for the last stretch
            await asyncio.sleep(left - 0.0015 if left > 0.002 else 0)

    # ------------------------------------------------------------------ health

    def _check_quarantine(self, device: str) -> None:
        h = self._health.get(device)
        left = 0.0 if h is None else h.backoff.remaining()
        if left > 0:
            self.stats.skipped += 1
            raise Quarantined(device, self.endpoint, f"quarantined for {left:.1f}s more")

    def _failed(self, device: str) -> None:
        h = self._health.get(device)
        if h is None:
            backoff = Backoff(self._initial_backoff, self._max_backoff, jitter=0, clock=self._now)
            h = self._health[device] = _Health(backoff)
        h.failures += 1
        if h.failures >= self._threshold:
            period = h.backoff.next_delay()
            if h.failures == self._threshold:
                log.error("%s on %s: no valid reply, quarantined", device, self.endpoint)
            else:
                log.debug("%s on %s: probe failed, back-off %.1fs", device, self.endpoint, period)

    def _succeeded(self, device: str) -> None:
        h = self._health.pop(device, None)
        if h is not None and h.failures >= self._threshold:
            log.info("%s on %s: recovered", device, self.endpoint)
        self.stats.per_device_ok[device] = self.stats.per_device_ok.get(device, 0) + 1

    def quarantined(self, device: str) -> bool:
        """Whether ``device`` is currently being skipped."""
        h = self._health.get(device)
        return h is not None and h.backoff.remaining() > 0

    # ------------------------------------------------------------------ transactions

    async def transact(
        self,
        device: str,
        request: bytes,
        find: FrameFinder,
        *,
        timeout: float,  # noqa: ASYNC109 — a reply deadline, not a call bound
    ) -> bytes:
        """Send ``request`` and return the reply frame (see the module docstring)."""
        self._check_quarantine(device)
        async with asyncio.timeout(timeout * 4 + 30):
            async with self._lock:
                self._check_quarantine(device)
                try:
                    reply = await self._exchange(device, request, find, timeout)
                except (DeviceTimeout, FrameError):
                    self._failed(device)
                    raise
                self._succeeded(device)
                return reply

    async def _exchange(
        self,
        device: str,
        request: bytes,
        find: FrameFinder,
        timeout: float,  # noqa: ASYNC109 — see transact
    ) -> bytes:
        port = self._open(device)
        stale = self._read_available(device)
        if stale:
            # noise or a late reply to an earlier request: never let it pass as this reply
            self.stats.noise_bytes += len(stale)
            self._idle_from = self._now()
        await self._wait_until(self._idle_from + self.settings.gap)
        try:
            port.write(request)
        except (serial.SerialException, OSError) as exc:
            raise self._lost(device, exc) from exc
        sent = self._now()
        self._idle_from = sent + len(request) * self.settings.char_time
        self.stats.transactions += 1
        deadline = sent + timeout
        buf = b""
        for _ in range(1_000_000):
            chunk = self._read_available(device)
            if chunk:
                self._idle_from = self._now()
                buf += chunk
                # half-duplex adapters echo the request: it is not the reply
                skip = len(request) if buf.startswith(request) else 0
                partial_echo = not skip and request.startswith(buf)
                try:
                    found = None if partial_echo else find(buf[skip:])
                except FrameRejected as exc:
                    self.stats.frame_errors += 1
                    raise FrameError(device, self.endpoint, str(exc)) from exc
                if found is not None:
                    start, end = found[0] + skip, found[1] + skip
                    self.stats.noise_bytes += found[0]
                    return buf[start:end]
                if len(buf) > MAX_BUFFER:
                    self.stats.frame_errors += 1
                    raise FrameError(device, self.endpoint, f"oversize reply ({len(buf)} bytes)")
            if self._now() >= deadline:
                break
            await self._readable(deadline)
        if buf and buf != request:  # a lone full echo means the device said nothing
            self.stats.frame_errors += 1
            raise FrameError(
                device, self.endpoint, f"no valid reply in {len(buf)} bytes: {buf[:32].hex(' ')}"
            )
        self.stats.timeouts += 1
        raise DeviceTimeout(device, self.endpoint, f"no reply within {timeout}s")

    async def receive(self, device: str, timeout: float) -> bytes:  # noqa: ASYNC109 — a wait, not a call bound
        """For streaming instruments: bytes received within ``timeout`` (may be empty).

        Raises :class:`DeviceUnreachable` when the port cannot be opened or is lost.
        """
        async with self._lock:
            self._open(device)
            deadline = self._now() + timeout
            chunk = self._read_available(device)
            if not chunk:
                await self._readable(deadline)
                chunk = self._read_available(device)
            return chunk

    async def send(self, device: str, data: bytes) -> None:
        """Write without waiting for a reply (streaming instruments that need a start command)."""
        async with self._lock:
            port = self._open(device)
            await self._wait_until(self._idle_from + self.settings.gap)
            try:
                port.write(data)
            except (serial.SerialException, OSError) as exc:
                raise self._lost(device, exc) from exc
            self._idle_from = self._now() + len(data) * self.settings.char_time


async def pump(
    bus: SerialBus,
    device: str,
    feed: Callable[[bytes, float], None],
    on_error: Callable[[DeviceUnreachable], None],
    *,
    chunk_timeout: float = 0.1,
    retry_after: float = 1.0,
) -> None:
    """Feed a streaming instrument's bytes to ``feed(data, monotonic_time)`` until cancelled.

    A lost or unopenable port is reported to ``on_error`` and retried after
    ``retry_after`` seconds, so an unplugged adapter heals when it comes back. Any
    other failure of the line is reported and retried the same way: this task runs
    beside the device's poller, and its end would end every task beside it.
    """
    while True:
        try:
            data = await bus.receive(device, chunk_timeout)
        except DeviceUnreachable as exc:
            on_error(exc)
            await asyncio.sleep(retry_after)
            continue
        except Exception as exc:
            log.error("%s on %s: reading the stream failed", device, bus.endpoint, exc_info=exc)
            on_error(DeviceUnreachable(device, bus.endpoint, f"stream failed: {exc!r}"))
            await asyncio.sleep(retry_after)
            continue
        if data:
            feed(data, time.monotonic())


class StreamListener:
    """The context-manager half of a driver whose instrument streams unasked.

    While entered, a task of its own feeds every chunk from the line to
    :meth:`_feed` (:func:`pump`); a lost port is kept in ``_error`` until bytes flow
    again. A ``_feed`` that raises (bytes its parser did not foresee) is kept there
    too, as a :class:`drivers.base.ProtocolError`, and the stream goes on: the
    traceback is logged once, until a chunk parses again. Subclasses set
    ``device_id``, ``endpoint`` and ``_bus``, implement ``_feed``, and may override
    :meth:`_streams` for a driver that only sometimes listens.
    """

    device_id: str
    endpoint: str
    _bus: SerialBus
    _error: DeviceUnreachable | ProtocolError | None = None
    _task: asyncio.Task[None] | None = None
    _feed_failing: bool = False

    def _streams(self) -> bool:
        return True

    def _feed(self, data: bytes, when: float) -> None:
        raise NotImplementedError

    def _on_data(self, data: bytes, when: float) -> None:
        self._error = None
        try:
            self._feed(data, when)
        except Exception as exc:
            if not self._feed_failing:
                log.error("%s at %s: cannot parse the stream", self.device_id, self.endpoint,
                          exc_info=exc)  # fmt: skip
            self._feed_failing = True
            self._error = ProtocolError(
                self.device_id, self.endpoint, f"cannot parse the stream: {exc!r}"
            )
        else:
            if self._feed_failing:
                log.info("%s at %s: the stream parses again", self.device_id, self.endpoint)
            self._feed_failing = False

    def _lost(self, exc: DeviceUnreachable) -> None:
        self._error = exc

    async def __aenter__(self) -> Self:
        self._stack = contextlib.AsyncExitStack()
        if self._streams():
            tasks = await self._stack.enter_async_context(asyncio.TaskGroup())
            self._task = tasks.create_task(
                pump(self._bus, self.device_id, self._on_data, self._lost),
                name=f"{self.device_id}-stream",
            )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
        await self._stack.aclose()
