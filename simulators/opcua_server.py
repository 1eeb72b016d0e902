"""A simulated OPC UA server (asyncua) built from a list of points, with faults.

:class:`OpcUaSim` serves on 127.0.0.1 on a free port. Each :class:`SimPoint` is a
variable below the Objects folder at its browse path (``Line1/Temp`` →
``2:Line1/2:Temp``, NodeId ``ns=2;s=Line1.Temp``, namespace ``urn:metrogate:sim``),
of an OPC UA data type (Double, Float, Int16/32/64, UInt16/32/64, Boolean,
String), with EngineeringUnits (EUInformation) and EURange properties when a unit
or range is given. Values come from :mod:`simulators.values` generators and are
written with a fresh source timestamp only when they change, as a PLC does.

Faults, at any time:

* :meth:`OpcUaSim.set_status` — the value's StatusCode (``BadSensorFailure``,
  ``UncertainLastUsableValue``, ...);
* :meth:`OpcUaSim.set_fault` — stuck, drift or step (:mod:`simulators.faults`);
* :meth:`OpcUaSim.drop_sessions` — every client connection is cut, so sessions and
  their subscriptions are gone;
* ``refuse_subscriptions`` — CreateSubscription answers BadTooManySubscriptions.

Security: ``endpoints`` lists what is offered as ``mode/policy`` (``None/None``,
``Sign/Basic256Sha256``, ``SignAndEncrypt/Aes128_Sha256_RsaOaep``, ...); secured
endpoints use a self-signed server certificate made in ``cert_dir``
(:attr:`OpcUaSim.certificate`). ``users`` enables user-name login (and disables
anonymous); ``trusted_clients`` restricts which client certificates are accepted.

Faults on request (:mod:`simulators.faults`), from a gateway config by
:func:`serve_opcua`, the simulator factory of the ``opcua`` driver kind: a point's
``status`` and value faults; a device's ``status`` / ``exception`` (every point
Bad), ``slow`` and ``silent`` (Read calls touching its points held), ``drop`` (every
connection cut every few seconds) and value faults of all its points.

Run as a process (``python -m simulators.opcua_server SPEC.json``) it prints one
JSON line ``{"url": ..., "certificate": ...}`` when it serves, then obeys JSON
commands, one per line on standard input, answering each with one line:
``{"cmd": "set", "point": "temp", "value": 3.5}``, ``{"cmd": "status", "point":
"temp", "status": "BadSensorFailure"}``, ``{"cmd": "fault", "point": "temp",
"fault": {"kind": "drift", "rate": 0.1}}`` (``null`` clears), ``{"cmd":
"drop_sessions"}``, ``{"cmd": "refuse_subscriptions", "on": true}``, ``{"cmd":
"stats"}`` (answers ``reads``, the Read service calls for simulated points). It stops at
end of input or on ``{"cmd": "stop"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import errno
import json
import logging
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self
from urllib.parse import urlsplit

from asyncua import Server, ua
from asyncua.common.callback import CallbackType
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.user_managers import UserManager
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from drivers.base import Value
from drivers.opcua_security import TrustList, create_application_certificate
from simulators.factory import (
    DeviceSim,
    PointSim,
    Served,
    SimConfigError,
    SimulatedDevice,
    SimulatedPoint,
    device_sim,
    point_sim,
)
from simulators.faults import SimValue, ValueFault, build_value_fault
from simulators.values import Generator, build_generator

__all__ = ["NAMESPACE", "OpcUaSim", "SimPoint", "main", "serve_opcua"]

log = logging.getLogger(__name__)

NAMESPACE = "urn:metrogate:sim"
APPLICATION_URI = "urn:metrogate:simulator"

_TYPES: dict[str, ua.VariantType] = {
    "Double": ua.VariantType.Double,
    "Float": ua.VariantType.Float,
    "Int16": ua.VariantType.Int16,
    "Int32": ua.VariantType.Int32,
    "Int64": ua.VariantType.Int64,
    "UInt16": ua.VariantType.UInt16,
    "UInt32": ua.VariantType.UInt32,
    "UInt64": ua.VariantType.UInt64,
    "Boolean": ua.VariantType.Boolean,
    "String": ua.VariantType.String,
}
_POLICY_TYPES: dict[str, ua.SecurityPolicyType] = {
    "None/None": ua.SecurityPolicyType.NoSecurity,
    "Sign/Basic256Sha256": ua.SecurityPolicyType.Basic256Sha256_Sign,
    "SignAndEncrypt/Basic256Sha256": ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
    "Sign/Aes128_Sha256_RsaOaep": ua.SecurityPolicyType.Aes128Sha256RsaOaep_Sign,
    "SignAndEncrypt/Aes128_Sha256_RsaOaep": (
        ua.SecurityPolicyType.Aes128Sha256RsaOaep_SignAndEncrypt
    ),
}


@dataclass
class SimPoint:
    """One simulated variable (see the module docstring).

    ``path`` is its browse path below Objects: ``Line1/Temp`` (names in namespace 2) or
    with namespace indices, ``3:Line1/3:Temp``. Its NodeId is ``node`` when given, else
    ``ns=N;s=Line1.Temp`` (N the namespace of the last name).
    """

    id: str
    path: str
    data_type: str = "Double"
    value: Generator | Value = 0.0
    status: str = "Good"
    unit: str | None = None
    low: float | None = None
    high: float | None = None
    node: str | None = None

    def __post_init__(self) -> None:
        if self.data_type not in _TYPES:
            raise ValueError(
                f"point {self.id!r}: data type {self.data_type!r} ({', '.join(_TYPES)})"
            )
        if not self.parts():
            raise ValueError(f"point {self.id!r}: empty path")
        if self.node is not None:
            ua.NodeId.from_string(self.node)
        _status_code(self.status)

    def parts(self) -> list[tuple[int, str]]:
        """The browse names of the path, each with its namespace index."""
        out: list[tuple[int, str]] = []
        for part in self.path.strip("/").split("/"):
            ns, sep, name = part.partition(":")
            if sep and ns.isdigit():
                out.append((int(ns), name))
            elif part:
                out.append((2, part))
        if out and out[0] == (0, "Objects"):
            out = out[1:]
        return out

    @property
    def node_id(self) -> str:
        if self.node is not None:
            return self.node
        parts = self.parts()
        return f"ns={parts[-1][0]};s=" + ".".join(name for _, name in parts)


def _status_code(name: str) -> int:
    code = getattr(ua.StatusCodes, name, None)
    if not isinstance(code, int):
        raise ValueError(f"unknown StatusCode {name!r}")
    return code


def _coerce(value: Value, data_type: str) -> Any:
    if data_type == "Boolean":
        return bool(value)
    if data_type == "String":
        return str(value)
    if data_type in ("Double", "Float"):
        return float(value)
    return round(float(value))


@dataclass
class _Live:
    point: SimPoint
    node: Any
    value: SimValue
    status: int
    written: tuple[Any, int] | None = None


class _Users(UserManager):
    """User-name login against a fixed table (anonymous refused)."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self.users = dict(users)

    def get_user(
        self,
        iserver: Any,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        if username is not None and self.users.get(username) == password:
            return User(role=UserRole.User, name=username)
        return None


@dataclass
class _Settings:
    endpoints: tuple[str, ...] = ("None/None",)
    users: dict[str, str] = field(default_factory=dict)
    trusted_clients: tuple[Path, ...] = ()
    update_interval: float = 0.05


class OpcUaSim:
    """The simulated server (an async context manager; see the module docstring)."""

    def __init__(
        self,
        points: Sequence[SimPoint],
        *,
        cert_dir: Path | None = None,
        endpoints: Sequence[str] = ("None/None",),
        users: Mapping[str, str] | None = None,
        trusted_clients: Sequence[Path] = (),
        update_interval: float = 0.05,
        refuse_subscriptions: bool = False,
        port: int = 0,
        path: str = "/metrogate/sim",
    ) -> None:
        ids = [p.id for p in points]
        if len(set(ids)) != len(ids):
            raise ValueError("point ids must be unique")
        for e in endpoints:
            if e not in _POLICY_TYPES:
                raise ValueError(f"endpoint {e!r}: one of {', '.join(_POLICY_TYPES)}")
        if any(e != "None/None" for e in endpoints) and cert_dir is None:
            raise ValueError("secured endpoints need cert_dir for the server certificate")
        self.points = list(points)
        self._settings = _Settings(
            tuple(endpoints), dict(users or {}), tuple(trusted_clients), update_interval
        )
        self.cert_dir = cert_dir
        self.certificate: Path | None = None
        self.refuse_subscriptions = refuse_subscriptions
        self.port = port
        self._fixed_port = port != 0
        self.path = "/" + path.lstrip("/")
        self._server: Server | None = None
        self._live: dict[str, _Live] = {}
        self._start = time.monotonic()
        self._stack = contextlib.AsyncExitStack()
        self._updater: asyncio.Task[None] | None = None
        self._dropper: asyncio.Task[None] | None = None
        self.reads = 0
        """Read service calls for simulated points since start (one poll should be one)."""
        self._held: list[tuple[frozenset[str], float]] = []
        self._drop_every: float | None = None
        self._stopping = asyncio.Event()

    @property
    def url(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.port}{self.path}"

    def now(self) -> float:
        """Seconds since start: the ``t`` of generators and faults."""
        return time.monotonic() - self._start

    # ------------------------------------------------------------------ life cycle

    async def __aenter__(self) -> Self:
        for attempt in range(5):
            if not self._fixed_port:
                self.port = _free_port()
            try:
                await self._start_server()
                break
            except OSError as exc:  # the port was taken between choosing and binding it
                await self._stop_server()
                if self._fixed_port or exc.errno != errno.EADDRINUSE or attempt == 4:
                    raise
        tasks = await self._stack.enter_async_context(asyncio.TaskGroup())
        self._updater = tasks.create_task(self._update_loop(), name="opcua-sim-update")
        self._dropper = tasks.create_task(self._drop_loop(), name="opcua-sim-drop")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stopping.set()  # held reads give up at once
        for task in (self._updater, self._dropper):
            if task is not None:
                task.cancel()
        await self._stack.aclose()
        await self._stop_server()

    async def _start_server(self) -> None:
        s = self._settings
        server = Server(user_manager=_Users(s.users) if s.users else None)
        self._server = server
        await server.init()
        await server.set_application_uri(APPLICATION_URI)
        server.set_server_name("metrogate simulated OPC UA server")
        server.set_endpoint(self.url)
        await server.set_build_info(
            "urn:metrogate:sim",
            "metrogate",
            "metrogate OPC UA simulator",
            "0.1",
            "1",
            dt.datetime.now(dt.UTC),
        )
        server.set_security_policy([_POLICY_TYPES[e] for e in s.endpoints])
        tokens: list[type] = [ua.UserNameIdentityToken] if s.users else [ua.AnonymousIdentityToken]
        server.set_identity_tokens(tokens)
        if any(e != "None/None" for e in s.endpoints):
            assert self.cert_dir is not None
            cert, key = self.cert_dir / "server-cert.pem", self.cert_dir / "server-key.pem"
            if not cert.exists():
                create_application_certificate(
                    cert, key, APPLICATION_URI, common_name="metrogate simulator", server=True
                )
            await server.load_certificate(str(cert))
            await server.load_private_key(str(key))
            self.certificate = cert
        if s.trusted_clients:
            trusted = TrustList(s.trusted_clients)

            async def validate(cert: x509.Certificate, _app: ua.ApplicationDescription) -> None:
                from asyncua.common.utils import ServiceError

                if not trusted.trusts(cert.public_bytes(serialization.Encoding.DER)):
                    raise ServiceError(ua.StatusCodes.BadCertificateUntrusted)

            server.set_certificate_validator(validate)
        if self.refuse_subscriptions:
            server.iserver.max_subscriptions = 0
        server.subscribe_server_callback(CallbackType.PreRead, self._pre_read)
        idx = await server.register_namespace(NAMESPACE)
        # points may live in higher namespaces (a PLC's are often 3 or 4): make them exist
        wanted = max((ns for p in self.points for ns, _ in p.parts()), default=idx)
        wanted = max(
            [wanted, *(ua.NodeId.from_string(p.node_id).NamespaceIndex for p in self.points)]
        )
        for k in range(idx + 1, wanted + 1):
            await server.register_namespace(f"{NAMESPACE}:{k}")
        await self._build(server, idx)
        await server.start()

    async def _pre_read(self, event: Any, _dispatcher: Any) -> None:
        """Count Read service calls that ask for simulated points (not the server's own),
        and hold those that touch a point whose reads are held (``slow``, ``silent``)."""
        nodes = getattr(event.request_params, "NodesToRead", None) or []
        if any(rv.NodeId.NamespaceIndex >= 2 for rv in nodes):
            self.reads += 1
        if not self._held:
            return
        asked = {rv.NodeId.to_string() for rv in nodes}
        delay = max((seconds for held, seconds in self._held if held & asked), default=0.0)
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()

    def hold_reads(self, points: Sequence[str], seconds: float) -> None:
        """Answer Read calls that touch any of ``points`` only after ``seconds`` (a slow
        server; a long hold is a silent one). The other points are answered at once."""
        nodes = frozenset(
            ua.NodeId.from_string(self._get(p).point.node_id).to_string() for p in points
        )
        self._held.append((nodes, seconds))

    def drop_every(self, seconds: float | None) -> None:
        """Cut every client connection every ``seconds`` (None: stop doing so)."""
        self._drop_every = seconds

    async def _drop_loop(self) -> None:
        while True:
            every = self._drop_every
            await asyncio.sleep(every if every is not None else 0.25)
            if every is not None and self._drop_every is not None:
                self.drop_sessions()

    async def _stop_server(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            with contextlib.suppress(Exception):  # a server that never started stops anyway
                await server.stop()

    async def _build(self, server: Server, idx: int) -> None:
        folders: dict[tuple[tuple[int, str], ...], Any] = {}
        variables: dict[str, _Live] = {}
        for p in self.points:
            parts = p.parts()
            if p.node_id in variables:  # two devices read one variable: one node serves both
                self._live[p.id] = variables[p.node_id]
                continue
            parent = server.nodes.objects
            for depth in range(1, len(parts)):
                key = tuple(parts[:depth])
                if key not in folders:
                    ns, name = parts[depth - 1]
                    nid = _sid(".".join(n for _, n in parts[:depth]), ns)
                    folders[key] = await parent.add_object(nid, ua.QualifiedName(name, ns))
                parent = folders[key]
            sim_value = SimValue(p.value)
            first = _coerce(sim_value.value(0.0), p.data_type)
            vtype = _TYPES[p.data_type]
            ns, name = parts[-1]
            node = await parent.add_variable(
                ua.NodeId.from_string(p.node_id),
                ua.QualifiedName(name, ns),
                ua.Variant(first, vtype),
                varianttype=vtype,
            )
            if p.unit is not None:
                eu = ua.EUInformation()
                eu.NamespaceUri = "http://www.opcfoundation.org/UA/units/un/cefact"
                eu.UnitId = -1
                eu.DisplayName = ua.LocalizedText(p.unit)
                eu.Description = ua.LocalizedText(p.unit)
                await node.add_property(
                    _sid(f"{p.id}.EngineeringUnits", idx),
                    ua.QualifiedName("EngineeringUnits", 0),
                    eu,
                )
            if p.low is not None and p.high is not None:
                rng = ua.Range()
                rng.Low, rng.High = float(p.low), float(p.high)
                await node.add_property(
                    _sid(f"{p.id}.EURange", idx), ua.QualifiedName("EURange", 0), rng
                )
            live = _Live(p, node, sim_value, _status_code(p.status))
            self._live[p.id] = variables[p.node_id] = live
            await self._write(live, force=True)

    # ------------------------------------------------------------------ values and faults

    async def _write(self, live: _Live, *, force: bool = False) -> None:
        value = _coerce(live.value.value(self.now()), live.point.data_type)
        state = (value, live.status)
        if not force and state == live.written:
            return
        live.written = state
        now = ua.DateTime.now(dt.UTC)
        dv = ua.DataValue(
            ua.Variant(value, _TYPES[live.point.data_type]),
            ua.StatusCode(ua.UInt32(live.status)),
            SourceTimestamp=now,
            ServerTimestamp=now,
        )
        await live.node.write_value(dv)

    async def _update_loop(self) -> None:
        while True:
            await asyncio.sleep(self._settings.update_interval)
            for live in {id(v): v for v in self._live.values()}.values():
                await self._write(live)

    def _get(self, point: str) -> _Live:
        live = self._live.get(point)
        if live is None:
            raise KeyError(f"no point {point!r} (have {', '.join(self._live)})")
        return live

    async def set_value(self, point: str, value: Generator | Value) -> None:
        live = self._get(point)
        live.value.set(value, self.now())
        await self._write(live)

    async def set_status(self, point: str, status: str) -> None:
        live = self._get(point)
        live.status = _status_code(status)
        await self._write(live)

    async def set_fault(self, point: str, fault: ValueFault | None) -> None:
        live = self._get(point)
        live.value.set_fault(fault, self.now())
        await self._write(live)

    def drop_sessions(self) -> int:
        """Cut every client connection; returns how many there were."""
        server = self._server
        if server is None or server.bserver is None:
            return 0
        clients = list(server.bserver.clients)
        for c in clients:
            if c.transport is not None:
                c.transport.abort()
        return len(clients)

    def set_refuse_subscriptions(self, on: bool) -> None:
        self.refuse_subscriptions = on
        if self._server is not None:
            self._server.iserver.max_subscriptions = 0 if on else 1_000

    async def command(self, cmd: Mapping[str, Any]) -> dict[str, Any]:
        """One control command (the process protocol of the module docstring)."""
        match cmd.get("cmd"):
            case "set":
                await self.set_value(str(cmd["point"]), build_generator(cmd.get("value"), 0.0))
            case "status":
                await self.set_status(str(cmd["point"]), str(cmd["status"]))
            case "fault":
                await self.set_fault(str(cmd["point"]), build_value_fault(cmd.get("fault")))
            case "drop_sessions":
                return {"ok": True, "dropped": self.drop_sessions()}
            case "refuse_subscriptions":
                self.set_refuse_subscriptions(bool(cmd.get("on", True)))
            case "stats":
                return {"ok": True, "reads": self.reads}
            case other:
                raise ValueError(f"unknown command {other!r}")
        return {"ok": True}


class _PointLike(SimulatedPoint, Protocol):
    @property
    def node(self) -> str | None: ...

    @property
    def path(self) -> str | None: ...

    @property
    def kind(self) -> str: ...

    @property
    def unit(self) -> str | None: ...

    @property
    def low(self) -> float | None: ...

    @property
    def high(self) -> float | None: ...


class _SecurityLike(Protocol):
    @property
    def mode(self) -> str: ...

    @property
    def policy(self) -> str: ...

    trusted_servers: list[Path]


class OpcUaDeviceLike(SimulatedDevice, Protocol):
    """An ``opcua`` device config as :func:`serve_opcua` reads (and re-points) it."""

    url: str

    @property
    def points(self) -> Sequence[_PointLike]: ...

    @property
    def security(self) -> _SecurityLike: ...

    @property
    def username(self) -> str | None: ...

    @property
    def password(self) -> Any: ...


_KIND_TYPES = {"number": "Double", "bool": "Boolean", "string": "String"}
_KIND_DEFAULTS: dict[str, Value] = {"number": 0.0, "bool": False, "string": ""}
DEVICE_FAULTS = ("silent", "slow", "exception", "status", "drop")
"""What :func:`serve_opcua` does for a device (besides value faults)."""
POINT_FAULTS = ("status",)
SILENT_S = 3600.0
"""How long a ``silent`` device's reads are held: longer than any client waits."""


def _browse_path(device: str, p: _PointLike) -> str:
    """Where a point's variable sits: its browse path, or one derived from a string
    NodeId (``ns=2;s=Line1.Temp`` → ``2:Line1/2:Temp``), else ``Points/<device>.<id>``."""
    if p.path is not None:
        return p.path
    node = ua.NodeId.from_string(p.node or "")
    text = node.Identifier
    if isinstance(text, str) and '"' not in text and all(text.split(".")):
        return "/".join(f"{node.NamespaceIndex}:{part}" for part in text.split("."))
    return f"{node.NamespaceIndex}:Points/{node.NamespaceIndex}:{device}.{p.id}"


@dataclass(frozen=True, slots=True)
class _AsServed:
    """A point's engineering value as the server holds it (before the client's scale and
    offset), as the Modbus simulators store register contents."""

    engineering: Generator
    scale: float
    offset: float

    def value(self, t: float) -> Value:
        v = self.engineering.value(t)
        if isinstance(v, bool | str):
            return v
        return (v - self.offset) / self.scale


def _sim_point(device: OpcUaDeviceLike, p: _PointLike, dev: DeviceSim) -> SimPoint:
    ps: PointSim = point_sim(
        device, p, _KIND_DEFAULTS.get(p.kind, 0.0), supported=POINT_FAULTS, with_device=dev
    )
    value: Generator = ps.value
    scale, offset = getattr(p, "scale", 1.0), getattr(p, "offset", 0.0)
    if (scale, offset) != (1.0, 0.0) and scale != 0:
        value = _AsServed(value, scale, offset)
    status = ps.status
    down = dev.has("status") or dev.has("exception")
    if status is None and down is not None:
        status = down.status or "BadDeviceFailure"
    try:
        return SimPoint(
            id=f"{device.id}.{p.id}",
            path=_browse_path(device.id, p),
            data_type=ps.data_type or _KIND_TYPES.get(p.kind, "Double"),
            value=value,
            status=status or "Good",
            unit=p.unit,
            low=p.low,
            high=p.high,
            node=p.node,
        )
    except ValueError as exc:
        raise SimConfigError(f"devices {device.id} point {p.id}: {exc}", device.id, p.id) from None


@asynccontextmanager
async def serve_opcua(
    devices: Sequence[OpcUaDeviceLike], *, free_ports: bool = False
) -> AsyncIterator[list[Served]]:
    """One simulated server per endpoint of ``devices`` (devices naming the same URL
    share it), on 127.0.0.1, serving each device's points where its config looks for
    them (NodeId or browse path; a point's ``sim:`` gives its value, status, data type
    and faults, its ``kind`` the data type otherwise). It offers None/None and the
    security mode and policy the devices use, and the devices' user names. With
    ``free_ports`` it binds free ports, points each device's ``url`` at its server and
    adds the server's certificate to a secured device's ``trusted_servers``."""
    groups: dict[tuple[int, str], list[OpcUaDeviceLike]] = {}
    for d in devices:
        u = urlsplit(d.url)
        groups.setdefault((u.port or 4840, u.path or "/"), []).append(d)
    served: list[Served] = []
    async with AsyncExitStack() as stack:
        for (port, path), devs in groups.items():
            faults = {d.id: device_sim(d, DEVICE_FAULTS) for d in devs}
            points = [_sim_point(d, p, faults[d.id]) for d in devs for p in d.points]
            endpoints = [
                "None/None",
                *sorted({f"{d.security.mode}/{d.security.policy}" for d in devs} - {"None/None"}),
            ]
            users = {
                d.username: (d.password.get_secret_value() if d.password is not None else "")
                for d in devs
                if d.username is not None
            }
            cert_dir = None
            if len(endpoints) > 1:
                cert_dir = Path(
                    stack.enter_context(tempfile.TemporaryDirectory(prefix="mg-opcua-"))
                )
            sim = OpcUaSim(
                points,
                cert_dir=cert_dir,
                endpoints=endpoints,
                users=users,
                port=0 if free_ports else port,
                path=path,
            )
            await stack.enter_async_context(sim)
            for d in devs:
                dev = faults[d.id]
                ids = [f"{d.id}.{p.id}" for p in d.points]
                for kind, seconds in (("silent", SILENT_S), ("slow", None)):
                    fault = dev.has(kind)
                    if fault is not None:
                        sim.hold_reads(ids, seconds if seconds is not None else fault.delay)
                drop = dev.has("drop")
                if drop is not None:
                    sim.drop_every(drop.every)
                if free_ports:
                    d.url = sim.url
                    if sim.certificate is not None and d.security.mode != "None":
                        d.security.trusted_servers.append(sim.certificate)
            served.append(Served(sim.url, tuple(d.id for d in devs), sim))
        yield served


def _sid(text: str, idx: int) -> ua.NodeId:
    """A string NodeId in namespace ``idx``."""
    return ua.NodeId(ua.String(text), ua.Int16(idx))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def points_from_spec(items: Sequence[Mapping[str, Any]]) -> list[SimPoint]:
    """SimPoints from JSON/YAML mappings (``id``, ``path``, ``type``, ``value``, ...)."""
    out = []
    for item in items:
        rng = item.get("range")
        out.append(
            SimPoint(
                id=str(item["id"]),
                path=str(item["path"]),
                data_type=str(item.get("type", "Double")),
                value=build_generator(item.get("value"), 0.0),
                status=str(item.get("status", "Good")),
                unit=item.get("unit"),
                low=float(rng[0]) if rng else None,
                high=float(rng[1]) if rng else None,
                node=item.get("node"),
            )
        )
    return out


async def _serve(spec: Mapping[str, Any]) -> None:
    sim = OpcUaSim(
        points_from_spec(spec.get("points", [])),
        cert_dir=Path(spec["cert_dir"]) if spec.get("cert_dir") else None,
        endpoints=spec.get("endpoints", ["None/None"]),
        users=spec.get("users"),
        trusted_clients=[Path(p) for p in spec.get("trusted_clients", [])],
        update_interval=float(spec.get("update_interval", 0.05)),
        refuse_subscriptions=bool(spec.get("refuse_subscriptions", False)),
    )
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    async with sim:
        ready = {"url": sim.url, "certificate": str(sim.certificate) if sim.certificate else None}
        print(json.dumps(ready), flush=True)
        for _ in range(10_000_000):
            line = await reader.readline()
            if not line:
                return
            try:
                cmd = json.loads(line)
                if cmd.get("cmd") == "stop":
                    print(json.dumps({"ok": True}), flush=True)
                    return
                reply = await sim.command(cmd)
            except Exception as exc:  # one bad command is answered, the server keeps serving
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            print(json.dumps(reply), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m simulators.opcua_server SPEC.json`` (see the module docstring)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m simulators.opcua_server SPEC.json", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    spec = json.loads(Path(args[0]).read_text())
    asyncio.run(_serve(spec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
