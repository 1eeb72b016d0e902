"""``metrogate scan``: find what answers on a network or a serial line, and write a config
skeleton that ``metrogate check`` accepts.

What is asked, and why it is harmless (nothing is ever written to a device):

* **Modbus TCP** ``HOST[:PORT]``: for each unit id of ``--units`` one Read Holding
  Registers of register 0 (function 03, one register). A normal reply or an exception
  other than 0A/0B (a gateway saying the unit does not exist) means a device is there.
* **Serial line** ``PORT``: line settings in the order most field devices use
  (:data:`SETTINGS`; ``--settings`` to choose), through the one bus owner of the port
  (:class:`drivers.serial_line.SerialBus`: exclusive, the inter-frame gap kept). At each
  setting: the DL/T 645 broadcast read of the communication address (control 13H), the
  CJ/T 188 wildcard read of the current data (901FH) for each meter type, and a Modbus
  RTU read of holding register 0 for each unit id of ``--units``. It stops after the
  first setting at which anything answered (a line runs one setting), unless
  ``--all-settings``.
* **OPC UA** ``URL``: GetEndpoints (no session): the endpoints, security modes and
  policies, user token types and server certificates; with an unsecured, anonymous
  endpoint also a few Browse and Read calls for the skeleton's points.

Everything is bounded: ``--time-budget`` seconds and ``--max-requests`` requests for the
whole scan (a request is one frame sent or one OPC UA service call), each reply waited
for at most ``--timeout`` (and at least the wire time of the exchange at the baud rate).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import re
import struct
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from drivers import cjt188, dlt645
from drivers.base import DeviceTimeout, DeviceUnreachable, DriverError
from drivers.modbus_serial import rtu_finder, rtu_frame
from drivers.serial_line import FrameError, LineSettings, SerialBus, wire_time
from gateway.cli.args import count, seconds
from gateway.common.exitcodes import ExitCode

if TYPE_CHECKING:  # asyncua is imported only when OPC UA is scanned
    from drivers.opcua import BrowseEntry, EndpointInfo

__all__ = [
    "SETTINGS",
    "Budget",
    "Exhausted",
    "Found",
    "ScanResult",
    "add_scan_parser",
    "cmd_scan",
    "run_scan",
    "skeleton",
]

Parity = Literal["N", "E", "O"]
Setting = tuple[int, Parity, int, float]
"""``(baudrate, parity, bytesize, stopbits)``."""

SETTINGS: tuple[Setting, ...] = (
    (9600, "E", 8, 1), (19200, "E", 8, 1), (9600, "N", 8, 1), (19200, "N", 8, 1),
    (2400, "E", 8, 1), (4800, "E", 8, 1), (38400, "E", 8, 1), (115200, "E", 8, 1),
    (1200, "E", 8, 1), (2400, "N", 8, 1), (4800, "N", 8, 1), (38400, "N", 8, 1),
    (115200, "N", 8, 1), (9600, "N", 8, 2),
)  # fmt: skip
"""Line settings in the order they are tried: Modbus's 8E1 at the two common rates, the
8N1 most devices ship with, then the meters' 2400 8E1 and the rest."""

METER_TYPES = (0x10, 0x11, 0x12, 0x13, 0x20, 0x21, 0x30, 0x40)
"""CJ/T 188 meter types a wildcard read is sent for (a meter answers only its own)."""

_ABSENT = (0x0A, 0x0B)  # gateway path unavailable / target device failed to respond


