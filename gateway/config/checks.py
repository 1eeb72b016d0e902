"""Checks that span several parts of a configuration, and the read plans they compile.

Each check returns ``(path, message, severity)`` triples; the loader locates them
in the YAML. Errors stop the gateway before anything starts; warnings are printed
by ``metrogate check`` and logged at start. What a driver kind alone can check is
declared by its entry in :data:`gateway.config.models.registry.KINDS`; this module runs
those and what holds for every kind: ids, timing, the serial lines, metrology.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import date
from typing import Any

from gateway.config.models.device import DeviceFields
from gateway.config.models.metrology import calibration_warnings, cross_check
from gateway.config.models.registry import KINDS, Finding, PlanProblem, SerialNeeds
from gateway.config.models.serial import BusConfig
from gateway.config.schema import Config
from gateway.wire.keys import KeyStoreError, public_key_from_text

__all__ = ["Finding", "compile_plans", "cross_checks", "serial_line_checks"]

Problem = tuple[tuple[str | int, ...], str]


def compile_plans(devices: Sequence[DeviceFields]) -> tuple[dict[str, Any], list[Finding]]:
    """Each device's read plan (by device id), compiled once by its kind; and the devices
    whose points cannot be planned, located at the offending point."""
    plans: dict[str, Any] = {}
    found: list[Finding] = []
    for i, dev in enumerate(devices):
        try:
            plans[dev.id] = KINDS[dev.driver].plan(dev)
        except PlanProblem as exc:
            found.append((("devices", i, *exc.path), exc.message, "error"))
    return plans, found


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
        poll = dev.poll
        timeout = getattr(dev, "timeout", None)
        if poll <= 0:
            yield ("devices", i, "poll"), "poll period must be > 0", "error"
        elif timeout is not None and timeout >= poll:
            yield (
                ("devices", i, "timeout"),
                f"timeout {timeout:g}s must be shorter than the poll period {poll:g}s",
                "error",
            )


def _kind_checks(config: Config) -> Iterator[Finding]:
    """What each driver kind checks over its own devices."""
    by_kind: dict[str, list[tuple[int, DeviceFields]]] = {}
    for i, dev in enumerate(config.devices):
        by_kind.setdefault(dev.driver, []).append((i, dev))
    for name, devices in by_kind.items():
        yield from KINDS[name].checks(devices)


def cross_checks(
    config: Config, plans: Mapping[str, Any], *, today: date | None = None
) -> list[Finding]:
    """Every cross-object finding of ``config``, whose plans :func:`compile_plans` made."""
    found: list[Finding] = []
    found += _duplicates(config)
    found += _timing(config)
    found += _kind_checks(config)
    devices = [(dev.id, list(getattr(dev, "points", []) or [])) for dev in config.devices]
    fields = list(config.devices)
    for path, message in cross_check(config.instruments, devices, fields):
        found.append((path, message, "error"))
    for path, message in calibration_warnings(config.instruments, today or date.today()):
        found.append((path, message, "warning"))
    found += [(p, m, "error") for p, m in serial_line_checks(config.buses, config.devices, plans)]
    found += _operators(config)
    return found


def _operators(config: Config) -> Iterator[Finding]:
    """Operator ids unique, each public key readable as an Ed25519 key."""
    seen: dict[str, int] = {}
    for i, op in enumerate(config.operators):
        if op.id in seen:
            again = f"operator id {op.id!r} is also operators[{seen[op.id]}]"
            yield (("operators", i, "id"), again, "error")
        seen.setdefault(op.id, i)
        try:
            public_key_from_text(op.public_key)
        except KeyStoreError as exc:
            yield (("operators", i, "public_key"), str(exc), "error")


def serial_line_checks(
    buses: Sequence[BusConfig], devices: Sequence[DeviceFields], plans: Mapping[str, Any]
) -> list[Problem]:
    """Problems between buses and the devices on them; ``devices`` is the whole
    ``devices:`` list (devices of network kinds are skipped, indices stay the file's).

    One owner per port; every serial device on a known bus; a streaming instrument
    alone on its bus; one transmission mode per family on a line; one device per
    address on a line; a poll period the line can carry (from each kind's wire time
    of one poll, for the devices whose plan compiled).
    """
    problems: list[Problem] = []
    by_id: dict[str, int] = {}
    by_port: dict[str, int] = {}
    for i, b in enumerate(buses):
        if b.id in by_id:
            problems.append((("buses", i, "id"), f"bus id {b.id!r} is already used"))
        by_id.setdefault(b.id, i)
        if b.port in by_port:
            other = buses[by_port[b.port]]
            what = "with different line settings" if other.settings() != b.settings() else "too"
            problems.append(
                (("buses", i, "port"), f"port {b.port} is already claimed by bus {other.id!r} "
                 f"{what}: one owner per port — put all its devices on one bus")
            )  # fmt: skip
        by_port.setdefault(b.port, i)
        if b.max_backoff < b.backoff:
            problems.append((("buses", i, "max_backoff"), "max_backoff must be ≥ backoff"))
    members: dict[str, list[tuple[int, DeviceFields, SerialNeeds[Any, Any]]]] = {}
    for j, d in enumerate(devices):
        serial = KINDS[d.driver].serial
        if serial is None or not d.enabled:
            continue
        bus_id = serial.bus(d)
        if bus_id not in by_id:
            known = ", ".join(sorted(by_id)) or "none defined"
            problems.append((("devices", j, "bus"), f"unknown bus {bus_id!r} (buses: {known})"))
            continue
        members.setdefault(bus_id, []).append((j, d, serial))
    for bus_id, group in members.items():
        problems += _line(buses[by_id[bus_id]], group, plans)
    return problems


def _line(
    bus: BusConfig,
    group: list[tuple[int, DeviceFields, SerialNeeds[Any, Any]]],
    plans: Mapping[str, Any],
) -> list[Problem]:
    """The problems of the devices ``group`` on one bus."""
    problems: list[Problem] = []
    streaming = [j for j, d, serial in group if serial.streams(d)]
    if streaming and len(group) > 1:
        for j in streaming:
            problems.append(
                (("devices", j, "bus"), f"a streaming instrument needs bus {bus.id!r} to "
                 "itself, but other devices are on it")
            )  # fmt: skip
    families: dict[str, dict[str, int]] = {}  # family → kind → index of its last device
    for j, d, serial in group:
        if serial.family is not None:
            families.setdefault(serial.family, {})[d.driver] = j
    for kinds in families.values():
        if len(kinds) > 1:
            titles = " and ".join(KINDS[name].title for name in KINDS if name in kinds)
            problems.append(
                (("devices", max(kinds.values()), "driver"), f"bus {bus.id!r} mixes {titles}: "
                 "every device on one serial line must use the same transmission mode")
            )  # fmt: skip
    seen: dict[tuple[str, str], int] = {}
    for j, d, serial in group:
        address = serial.address(d)
        if address is None:
            continue
        key = (address.what, address.value)
        if key in seen:
            problems.append(
                (("devices", j, address.key),
                 f"same {address.what} as devices[{seen[key]}] on bus {bus.id!r}: replies "
                 "could not be told apart")
            )  # fmt: skip
        seen.setdefault(key, j)
    line = bus.settings()
    sweep = 0.0
    load = 0.0
    for _, d, serial in group:
        if d.id not in plans:
            continue  # its plan did not compile: that is reported already
        t = serial.wire_time(d, plans[d.id], line)
        sweep += t
        load += t / d.poll if d.poll > 0 else float("inf")
    if load > 1.0:
        for j, d, _ in group:
            if d.poll < sweep:
                problems.append(
                    (("devices", j, "poll"),
                     f"the devices on bus {bus.id!r} need at least {sweep:.3f}s of wire time "
                     f"per sweep at {bus.baudrate} baud ({load:.0%} of the line): a "
                     f"{d.poll:g}s poll is impossible; poll slower, read fewer registers or "
                     "raise the baud rate")
                )  # fmt: skip
    return problems
