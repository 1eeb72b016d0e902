"""Toledo continuous-output scales (and the many clones of the format).

The scale streams ``STX SWA SWB SWC WWWWWW TTTTTT CR [CKS]`` without being asked.
:class:`ToledoParser` turns any byte stream into frames: it resynchronises on the
next STX after garbage, checks the fixed bits, the digits, the CR and (when
configured) the checksum — two's complement of the 7-bit sum of STX..CR — and
counts what it discarded.

:class:`ToledoDriver` runs the stream in the background (its own TaskGroup) and,
on each poll, samples the latest stable frame received since the previous poll;
when the scale was in motion the whole time, the latest frame comes back
uncertain / not_stable. No frame since the previous poll raises
:class:`drivers.base.DeviceTimeout`: an old value is never re-sent as new.
"""

from __future__ import annotations

from dataclasses import dataclass

from drivers.base import (
    Clock,
    DeviceTimeout,
    Quality,
    Reason,
    Sample,
    utc_now_us,
)
from drivers.serial_line import SerialBus, StreamListener

__all__ = [
    "ToledoDriver",
    "ToledoFrame",
    "ToledoParser",
    "encode_frame",
    "plan_line",
    "toledo_checksum",
]

STX, CR = 0x02, 0x0D
BODY = 17  # STX + 3 status + 6 weight + 6 tare + CR


def toledo_checksum(data: bytes) -> int:
    """Two's complement of the 7-bit sum of ``data`` (STX through CR)."""
    return (-sum(data)) & 0x7F


@dataclass(frozen=True, slots=True)
class ToledoFrame:
    weight: float
    tare: float
    unit: str
    net: bool
    out_of_range: bool
    motion: bool
    not_zeroed: bool
    decimals: int


def _decimals(swa: int) -> int:
    # codes 0..7: XX00, XXX0, XXXXXX, XXXXX.X, …, X.XXXXX → decimals −2 … 5
    return (swa & 0x07) - 2


def encode_frame(
    weight: float,
    tare: float = 0.0,
    *,
    decimals: int = 2,
    kg: bool = True,
    net: bool = False,
    motion: bool = False,
    out_of_range: bool = False,
    checksum: bool = True,
) -> bytes:
    """A frame for ``weight`` (simulators and tests); the sign goes into SWB bit 1."""
    swa = 0x20 | ((decimals + 2) & 0x07) | 0x08
    swb = 0x20 | net | (weight < 0) << 1 | out_of_range << 2 | motion << 3 | kg << 4
    swc = 0x20
    factor = 10.0**decimals
    w = f"{round(abs(weight) * factor):06d}"[-6:]
    t = f"{round(abs(tare) * factor):06d}"[-6:]
    body = bytes((STX, swa, swb, swc)) + w.encode() + t.encode() + bytes((CR,))
    return body + bytes((toledo_checksum(body),)) if checksum else body


class ToledoParser:
    """Incremental, resynchronising frame parser. Never raises on any input."""

    def __init__(self, *, checksum: bool = True) -> None:
        self.checksum = checksum
        self.size = BODY + (1 if checksum else 0)
        self.discarded = 0
        self.bad_frames = 0
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[ToledoFrame]:
        """Frames completed by ``data``, in order."""
        self._buf += data
        frames: list[ToledoFrame] = []
        for _ in range(len(self._buf) + 1):
            start = self._buf.find(STX)
            if start < 0:
                self.discarded += len(self._buf)
                self._buf.clear()
                break
            if start:
                self.discarded += start
                del self._buf[:start]
            if len(self._buf) < self.size:
                break
            frame = self._decode(bytes(self._buf[: self.size]))
            if frame is None:
                # not a frame after all: drop this STX and look for the next one
                self.bad_frames += 1
                self.discarded += 1
                del self._buf[:1]
                continue
            frames.append(frame)
            del self._buf[: self.size]
        return frames

    def _decode(self, raw: bytes) -> ToledoFrame | None:
        swa, swb, swc = raw[1], raw[2], raw[3]
        digits = raw[4:16]
        if raw[16] != CR or not (swa & swb & swc & 0x20) or not digits.isdigit():
            return None
        if self.checksum and toledo_checksum(raw[:BODY]) != raw[BODY]:
            return None
        decimals = _decimals(swa)
        factor = 10.0**-decimals
        weight = int(digits[:6]) * factor
        tare = int(digits[6:]) * factor
        if swb & 0x02:
            weight = -weight
        return ToledoFrame(
            weight=round(weight, max(decimals, 0)),
            tare=round(tare, max(decimals, 0)),
            unit="kg" if swb & 0x10 else "lb",
            net=bool(swb & 0x01),
            out_of_range=bool(swb & 0x04),
            motion=bool(swb & 0x08),
            not_zeroed=bool(swb & 0x40),
            decimals=decimals,
        )


def plan_line(weight_point: str, tare_point: str | None) -> str:
    """What one poll takes from the stream (``metrogate plan``)."""
    return f"continuous stream → {weight_point}, {tare_point or '-'}"


class ToledoDriver(StreamListener):
    """A continuous-output scale owning its serial line. Points: ``weight`` and ``tare``."""

    def __init__(
        self,
        device_id: str,
        bus: SerialBus,
        *,
        checksum: bool = True,
        unit: str | None = None,
        weight_point: str = "weight",
        tare_point: str | None = "tare",
        clock: Clock = utc_now_us,
    ) -> None:
        self.device_id = device_id
        self.endpoint = f"toledo:{bus.endpoint}"
        self.parser = ToledoParser(checksum=checksum)
        self.unit = unit
        self._bus = bus
        self._clock = clock
        self._weight_point = weight_point
        self._tare_point = tare_point
        self.frames = 0
        """Valid frames received so far (tests and diagnostics wait on it)."""
        self._latest: tuple[ToledoFrame, int] | None = None
        self._stable: tuple[ToledoFrame, int] | None = None

    def _feed(self, data: bytes, _when: float) -> None:
        ts = self._clock()
        for frame in self.parser.feed(data):
            self.frames += 1
            self._latest = (frame, ts)
            if not frame.motion and not frame.out_of_range:
                self._stable = (frame, ts)

    async def read(self) -> list[Sample]:
        """The latest stable frame since the previous poll (see the module docstring)."""
        chosen = self._stable or self._latest
        self._stable = self._latest = None
        if chosen is None:
            if self._error is not None:
                raise self._error
            raise DeviceTimeout(self.device_id, self.endpoint, "no frame since the previous poll")
        frame, ts = chosen
        quality, reason = Quality.GOOD, None
        weight: float | None = frame.weight
        if frame.out_of_range:
            quality, reason, weight = Quality.UNCERTAIN, Reason.UNITS_EXCEEDED, None
        elif frame.motion:
            quality, reason = Quality.UNCERTAIN, Reason.NOT_STABLE
        if self.unit is not None and frame.unit != self.unit:
            quality, reason, weight = Quality.BAD, Reason.CONFIG_ERROR, None
        samples = [Sample(self._weight_point, weight, weight, quality, reason, ts)]
        if self._tare_point is not None:
            if quality is Quality.BAD:
                samples.append(Sample(self._tare_point, None, None, quality, reason, ts))
            else:
                samples.append(
                    Sample(self._tare_point, frame.tare, frame.tare, quality, reason, ts)
                )
        return samples

    def describe_plan(self) -> list[str]:
        return [plan_line(self._weight_point, self._tare_point)]

    def identity(self) -> dict[str, str]:
        return {}