class Exhausted(Exception):
    """The time or request budget is spent; ``reason`` says which option bounds it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Budget:
    """How much the scan may still do: a deadline (monotonic) and a number of requests."""

    seconds: float
    max_requests: int
    started: float = field(default_factory=time.monotonic)
    requests: int = 0

    @property
    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.started)

    def take(self) -> None:
        """Count one request; :class:`Exhausted` when none is left."""
        if self.left <= 0:
            raise Exhausted("time budget reached (--time-budget)")
        if self.requests >= self.max_requests:
            raise Exhausted("request budget reached (--max-requests)")
        self.requests += 1


@dataclass(frozen=True)
class Found:
    """One thing that answered."""

    kind: str
    """``modbus_tcp``, ``modbus_rtu``, ``dlt645``, ``cjt188`` or ``opcua``."""
    where: str
    """``host:port``, the serial port, or the OPC UA URL."""
    detail: dict[str, Any]
    """What identifies it (unit, address, meter type, line settings, endpoints, ...)."""
    text: str
    """One line for the technician."""


@dataclass
class ScanResult:
    found: list[Found] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """What did not answer, or answered oddly (collisions, noise, unreachable hosts)."""
    stopped: str | None = None
    requests: int = 0
    seconds: float = 0.0


# ---------------------------------------------------------------------------- Modbus TCP


async def _mbap_exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tid: int, unit: int,
    reply_s: float,
) -> bytes | None:  # fmt: skip
    """One read of holding register 0 of ``unit``; the reply PDU, or None without one."""
    writer.write(struct.pack(">HHHB", tid, 0, 6, unit) + b"\x03\x00\x00\x00\x01")
    await writer.drain()
    try:
        async with asyncio.timeout(reply_s):
            for _ in range(16):  # a late reply to an earlier unit is read past
                head = await reader.readexactly(7)
                got, proto, length, _unit = struct.unpack(">HHHB", head)
                if not 2 <= length <= 254:
                    raise ConnectionError("out of step")
                pdu = await reader.readexactly(length - 1)
                if got == tid and proto == 0:
                    return pdu
    except TimeoutError:
        return None
    return None


async def scan_modbus_tcp(
    host: str, port: int, units: Sequence[int], reply_s: float, budget: Budget, out: ScanResult
) -> None:
    """Ask every unit of ``units`` at ``host:port`` for holding register 0."""
    where = f"{host}:{port}"
    reader = writer = None
    tid = 0
    try:
        for unit in units:
            budget.take()
            for attempt in range(2):  # a connection dropped by the device is made again
                if writer is None:
                    try:
                        async with asyncio.timeout(max(reply_s, 1.0)):
                            reader, writer = await asyncio.open_connection(host, port)
                    except (OSError, TimeoutError) as exc:
                        out.notes.append(f"modbus_tcp {where}: cannot connect: {exc or 'timeout'}")
                        return
                assert reader is not None
                tid = (tid + 1) & 0xFFFF
                try:
                    pdu = await _mbap_exchange(reader, writer, tid, unit, reply_s)
                    break
                except (OSError, ConnectionError, asyncio.IncompleteReadError):
                    writer.close()
                    reader = writer = None
                    pdu = None
                    if attempt:
                        out.notes.append(f"modbus_tcp {where}: unit {unit}: connection lost")
            if pdu is None or len(pdu) < 2:
                continue
            if pdu[0] == 0x83:
                if pdu[1] in _ABSENT:
                    continue
                text = f"unit {unit} answered exception {pdu[1]:02X} for holding register 0"
                detail: dict[str, Any] = {"unit": unit, "exception": pdu[1]}
            else:
                value = int.from_bytes(pdu[2:4], "big") if len(pdu) >= 4 else None
                text = f"unit {unit} answered: holding register 0 = {value}"
                detail = {"unit": unit, "value": value}
            out.found.append(
                Found("modbus_tcp", where, {"host": host, "port": port, **detail}, text)
            )
    finally:
        if writer is not None:
            writer.close()


# ---------------------------------------------------------------------------- serial


def _setting_name(s: Setting) -> str:
    return f"{s[0]} {s[2]}{s[1]}{s[3]:g}"


def parse_setting(text: str) -> Setting:
    """``9600-8E1`` (or ``9600 8E1``) → ``(9600, "E", 8, 1)``."""
    m = re.fullmatch(r"\s*(\d+)[-\s]+([78])([NEO])(1|1\.5|2)\s*", text.upper())
    if m is None:
        raise ValueError(f"line setting {text!r}: write BAUD-8E1, e.g. 9600-8E1 or 2400-8N1")
    return int(m.group(1)), cast(Parity, m.group(3)), int(m.group(2)), float(m.group(4))


async def _transact(
    bus: SerialBus, name: str, request: bytes, find: Any, reply_s: float, budget: Budget,
    out: ScanResult, what: str,
) -> bytes | None:  # fmt: skip
    budget.take()
    try:
        return await bus.transact(name, request, find, timeout=reply_s)
    except DeviceTimeout:
        return None
    except FrameError as exc:
        out.notes.append(f"{what}: {exc.message}")
        return None


async def _scan_meters(
    bus: SerialBus, port: str, setting: str, protocols: set[str], reply_s: float,
    budget: Budget, out: ScanResult,
) -> None:  # fmt: skip
    if "dlt645" in protocols:
        raw = await _transact(
            bus, "scan-dlt645", dlt645.read_address_frame(), dlt645.address_finder(),
            reply_s, budget, out, f"dlt645 {port} at {setting}",
        )  # fmt: skip
        if raw is not None:
            address = dlt645.parse_frame(raw).address
            out.found.append(
                Found("dlt645", port, {"address": address}, f"DL/T 645 meter {address} answered")
            )
    if "cjt188" not in protocols:
        return
    for meter_type in METER_TYPES:
        for order in ("low_first", "high_first"):
            request = cjt188.read_frame(meter_type, cjt188.WILDCARD, 0, di_order=order)
            raw = await _transact(
                bus, f"scan-cjt188-{meter_type:02X}", request,
                cjt188.meter_finder(cjt188.WILDCARD, meter_type), reply_s, budget, out,
                f"cjt188 {port} at {setting}",
            )  # fmt: skip
            if raw is None:
                break
            reply = cjt188.parse_frame(raw)
            if reply.control == 0xC1 and order == "low_first":
                continue  # an abnormal reply: perhaps the other DI byte order
            kind = cjt188.METER_TYPES.get(meter_type, "meter")
            detail = {"address": reply.address, "meter_type": meter_type, "di_order": order}
            if reply.control == 0xC1:
                detail["abnormal"] = True
            out.found.append(
                Found("cjt188", port, detail, f"CJ/T 188 {kind} {reply.address} answered")
            )
            break


async def scan_serial(
    port: str,
    settings: Sequence[Setting],
    protocols: set[str],
    units: Sequence[int],
    reply_s: float,
    budget: Budget,
    out: ScanResult,
    *,
    all_settings: bool = False,
) -> None:
    """Try each line setting in turn (see the module docstring)."""
    for s in settings:
        line = LineSettings(port=port, baudrate=s[0], parity=s[1], bytesize=s[2], stopbits=s[3])
        name = _setting_name(s)
        before = len(out.found)
        # at least the wire time of a long meter reply, whatever --timeout says
        wait = max(reply_s, wire_time(20, 70, line) + 0.05)
        async with SerialBus(line, failures_to_quarantine=1_000_000) as bus:
            try:
                await _scan_meters(bus, port, name, protocols, wait, budget, out)
                if "modbus_rtu" in protocols:
                    modbus_wait = max(reply_s, wire_time(8, 7, line) + 0.05)
                    for unit in units:
                        pdu = b"\x03\x00\x00\x00\x01"
                        raw = await _transact(
                            bus, f"scan-unit-{unit}", rtu_frame(unit, pdu), rtu_finder(unit, 3),
                            modbus_wait, budget, out, f"modbus_rtu {port} at {name}",
                        )  # fmt: skip
                        if raw is None:
                            continue
                        if raw[1] & 0x80:
                            text = f"unit {unit} answered exception {raw[2]:02X} for holding 0"
                            detail: dict[str, Any] = {"unit": unit, "exception": raw[2]}
                        else:
                            value = int.from_bytes(raw[3:5], "big")
                            text = f"unit {unit} answered: holding register 0 = {value}"
                            detail = {"unit": unit, "value": value}
                        out.found.append(Found("modbus_rtu", port, detail, text))
            except DeviceUnreachable as exc:
                out.notes.append(f"{port}: {exc.message} (a running gateway owns it?)")
                return
        for f in out.found[before:]:
            f.detail["line"] = s
        if len(out.found) > before and not all_settings:
            return


# ---------------------------------------------------------------------------- OPC UA


async def _points_of(url: str, reply_s: float, budget: Budget) -> list[BrowseEntry]:
    """Up to 20 variables below Objects (three levels down, the server's own skipped)."""
    found: list[BrowseEntry] = []
    paths: list[str | None] = [None]
    for _ in range(10):  # browse calls
        if not paths or len(found) >= 20:
            break
        path = paths.pop(0)
        budget.take()
        try:
            from drivers.opcua import browse

            entries = await browse(url, path, request_timeout=reply_s, device_id="scan")
        except DriverError:
            break
        for e in entries:
            if e.node.startswith("i=") or e.node.startswith("ns=0;"):
                continue  # the Server object and the standard's nodes
            if e.node_class == "variable" and e.data_type not in (None, "String", "LocalizedText"):
                found.append(e)
            elif e.node_class == "object" and e.path.count("/") < 2:
                paths.append(e.path)
    return found[:20]


async def scan_opcua(url: str, reply_s: float, budget: Budget, out: ScanResult) -> None:
    budget.take()
    try:
        from drivers.opcua import discover

        endpoints = await discover(url, request_timeout=reply_s, device_id="scan")
    except DriverError as exc:
        out.notes.append(f"opcua {url}: {exc.message}")
        return
    text = f"{len(endpoints)} endpoint(s): " + "; ".join(
        f"{e.mode}/{e.policy} (level {e.security_level}, {', '.join(e.user_tokens) or 'no tokens'})"
        for e in endpoints
    )
    points: list[BrowseEntry] = []
    if any(e.mode == "None" and "anonymous" in e.user_tokens for e in endpoints):
        points = await _points_of(url, reply_s, budget)
    out.found.append(Found("opcua", url, {"endpoints": endpoints, "points": points}, text))


# ---------------------------------------------------------------------------- the skeleton


def _ident(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:64] or "x"


def _endpoint_choice(endpoints: Sequence[EndpointInfo]) -> EndpointInfo | None:
    plain = [e for e in endpoints if e.mode == "None"]
    if plain:
        return plain[0]
    secured = [e for e in endpoints if e.policy in ("Basic256Sha256", "Aes128_Sha256_RsaOaep")]
    return max(secured, key=lambda e: e.security_level, default=None)


def skeleton(result: ScanResult, config_dir: Path) -> str:
    """A config that ``metrogate check`` accepts: a bus per serial port found (with the
    settings that answered), a device per thing that answered, with a first point to
    replace by the device's real map. For an OPC UA server that offers only secured
    endpoints it writes the gateway's application certificate and the server's
    certificate (as seen by the scan: verify its fingerprint) under ``pki/`` beside the
    config (``config_dir``)."""
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"# Found by metrogate scan, {when}. Every device has a first point to replace with",
        "# its register map, data items or nodes (profiles: docs/config.md); then",
        "#   metrogate check -c THIS_FILE   (and --online for OPC UA servers)",
        "gateway:",
        "  id: scanned-gateway",
        "  site: scanned-site",
    ]
    buses: dict[str, Setting] = {}
    for f in result.found:
        if f.kind in ("modbus_rtu", "dlt645", "cjt188"):
            buses.setdefault(f.where, f.detail["line"])
    bus_ids = {port: _ident(f"line-{Path(port).name}") for port in buses}
    if buses:
        lines.append("buses:")
        for port, (baud, parity, size, stop) in buses.items():
            lines += [
                f"  - id: {bus_ids[port]}",
                f"    port: {port}",
                f"    baudrate: {baud}",
                f"    parity: {parity}",
                f"    bytesize: {size}",
                f"    stopbits: {stop:g}",
            ]
    lines.append("devices:")
    seen: set[str] = set()

    def device_id(text: str) -> str:
        base = _ident(text)
        name, k = base, 2
        while name in seen:
            name, k = f"{base}-{k}", k + 1
        seen.add(name)
        return name

    for f in result.found:
        d = f.detail
        lines.append(f"  # {f.kind} {f.where}: {f.text}")
        if f.kind == "modbus_tcp":
            name = device_id(f"modbus-{d['host']}-{d['unit']}")
            lines += [
                f"  - id: {name}",
                "    driver: modbus_tcp",
                f"    host: {d['host']}",
                f"    port: {d['port']}",
                f"    unit: {d['unit']}",
                "    points:",
                "      - {id: holding_0, table: holding, address: 0}   # replace: the device's map",
            ]
        elif f.kind == "modbus_rtu":
            name = device_id(f"rtu-{bus_ids[f.where]}-{d['unit']}")
            lines += [
                f"  - id: {name}",
                "    driver: modbus_rtu",
                f"    bus: {bus_ids[f.where]}",
                f"    unit: {d['unit']}",
                "    points:",
                "      - {id: holding_0, table: holding, address: 0}   # replace: the device's map",
            ]
        elif f.kind == "dlt645":
            name = device_id(f"meter-{d['address']}")
            lines += [
                f"  - id: {name}",
                "    driver: dlt645",
                f"    bus: {bus_ids[f.where]}",
                f'    address: "{d["address"]}"',
                "    points:  # or profile: dlt645-single-phase",
                '      - {id: energy_import, di: "00010000", unit: kWh}',
            ]
        elif f.kind == "cjt188":
            family = cjt188.family_of(d["meter_type"])
            profile = {
                cjt188.Family.WATER: "cjt188-cold-water-meter",
                cjt188.Family.HEAT: "cjt188-heat-meter",
            }.get(family)
            name = device_id(f"{family}-{d['address']}")
            lines += [
                f"  - id: {name}",
                "    driver: cjt188",
                f"    bus: {bus_ids[f.where]}",
                f'    address: "{d["address"]}"',
                f'    meter_type: "{d["meter_type"]:02X}"',
                f"    di_order: {d['di_order']}",
            ]
            if profile is not None:
                lines.append(f"    profile: {profile}")
            else:
                lines += ["    points:", "      - {id: volume, field: cumulative_flow}"]
        elif f.kind == "opcua":
            lines += _opcua_device(f, device_id(f"opcua-{f.where.split('//')[-1]}"), config_dir)
    if not result.found:
        lines[-1] = "devices: []   # nothing answered"
    return "\n".join(lines) + "\n"


