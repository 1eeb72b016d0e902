"""Checks that span several parts of a configuration.

Each check returns ``(path, message, severity)`` triples; the loader locates them
in the YAML. Errors stop the gateway before anything starts; warnings are printed
by ``metrogate check`` and logged at start.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any

from drivers.modbus_codec import DataType
from drivers.modbus_plan import Hole, PlanError, plan
from gateway.config.models.metrology import calibration_warnings, cross_check
from gateway.config.models.modbus import ModbusTcpDevice
from gateway.config.schema import Config

Finding = tuple[tuple[str | int, ...], str, str]


def modbus_plan(device: Any) -> list[Any]:
    """The compiled read plan of a Modbus device (TCP or serial); raises PlanError."""
    holes = [Hole(h.table, h.start, h.end + 1) for h in device.holes]
    return plan(
        device.specs(),
        max_registers=device.max_registers,
        max_bits=device.max_bits,
        max_gap=device.max_gap,
        holes=holes,
    )


def _duplicates(config: Config) -> Iterator[Finding]:
    seen: dict[str, int] = {}
    for i, dev in enumerate(config.devices):
        if dev.id in seen:
            yield (
                ("devices", i, "id"),
                f"device id {dev.id!r} is also devices[{seen[dev.id]}]",
                "error",
            )
        seen.setdefault(dev.id, i)
        points: dict[str, int] = {}
        for j, point in enumerate(getattr(dev, "points", []) or []):
            pid = str(point.id)
            if pid in points:
                yield (
                    ("devices", i, "points", j, "id"),
                    f"point id {pid!r} is also points[{points[pid]}] of this device",
                    "error",
                )
            points.setdefault(pid, j)


def _timing(config: Config) -> Iterator[Finding]:
    for i, dev in enumerate(config.devices):
        poll = getattr(dev, "poll", None)
        timeout = getattr(dev, "timeout", None)
        if poll is not None and poll <= 0:
            yield ("devices", i, "poll"), "poll period must be > 0", "error"
        elif poll is not None and timeout is not None and timeout >= poll:
            yield (
                ("devices", i, "timeout"),
                f"timeout {timeout:g}s must be shorter than the poll period {poll:g}s",
                "error",
            )


def _registers(i: int, dev: ModbusTcpDevice) -> Iterator[Finding]:
    if not dev.points:
        yield ("devices", i, "points"), "a Modbus device needs at least one point", "error"
        return
    specs = dev.specs()
    for a in range(len(specs)):
        for b in range(a):
            pa, pb = specs[a], specs[b]
            if pa.table is not pb.table or pa.address >= pb.end or pb.address >= pa.end:
                continue
            bits = pa.type is DataType.BOOL and pb.type is DataType.BOOL
            if bits and pa.bit is not None and pb.bit is not None and pa.bit != pb.bit:
                continue  # two bits of one register
            yield (
                ("devices", i, "points", a, _address_key(dev.points[a])),
                f"{pa.table.value} {pa.address}..{pa.end - 1} overlaps point {pb.id!r} "
                f"({pb.address}..{pb.end - 1})",
                "error",
            )
    try:
        modbus_plan(dev)
    except PlanError as exc:
        j = next((j for j, p in enumerate(dev.points) if p.id == exc.point), None)
        path = ("devices", i, "points") if j is None else ("devices", i, "points", j)
        key = () if j is None else (_address_key(dev.points[j]),)
        yield (*path, *key), str(exc), "error"


def _address_key(point: Any) -> str:
    """The key that placed a point: ``ref`` when it was given, else ``address``."""
    return "ref" if getattr(point, "ref", None) is not None else "address"


def _endpoints(config: Config) -> Iterator[Finding]:
    claims: dict[tuple[str, int, int], int] = {}
    framing: dict[tuple[str, int], tuple[str, int]] = {}
    for i, dev in enumerate(config.devices):
        if not isinstance(dev, ModbusTcpDevice):
            continue
        key = (dev.host, dev.port, dev.unit)
        if key in claims:
            yield (
                ("devices", i, "unit"),
                f"{dev.host}:{dev.port} unit {dev.unit} is already claimed by "
                f"devices[{claims[key]}]",
                "error",
            )
        claims.setdefault(key, i)
        other = framing.setdefault((dev.host, dev.port), (dev.framing, i))
        if other[0] != dev.framing:
            yield (
                ("devices", i, "framing"),
                f"{dev.host}:{dev.port} is used with framing {other[0]!r} by devices[{other[1]}]",
                "error",
            )


def cross_checks(config: Config, *, today: date | None = None) -> list[Finding]:
    """Every cross-object finding of ``config``."""
    found: list[Finding] = []
    found += _duplicates(config)
    found += _timing(config)
    found += _endpoints(config)
    for i, dev in enumerate(config.devices):
        if isinstance(dev, ModbusTcpDevice):
            found += _registers(i, dev)
    devices = [(dev.id, list(getattr(dev, "points", []) or [])) for dev in config.devices]
    fields = list(config.devices)
    for path, message in cross_check(config.instruments, devices, fields):
        found.append((path, message, "error"))
    for path, message in calibration_warnings(config.instruments, today or date.today()):
        found.append((path, message, "warning"))
    found += _serial_checks(config)
    return found


def _serial_checks(config: Config) -> list[Finding]:
    from gateway.config.models import serial as config_serial

    check = config_serial.cross_check
    return [(p, m, "error") for p, m in check(config.buses, config.devices)]