def _opcua_device(f: Found, dev_id: str, config_dir: Path) -> list[str]:
    endpoints: list[EndpointInfo] = f.detail["endpoints"]
    points: list[BrowseEntry] = f.detail["points"]
    choice = _endpoint_choice(endpoints)
    out = [
        f"  - id: {dev_id}",
        "    driver: opcua",
        f"    url: {f.where}",
        "    mode: poll             # or subscribe",
    ]
    for ep in endpoints:
        cert = f", certificate SHA-256 {ep.certificate}" if ep.certificate else ""
        out.append(f"    # offers {ep.mode}/{ep.policy}, level {ep.security_level}{cert}")
    if choice is not None and choice.mode != "None":
        pki = config_dir / "pki"
        _write_pki(pki, f.where, choice)
        out += [
            "    security:",
            f"      mode: {choice.mode}",
            f"      policy: {choice.policy}",
            "      certificate: pki/gateway-cert.pem   # give the server this certificate",
            "      private_key: pki/gateway-key.pem",
            f"      trusted_servers: [pki/trusted]      # verify: {choice.certificate}",
        ]
    if "anonymous" not in (choice.user_tokens if choice else ()):
        out += ["    username: CHANGE-ME", "    password: ${OPCUA_PASSWORD}"]
    out.append("    points:")
    for k, e in enumerate(points):
        kind = ", kind: bool" if e.data_type == "Boolean" else ""
        out.append(
            f'      - {{id: {_ident(e.display_name) or f"point_{k}"}, node: "{e.node}"{kind}}}'
        )
    if not points:
        out.append(
            '      - {id: point_1, node: "ns=2;s=CHANGE_ME"}   # metrogate browse lists nodes'
        )
    return out


def _write_pki(pki: Path, url: str, choice: EndpointInfo) -> None:
    """The gateway's application certificate (kept if there), and the scanned server's."""
    from drivers.opcua_security import create_application_certificate

    cert, key = pki / "gateway-cert.pem", pki / "gateway-key.pem"
    if not cert.exists():
        create_application_certificate(cert, key, "urn:metrogate:gateway")
    trusted = pki / "trusted"
    trusted.mkdir(parents=True, exist_ok=True)
    if choice.certificate_der:
        (trusted / f"{_ident(url.split('//')[-1])}.der").write_bytes(choice.certificate_der)


# ---------------------------------------------------------------------------- the command


def _units(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        a, b = int(lo), int(hi or lo)
        if not 0 <= a <= b <= 255:
            raise ValueError(f"units {text!r}: ids 0–255, e.g. 1-247 or 1,2,10-20")
        out += range(a, b + 1)
    return out


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":") if ":" in text else (text, "", "502")
    return host or text, int(port)


async def run_scan(
    *,
    modbus_tcp: Sequence[str] = (),
    serial: Sequence[str] = (),
    opcua: Sequence[str] = (),
    units: Sequence[int] = tuple(range(1, 248)),
    tcp_units: Sequence[int] | None = None,
    settings: Sequence[Setting] = SETTINGS,
    protocols: set[str] | None = None,
    reply_s: float = 0.1,
    tcp_reply_s: float = 0.3,
    time_budget: float = 300.0,
    max_requests: int = 5000,
    all_settings: bool = False,
) -> ScanResult:
    """Scan what is asked, within the budget; what answered, in the order found."""
    budget = Budget(time_budget, max_requests)
    out = ScanResult()
    kinds = protocols or {"modbus_rtu", "dlt645", "cjt188"}
    try:
        async with asyncio.timeout(time_budget + 30):  # a hard bound over the soft one
            for target in modbus_tcp:
                host, tcp_port = _host_port(target)
                await scan_modbus_tcp(host, tcp_port, tcp_units or units, tcp_reply_s, budget, out)
            for line in serial:
                await scan_serial(
                    line, settings, kinds, units, reply_s, budget, out, all_settings=all_settings
                )
            for url in opcua:
                await scan_opcua(url, max(tcp_reply_s, 2.0), budget, out)
    except Exhausted as exc:
        out.stopped = exc.reason
    except TimeoutError:
        out.stopped = "time budget reached (--time-budget)"
    out.requests, out.seconds = budget.requests, time.monotonic() - budget.started
    return out


def cmd_scan(args: argparse.Namespace) -> int:
    if not (args.modbus_tcp or args.serial or args.opcua):
        print("scan: say what to scan: --modbus-tcp HOST[:PORT], --serial PORT, --opcua URL",
              file=sys.stderr)  # fmt: skip
        return ExitCode.INVALID
    try:
        units = _units(args.units)
        settings = (
            [parse_setting(s) for s in args.settings.split(",")] if args.settings else SETTINGS
        )
        protocols = set(args.protocols.split(",")) if args.protocols else None
        if protocols and not protocols <= {"modbus_rtu", "dlt645", "cjt188"}:
            raise ValueError(f"--protocols {args.protocols!r}: modbus_rtu, dlt645, cjt188")
    except ValueError as exc:
        print(f"scan: {exc}", file=sys.stderr)
        return ExitCode.INVALID
    result = asyncio.run(
        run_scan(
            modbus_tcp=args.modbus_tcp or (),
            serial=args.serial or (),
            opcua=args.opcua or (),
            units=units,
            settings=settings,
            protocols=protocols,
            reply_s=args.timeout,
            tcp_reply_s=max(args.timeout, 0.3),
            time_budget=args.time_budget,
            max_requests=args.max_requests,
            all_settings=args.all_settings,
        )
    )
    for f in result.found:
        line = f" at {_setting_name(f.detail['line'])}" if "line" in f.detail else ""
        print(f"scan: {f.kind} {f.where}{line}: {f.text}")
    for note in result.notes:
        print(f"scan: note: {note}", file=sys.stderr)
    print(
        f"scan: {len(result.found)} found, {result.requests} request(s) in {result.seconds:.1f}s"
        + (f"; stopped: {result.stopped}" if result.stopped else "")
    )
    if args.output:
        path = Path(args.output)
        path.write_text(skeleton(result, path.resolve().parent))
        print(f"scan: wrote {path} (check it: metrogate check -c {path})")
    return ExitCode.OK if result.found else ExitCode.FAILED


def add_scan_parser(sub: Any) -> None:
    helptext = "find devices on a network or serial line and write a config skeleton"
    p = sub.add_parser("scan", help=helptext, description=helptext)
    p.add_argument("--modbus-tcp", action="append", metavar="HOST[:PORT]",
                   help="a Modbus TCP server (port 502 by default); repeatable")  # fmt: skip
    p.add_argument("--serial", action="append", metavar="PORT",
                   help="a serial line (/dev/ttyUSB0, socket://host:port); repeatable")  # fmt: skip
    p.add_argument("--opcua", action="append", metavar="URL",
                   help="an OPC UA endpoint (opc.tcp://host:4840); repeatable")  # fmt: skip
    p.add_argument("--units", default="1-247", help="Modbus unit ids to ask (default 1-247)")
    p.add_argument("--settings", default=None, metavar="BAUD-8E1,...",
                   help="serial line settings to try, in order (default: 9600-8E1, "
                   "19200-8E1, 9600-8N1, 19200-8N1, 2400-8E1, ...)")  # fmt: skip
    p.add_argument("--protocols", default=None, metavar="LIST",
                   help="on serial lines: modbus_rtu,dlt645,cjt188 (default all)")  # fmt: skip
    p.add_argument("--all-settings", action="store_true",
                   help="go on after the first line setting that answered")  # fmt: skip
    p.add_argument("--timeout", type=seconds, default=0.1, metavar="S",
                   help="reply timeout per request (default 0.1; TCP at least 0.3)")  # fmt: skip
    p.add_argument("--time-budget", type=seconds, default=300.0, metavar="S",
                   help="bound of the whole scan in seconds (default 300)")  # fmt: skip
    p.add_argument("--max-requests", type=count, default=5000, metavar="N",
                   help="bound of the whole scan in requests (default 5000)")  # fmt: skip
    p.add_argument("-o", "--output", metavar="FILE", help="write a config skeleton here")
    p.set_defaults(func=cmd_scan)
