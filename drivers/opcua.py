"""OPC UA client driver (asyncua): polling with one Read per poll, or subscriptions.

One :class:`OpcUaDriver` is one server endpoint (``opc.tcp://host:4840/path``) and
the points read from it, each by NodeId (``ns=2;s=Line1.Temp``) or by browse path
below the Objects folder (``2:Line1/2:Temp``).

Connecting (lazily, in :meth:`OpcUaDriver.read`):

1. For a secured endpoint (``Sign`` or ``SignAndEncrypt`` with ``Basic256Sha256`` or
   ``Aes128_Sha256_RsaOaep``), ask the server for its endpoints over an unsecured
   channel, pick the one with the configured mode and policy, and check its
   certificate against the trust list (:class:`drivers.opcua_security.TrustList`) —
   an unknown server is refused (:class:`UntrustedServer`) before anything secret
   is sent, unless ``trust_unknown_server`` is set. The client presents its own
   certificate and key; its application URI is taken from that certificate.
2. Open the session (user name and password, or anonymous).
3. Resolve browse paths (one TranslateBrowsePathsToNodeIds call) and check every
   node (one Read of NodeClass and DataType for all): an unknown node, an object
   where a variable is wanted or a type that cannot be the point's kind is a
   located :class:`PointProblem` — that point reads ``bad``/``config_error`` every
   poll, the others are read. The engineering unit (EUInformation) and range
   (EURange) of points that do not configure them are read from their properties.
4. In subscription mode, create one subscription and one monitored item per point
   (sampling interval, queue size, absolute or percent deadband); an item the
   server refuses is a :class:`PointProblem`, a refused subscription a
   :class:`SubscriptionRefused`.

Reading:

* ``poll``: one Read service call for all points of the device, timestamps Both.
* ``subscribe``: every data change the server sent since the previous read, in
  arrival order — several per point when its queue held several, none for a point
  that did not change (report by exception): a value is reported once, with its
  own time, never again with a new stamp.

Every sample is stamped with the value's source timestamp (the server timestamp,
then the arrival time, when the server gives none); the server timestamp is kept
in ``Sample.server_ts_us``. The StatusCode gives quality and reason
(:mod:`drivers.opcua_status`). A value the point's kind cannot hold (text for a
number, an array) is ``bad``/``invalid_value``, never a zero.

Failures: a lost session, a timeout or a refused connection raise a
:class:`drivers.base.DriverError` naming device and endpoint; the session is dropped
and the next read connects anew (and re-creates the subscription), so the caller's
back-off spaces the attempts — one back-off policy for every driver. In subscription
mode a read after a loss still returns the changes received before it, followed by a
``bad`` sample per point for the gap. Nothing here raises anything but
``DriverError`` (or ``CancelledError``): asyncua's own exceptions are mapped at this
boundary.

:func:`browse` lists the nodes below a path (for writing a config) and
:func:`discover` the endpoints and security policies a server offers.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import socket
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import urlsplit, urlunsplit

from asyncua import Client, ua
from asyncua.common.subscription import DataChangeEvent, StatusChangeEvent, Subscription
from asyncua.crypto import security_policies, uacrypto

from drivers.base import (
    Clock,
    DeviceRejected,
    DeviceTimeout,
    DeviceUnreachable,
    DriverError,
    ProtocolError,
    Quality,
    Reason,
    Sample,
    Value,
    scaled,
    utc_now_us,
)
from drivers.cancel import reraise_pending_cancel
from drivers.opcua_security import (
    TrustList,
    application_uri_of,
    fingerprint,
    load_certificate,
)
from drivers.opcua_status import quality_of, status_name

__all__ = [
    "AuthenticationFailed",
    "BrowseEntry",
    "Deadband",
    "EndpointInfo",
    "Engineering",
    "OpcUaDriver",
    "OpcUaPoint",
    "PointProblem",
    "Security",
    "SecurityRejected",
    "SubscriptionRefused",
    "UntrustedServer",
    "browse",
    "discover",
    "parse_node_id",
    "plan_lines",
    "relative_path",
]

log = logging.getLogger(__name__)

Mode = Literal["None", "Sign", "SignAndEncrypt"]
Policy = Literal["None", "Basic256Sha256", "Aes128_Sha256_RsaOaep"]
Kind = Literal["number", "bool", "string"]

POLICIES: dict[str, type[security_policies.SecurityPolicy]] = {
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
    "Aes128_Sha256_RsaOaep": security_policies.SecurityPolicyAes128Sha256RsaOaep,
}
MODES: dict[str, ua.MessageSecurityMode] = {
    "None": ua.MessageSecurityMode.None_,
    "Sign": ua.MessageSecurityMode.Sign,
    "SignAndEncrypt": ua.MessageSecurityMode.SignAndEncrypt,
}
_NONE_URI = security_policies.SecurityPolicyNone.URI

# DataType NodeIds of namespace 0 whose values a point of each kind can hold
_NUMERIC = {2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 26, 27, 28, 50, 289, 290}
_KINDS: dict[Kind, set[int]] = {"number": _NUMERIC, "bool": {1}, "string": {12}}
_NOT_SCALAR = {13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 294, 884, 887}  # DateTime … Range
_KNOWN_TYPES = _NOT_SCALAR.union(*_KINDS.values())
_DATA_TYPE_NAMES = {
    1: "Boolean",
    12: "String",
    13: "DateTime",
    15: "ByteString",
    21: "LocalizedText",
}

_AUTH_CODES = {"BadUserAccessDenied", "BadIdentityTokenInvalid", "BadIdentityTokenRejected"}
_SECURITY_CODES = {
    "BadCertificateUntrusted",
    "BadCertificateInvalid",
    "BadCertificateTimeInvalid",
    "BadCertificateUriInvalid",
    "BadCertificateUseNotAllowed",
    "BadCertificateHostNameInvalid",
    "BadCertificateRevoked",
    "BadSecurityChecksFailed",
    "BadSecurityPolicyRejected",
    "BadSecurityModeRejected",
}


# ---------------------------------------------------------------------------- errors


class UntrustedServer(DriverError):
    """The server's certificate is not in the trust list (the message has its fingerprint)."""

    reason = Reason.CONFIG_ERROR


class SecurityRejected(DriverError):
    """The server refused the secure channel or our certificate, or lacks the endpoint."""

    reason = Reason.CONFIG_ERROR


class AuthenticationFailed(DriverError):
    """The server refused the user name and password (or anonymous access)."""

    reason = Reason.CONFIG_ERROR


class SubscriptionRefused(DeviceRejected):
    """The server refused to create the subscription."""


class PointProblem(DriverError):
    """One point cannot be read as configured; carries the point and its node."""

    reason = Reason.CONFIG_ERROR

    def __init__(
        self, device: str, endpoint: str, point: str, node: str, message: str, reason: Reason
    ) -> None:
        super().__init__(device, endpoint, f"point {point} ({node}): {message}")
        self.point = point
        self.node = node
        self.reason = reason


# ---------------------------------------------------------------------------- configuration


@dataclass(frozen=True, slots=True)
class Security:
    """How the channel is secured and whom it trusts.

    ``mode`` and ``policy`` are both ``None`` or both set; a secured channel needs the
    client ``certificate`` and ``private_key`` (PEM or DER files). The server must be
    in ``trusted_servers`` (certificate files or folders) unless
    ``trust_unknown_server``.
    """

    mode: Mode = "None"
    policy: Policy = "None"
    certificate: Path | None = None
    private_key: Path | None = None
    trusted_servers: tuple[Path, ...] = ()
    trust_unknown_server: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"security mode {self.mode!r}: one of {', '.join(MODES)}")
        if self.policy != "None" and self.policy not in POLICIES:
            raise ValueError(f"security policy {self.policy!r}: None, {', '.join(POLICIES)}")
        if (self.mode == "None") != (self.policy == "None"):
            raise ValueError(
                f"security mode {self.mode} needs a matching policy, not {self.policy}"
            )
        if self.mode != "None" and (self.certificate is None or self.private_key is None):
            raise ValueError(f"security mode {self.mode} needs a client certificate and key")

    @property
    def secured(self) -> bool:
        return self.mode != "None"


@dataclass(frozen=True, slots=True)
class Deadband:
    """A data-change filter: report a change only beyond ``value`` (units or % of EURange)."""

    kind: Literal["absolute", "percent"]
    value: float

    def __post_init__(self) -> None:
        if self.kind not in ("absolute", "percent") or not self.value >= 0:
            raise ValueError(f"deadband {self.kind} {self.value}: absolute or percent, ≥ 0")
        if self.kind == "percent" and self.value > 100:
            raise ValueError(f"percent deadband {self.value} > 100")


@dataclass(frozen=True, slots=True)
class OpcUaPoint:
    """One point: where it is on the server and how to read it.

    Exactly one of ``node`` (a NodeId string) and ``path`` (browse names below the
    Objects folder, ``ns:Name`` separated by ``/``). ``sampling_interval`` (seconds;
    default the publishing interval), ``queue_size`` and ``deadband`` matter in
    subscription mode only. ``unit``, ``low`` and ``high`` override the server's
    EUInformation and EURange.
    """

    id: str
    node: str | None = None
    path: str | None = None
    kind: Kind = "number"
    scale: float = 1.0
    offset: float = 0.0
    sampling_interval: float | None = None
    queue_size: int = 1
    deadband: Deadband | None = None
    unit: str | None = None
    low: float | None = None
    high: float | None = None

    def __post_init__(self) -> None:
        if (self.node is None) == (self.path is None):
            raise ValueError(f"point {self.id!r}: give exactly one of node and path")
        if self.node is not None:
            parse_node_id(self.node)
        if self.path is not None:
            relative_path(self.path)
        if self.kind not in _KINDS:
            raise ValueError(f"point {self.id!r}: kind {self.kind!r} (number, bool or string)")
        if self.queue_size < 1:
            raise ValueError(f"point {self.id!r}: queue_size must be ≥ 1")
        if self.sampling_interval is not None and self.sampling_interval < 0:
            raise ValueError(f"point {self.id!r}: sampling_interval must be ≥ 0")

    @property
    def where(self) -> str:
        return self.node if self.node is not None else f"path {self.path}"


def plan_lines(mode: str, publishing_interval: float, points: Sequence[OpcUaPoint]) -> list[str]:
    """What one poll asks of the server, as ``metrogate plan`` prints it (one line)."""
    where = ", ".join(f"{p.id}={p.where}" for p in points)
    if mode == "poll":
        return [f"Read of {len(points)} values (one service call): {where}"]
    return [f"subscription every {publishing_interval:g}s, {len(points)} monitored items: {where}"]


def parse_node_id(text: str) -> ua.NodeId:
    """``ns=2;s=Line1.Temp`` (also ``i=``, ``g=``, ``b=``) → NodeId; ValueError if malformed."""
    try:
        return ua.NodeId.from_string(text)
    except Exception as exc:  # asyncua raises several types for a bad string
        raise ValueError(f"NodeId {text!r}: {exc}") from None


def relative_path(text: str) -> ua.RelativePath:
    """``2:Line1/2:Temp`` (below Objects; a leading ``Objects/`` is allowed) → RelativePath."""
    parts = [part for part in text.strip().split("/") if part]
    if parts and parts[0] in ("Objects", "0:Objects"):
        parts = parts[1:]
    path = "/".join(parts)
    if not path:
        raise ValueError(f"browse path {text!r} is empty")
    try:
        return ua.RelativePath.from_string("/" + path)
    except Exception as exc:
        raise ValueError(f"browse path {text!r}: {exc}") from None


@dataclass(frozen=True, slots=True)
class Engineering:
    """A point's engineering unit and range, from the config or the server."""

    unit: str | None = None
    low: float | None = None
    high: float | None = None


# ---------------------------------------------------------------------------- helpers


def _plain_url(url: str) -> str:
    """The URL without user name or password (endpoints are logged)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _us(when: dt.datetime | None) -> int | None:
    """A UTC datetime → µs since the epoch; OPC UA's "no time" (before 1971) → None."""
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    if when.year < 1971:
        return None
    return (when - _EPOCH) // _MICROSECOND


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)


def _status_error(device: str, endpoint: str, code: int, doing: str) -> DriverError:
    """The error for a service or subscription that ended with a Bad StatusCode."""
    name = status_name(code)
    message = f"{doing}: server answered {name}"
    if name in _AUTH_CODES:
        return AuthenticationFailed(device, endpoint, message + " (user name or password)")
    if name in _SECURITY_CODES:
        return SecurityRejected(device, endpoint, message + " (does it trust our certificate?)")
    _quality, reason = quality_of(code)
    if reason is Reason.NO_COMMUNICATION:
        return DeviceUnreachable(device, endpoint, message)
    return DeviceRejected(device, endpoint, message, code, reason or Reason.DEVICE_FAILURE)


def _as_error(device: str, endpoint: str, exc: BaseException, doing: str) -> DriverError:
    """Map any failure of asyncua (or the network) to a typed :class:`DriverError`."""
    if isinstance(exc, DriverError):
        return exc
    if isinstance(exc, ua.UaStatusCodeError):
        return _status_error(device, endpoint, int(exc.code), doing)
    if isinstance(exc, TimeoutError):
        return DeviceTimeout(device, endpoint, f"{doing}: no answer in time")
    if isinstance(exc, OSError | ConnectionError | EOFError):
        return DeviceUnreachable(device, endpoint, f"{doing}: {exc or type(exc).__name__}")
    return ProtocolError(device, endpoint, f"{doing}: {type(exc).__name__}: {exc}")


def _check_kind(kind: Kind, value: object) -> str | None:
    """Why ``value`` cannot be a ``kind`` point's value, or None if it can."""
    if isinstance(value, list | tuple):
        return "an array, not a scalar"
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"a {type(value).__name__}, not a number"
        if isinstance(value, float) and not math.isfinite(value):
            return f"{value} is not a finite number"
        return None
    if kind == "bool":
        return None if isinstance(value, bool) else f"a {type(value).__name__}, not a boolean"
    return None if isinstance(value, str) else f"a {type(value).__name__}, not a string"


def sample_of(
    point: OpcUaPoint, dv: ua.DataValue, now_us: int, problem: str | None = None
) -> tuple[Sample, str | None]:
    """A DataValue as a sample of ``point``, and why it is unusable (None when it is fine).

    Pure: the stamp is the source timestamp, else the server timestamp, else
    ``now_us``; quality and reason come from the StatusCode.
    """
    quality, reason = quality_of(_code(dv))
    server_ts = _us(dv.ServerTimestamp)
    ts = _us(dv.SourceTimestamp) or server_ts or now_us
    if quality is Quality.BAD:
        return Sample(point.id, None, None, quality, reason, ts, server_ts_us=server_ts), None
    value: Any = dv.Value.Value if dv.Value is not None else None
    why = "no value" if value is None else _check_kind(point.kind, value)
    if why is not None:
        bad = Sample(
            point.id, None, None, Quality.BAD, Reason.INVALID_VALUE, ts, server_ts_us=server_ts
        )
        return bad, why
    raw: Value = value
    eng: Value | None = raw
    if point.kind == "number" and (point.scale, point.offset) != (1.0, 0.0):
        eng = scaled(float(raw), point.scale, point.offset)
        if eng is None:
            bad = Sample(
                point.id, None, None, Quality.BAD, Reason.INVALID_VALUE, ts, server_ts_us=server_ts
            )
            return bad, f"{raw!r} scaled by {point.scale:g} and offset {point.offset:g} is no float"
    return Sample(point.id, eng, raw, quality, reason, ts, server_ts_us=server_ts), None


def _read_params(nodes: Sequence[tuple[ua.NodeId, ua.AttributeIds]]) -> ua.ReadParameters:
    params = ua.ReadParameters()
    params.TimestampsToReturn = ua.TimestampsToReturn.Both
    params.MaxAge = 0
    for node, attr in nodes:
        rv = ua.ReadValueId()
        rv.NodeId = node
        rv.AttributeId = attr
        params.NodesToRead.append(rv)
    return params


# ---------------------------------------------------------------------------- connection


async def _open_client(
    device: str,
    url: str,
    security: Security,
    username: str | None,
    password: str | None,
    request_timeout: float,
) -> tuple[Client, dict[str, str]]:
    """A connected client (see the module docstring, steps 1–2) and the server's identity."""
    endpoint = _plain_url(url)
    client = Client(url, timeout=request_timeout, watchdog_intervall=max(request_timeout, 1.0))
    client.name = client.description = "metrogate"
    client.application_uri = f"urn:{socket.gethostname()}:metrogate"
    client.session_timeout = 600_000
    identity: dict[str, str] = {}
    try:
        async with asyncio.timeout(request_timeout * 6 + 5):
            await _handshake(device, endpoint, client, security, username, password, identity)
    except BaseException as exc:
        await _close_client(client)
        if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | SystemExit):
            raise
        raise _as_error(device, endpoint, exc, "connect") from exc
    reraise_pending_cancel()
    return client, identity


async def _handshake(
    device: str,
    endpoint: str,
    client: Client,
    security: Security,
    username: str | None,
    password: str | None,
    identity: dict[str, str],
) -> None:
    """Security set-up (with the trust check), then the session."""
    if security.secured:
        assert security.certificate is not None and security.private_key is not None
        own = load_certificate(security.certificate)
        client.application_uri = application_uri_of(own) or client.application_uri
        server_der = await _trusted_server_certificate(device, endpoint, client, security)
        identity["server_certificate"] = fingerprint(server_der)
        await client.set_security(
            POLICIES[security.policy],
            _file_of(security.certificate),
            _file_of(security.private_key),
            server_certificate=server_der,
            mode=MODES[security.mode],
        )
    if username is not None:
        client.set_user(username)
        client.set_password(password or "")
    await client.connect()


async def _trusted_server_certificate(
    device: str, endpoint: str, client: Client, security: Security
) -> bytes:
    """The certificate of the endpoint with our mode and policy, if we trust it."""
    endpoints = await client.connect_and_get_server_endpoints()
    reraise_pending_cancel()
    policy_uri = POLICIES[security.policy].URI
    match = [
        e
        for e in endpoints
        if e.SecurityMode == MODES[security.mode] and e.SecurityPolicyUri == policy_uri
    ]
    if not match or not match[0].ServerCertificate:
        offered = ", ".join(sorted({_endpoint_name(e) for e in endpoints})) or "none"
        raise SecurityRejected(
            device,
            endpoint,
            f"no endpoint with {security.mode}/{security.policy} (offered: {offered})",
        )
    der = _first_certificate(match[0].ServerCertificate)
    trusted = TrustList(security.trusted_servers)
    if not trusted.trusts(der):
        if not security.trust_unknown_server:
            raise UntrustedServer(
                device,
                endpoint,
                f"server certificate SHA-256 {fingerprint(der)} is not in the trust list",
            )
        log.warning(
            "%s at %s: trusting an unknown server certificate %s (trust_unknown_server)",
            device,
            endpoint,
            fingerprint(der),
        )
    return der


def _file_of(path: Path) -> uacrypto.CertProperties:
    """A certificate or key file for asyncua, PEM or DER by its content (asyncua would
    go by the file name's extension, and read ``gateway.key`` as DER)."""
    with path.open("rb") as f:
        head = f.read(64)
    return uacrypto.CertProperties(str(path), extension="pem" if b"-----BEGIN" in head else "der")


def _first_certificate(der: bytes) -> bytes:
    """A server may send its certificate followed by its chain: keep the first one."""
    length = int.from_bytes(der[2:4], "big") + 4 if len(der) > 4 and der[1] == 0x82 else len(der)
    return der[:length]


def _endpoint_name(e: ua.EndpointDescription) -> str:
    mode = {1: "None", 2: "Sign", 3: "SignAndEncrypt"}.get(int(e.SecurityMode), str(e.SecurityMode))
    policy = e.SecurityPolicyUri.rsplit("#", 1)[-1]
    return f"{mode}/{policy}"


async def _close_client(client: Client) -> None:
    """Disconnect, bounded and quiet: the server may already be gone.

    Teardown runs to its end even while the task is being cancelled (a shutdown closes
    the drivers from a cancelled task): the cancellation goes on once it is done, so no
    pending cancellation is re-raised here.
    """
    try:
        async with asyncio.timeout(5):
            await client.disconnect()
    except Exception as exc:  # the session is being dropped whatever happened to it
        log.debug("disconnect from %s: %r", _plain_url(client.server_url.geturl()), exc)


# ---------------------------------------------------------------------------- the driver


@dataclass
class _Session:
    """Everything that lives and dies with one connection."""

    client: Client
    identity: dict[str, str]
    nodes: dict[str, ua.NodeId] = field(default_factory=dict)
    problems: dict[str, PointProblem] = field(default_factory=dict)
    subscription: Subscription | None = None
    keepalive_s: float = 0.0
    handles: dict[int, OpcUaPoint] = field(default_factory=dict)
    dead: DriverError | None = None
    consumer: asyncio.Task[None] | None = None
    closer: asyncio.Task[None] | None = None
    closed: bool = False


class OpcUaDriver:
    """One OPC UA server endpoint and its points (see the module docstring)."""

    def __init__(
        self,
        device_id: str,
        url: str,
        points: Sequence[OpcUaPoint],
        *,
        timeout: float,
        mode: Literal["poll", "subscribe"] = "poll",
        publishing_interval: float = 1.0,
        security: Security | None = None,
        username: str | None = None,
        password: str | None = None,
        clock: Clock = utc_now_us,
        buffer_limit: int = 100_000,
    ) -> None:
        if not url.startswith("opc.tcp://"):
            raise ValueError(f"endpoint {url!r}: an opc.tcp:// URL")
        ids = [p.id for p in points]
        if len(set(ids)) != len(ids):
            raise ValueError("point ids must be unique")
        if mode not in ("poll", "subscribe"):
            raise ValueError(f"mode {mode!r}: poll or subscribe")
        self.device_id = device_id
        self.endpoint = _plain_url(url)
        self.points = tuple(points)
        self.mode = mode
        self.publishing_interval = publishing_interval
        self._url = url
        self._timeout = timeout
        self._security = security or Security()
        self._username = username
        self._password = password
        self._clock = clock
        self._session: _Session | None = None
        self._buffer: deque[Sample] = deque(maxlen=buffer_limit)
        self.dropped = 0
        """Data changes discarded because reads did not keep up (logged when it starts)."""
        self._engineering: dict[str, Engineering] = {
            p.id: Engineering(p.unit, p.low, p.high) for p in points
        }
        self._identity: dict[str, str] = {}
        self._last_problems: list[PointProblem] = []
        self._stack = contextlib.AsyncExitStack()
        self._tasks: asyncio.TaskGroup | None = None

    async def __aenter__(self) -> Self:
        self._tasks = await self._stack.enter_async_context(asyncio.TaskGroup())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._drop()
        self._tasks = None
        await self._stack.aclose()

    # ------------------------------------------------------------------ what others ask

    def describe_plan(self) -> list[str]:
        return plan_lines(self.mode, self.publishing_interval, self.points)

    def identity(self) -> dict[str, str]:
        """The server's product and build as read at connect, and its certificate."""
        return dict(self._identity)

    def engineering(self) -> dict[str, Engineering]:
        """Unit and range per point: configured, else read from the server at connect."""
        return dict(self._engineering)

    def problems(self) -> list[PointProblem]:
        """Points that cannot be read as configured (as found at the last connect, also
        when none could be read and the session was closed again)."""
        if self._session is not None:
            return list(self._session.problems.values())
        return list(self._last_problems)

    # ------------------------------------------------------------------ reading

    async def read(self) -> list[Sample]:
        """One poll (see the module docstring for what comes back and what raises)."""
        if self.mode == "poll":
            session = await self._connected()
            try:
                samples = await self._poll(session)
            except BaseException as exc:
                await self._drop()
                if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | SystemExit):
                    raise
                raise _as_error(self.device_id, self.endpoint, exc, "read") from exc
            return samples + self._problem_samples(session)
        return await self._read_changes()

    async def _read_changes(self) -> list[Sample]:
        session = self._session
        if session is not None and session.dead is None:
            self._check_alive(session)
        changes = list(self._buffer)
        self._buffer.clear()
        if session is not None and session.dead is None:
            return changes + self._problem_samples(session)
        gap: list[Sample] = []
        if session is not None:
            # the changes of the time the subscription was gone are lost: say so, once
            lost = session.dead or DeviceUnreachable(self.device_id, self.endpoint, "lost")
            log.warning("%s at %s: subscription lost: %s", self.device_id, self.endpoint, lost)
            gap = self._bad_for_all(lost.reason)
            await self._drop()
        try:
            session = await self._connected()
        except DriverError as exc:
            if not changes and not gap:
                raise
            return changes + (gap or self._bad_for_all(exc.reason))
        return changes + gap + self._problem_samples(session)

    def _bad_for_all(self, reason: Reason) -> list[Sample]:
        now = self._clock()
        return [Sample(p.id, None, None, Quality.BAD, reason, now) for p in self.points]

    def _check_alive(self, session: _Session) -> None:
        from asyncua.client.ua_client import UaClientState

        if session.client.uaclient.state is not UaClientState.CONNECTED:
            session.dead = DeviceUnreachable(self.device_id, self.endpoint, "connection lost")
            return
        sub = session.subscription
        if sub is None:
            return
        last = sub.last_publish_at
        if last is not None and asyncio.get_running_loop().time() - last > session.keepalive_s:
            # asyncua stamps with time.monotonic(), which is the loop's clock on Linux
            session.dead = DeviceTimeout(
                self.device_id,
                self.endpoint,
                f"no publish response (data or keep-alive) for {session.keepalive_s:.1f}s",
            )

    def _problem_samples(self, session: _Session) -> list[Sample]:
        if not session.problems:
            return []
        now = self._clock()
        return [
            Sample(p, None, None, Quality.BAD, e.reason, now) for p, e in session.problems.items()
        ]

    async def _poll(self, session: _Session) -> list[Sample]:
        points = [p for p in self.points if p.id in session.nodes]
        if not points:
            return []
        params = _read_params([(session.nodes[p.id], ua.AttributeIds.Value) for p in points])
        async with asyncio.timeout(self._timeout * 2 + 1):
            results = await session.client.uaclient.read(params)
        reraise_pending_cancel()
        if len(results) != len(points):
            raise ProtocolError(
                self.device_id, self.endpoint, f"{len(results)} results for {len(points)} nodes"
            )
        now = self._clock()
        out = []
        for p, dv in zip(points, results, strict=True):
            sample, why = sample_of(p, dv, now)
            if why is not None:
                self._value_problem(session, p, why)
            out.append(sample)
        return out

    def _value_problem(self, session: _Session, p: OpcUaPoint, why: str) -> None:
        """Log once per session that a point's value cannot be used."""
        key = f"value:{p.id}"
        if key not in session.identity:
            session.identity[key] = why
            log.error(
                "%s at %s: point %s (%s): value is %s",
                self.device_id,
                self.endpoint,
                p.id,
                p.where,
                why,
            )

    # ------------------------------------------------------------------ connecting

    async def _connected(self) -> _Session:
        if self._session is not None:
            return self._session
        client, identity = await _open_client(
            self.device_id,
            self._url,
            self._security,
            self._username,
            self._password,
            self._timeout,
        )
        session = _Session(client, identity)
        self._session = session
        try:
            async with asyncio.timeout(self._timeout * 6 + 5):
                await self._resolve(session)
                if self.mode == "subscribe":
                    await self._subscribe(session)
        except BaseException as exc:
            await self._drop()
            if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | SystemExit):
                raise
            raise _as_error(self.device_id, self.endpoint, exc, "set up points") from exc
        reraise_pending_cancel()
        if len(session.problems) == len(self.points) and self.points:
            first = next(iter(session.problems.values()))
            self._last_problems = list(session.problems.values())
            await self._drop()
            raise DeviceRejected(
                self.device_id,
                self.endpoint,
                f"no point can be read ({len(self.points)} problems, first: {first.message})",
                0,
                Reason.CONFIG_ERROR,
            )
        self._identity = {k: v for k, v in session.identity.items() if ":" not in k}
        log.info(
            "%s connected to %s (%s, %d points%s)",
            self.device_id,
            self.endpoint,
            self._security.mode,
            len(session.nodes),
            f", {len(session.problems)} with problems" if session.problems else "",
        )
        return session

    def _problem(self, session: _Session, p: OpcUaPoint, message: str, reason: Reason) -> None:
        problem = PointProblem(self.device_id, self.endpoint, p.id, p.where, message, reason)
        session.problems[p.id] = problem
        session.nodes.pop(p.id, None)
        log.error("%s", problem)

    async def _resolve(self, session: _Session) -> None:
        """Browse paths → NodeIds, then check class and type of every node (two calls)."""
        client = session.client
        by_path = [p for p in self.points if p.path is not None]
        if by_path:
            objects = _ns0(ua.ObjectIds.ObjectsFolder)
            results = await client.translate_browsepaths(
                objects, [relative_path(p.path or "") for p in by_path]
            )
            for p, r in zip(by_path, results, strict=True):
                if not r.StatusCode.is_good() or not r.Targets:
                    self._problem(
                        session,
                        p,
                        f"not found ({status_name(r.StatusCode.value)})",
                        Reason.CONFIG_ERROR,
                    )
                    continue
                session.nodes[p.id] = _plain_node(r.Targets[0].TargetId)
        for p in self.points:
            if p.node is not None:
                session.nodes[p.id] = parse_node_id(p.node)
        points = [p for p in self.points if p.id in session.nodes]
        build = [
            _ns0(ua.ObjectIds.Server_ServerStatus_BuildInfo_ProductName),
            _ns0(ua.ObjectIds.Server_ServerStatus_BuildInfo_ManufacturerName),
            _ns0(ua.ObjectIds.Server_ServerStatus_BuildInfo_SoftwareVersion),
            _ns0(ua.ObjectIds.Server_ServerStatus_BuildInfo_BuildNumber),
        ]
        asks = [(session.nodes[p.id], a) for p in points for a in (_NODE_CLASS, _DATA_TYPE)]
        asks += [(n, ua.AttributeIds.Value) for n in build]
        values = await client.uaclient.read(_read_params(asks))
        reraise_pending_cancel()
        names = ("product", "manufacturer", "software", "build")
        for key, dv in zip(names, values[-4:], strict=True):
            if _code(dv) == 0 and dv.Value is not None and dv.Value.Value:
                session.identity[key] = str(dv.Value.Value)
        for i, p in enumerate(points):
            cls, dtype = values[2 * i], values[2 * i + 1]
            if _code(cls) >> 30:
                _q, reason = quality_of(_code(cls))
                why = f"node not readable ({status_name(_code(cls))})"
                self._problem(session, p, why, reason or Reason.CONFIG_ERROR)
                continue
            node_class = cls.Value.Value if cls.Value is not None else None
            if node_class != ua.NodeClass.Variable:
                why = f"a {_class_name(node_class)}, not a variable"
                self._problem(session, p, why, Reason.CONFIG_ERROR)
                continue
            type_id = dtype.Value.Value if dtype.Value is not None else None
            if isinstance(type_id, ua.NodeId) and type_id.NamespaceIndex == 0:
                number = type_id.Identifier
                if number in _KNOWN_TYPES and number not in _KINDS[p.kind]:
                    type_name = _DATA_TYPE_NAMES.get(int(number), f"i={number}")
                    why = f"data type {type_name} cannot be a {p.kind}"
                    self._problem(session, p, why, Reason.CONFIG_ERROR)
        await self._read_engineering(session)

    async def _read_engineering(self, session: _Session) -> None:
        """EUInformation and EURange of points that do not configure them (two calls)."""
        wanted = [
            p
            for p in self.points
            if p.id in session.nodes and p.kind == "number" and (p.unit is None or p.low is None)
        ]
        if not wanted:
            return
        client = session.client
        paths: list[tuple[OpcUaPoint, str]] = [
            (p, name) for p in wanted for name in ("EngineeringUnits", "EURange")
        ]
        found = []
        for (p, name), r in zip(
            paths,
            await _translate_each(client, [(session.nodes[p.id], f"/0:{n}") for p, n in paths]),
            strict=True,
        ):
            if r is not None:
                found.append((p, name, r))
        if not found:
            return
        values = await client.uaclient.read(
            _read_params([(n, ua.AttributeIds.Value) for _, _, n in found])
        )
        for (p, name, _node), dv in zip(found, values, strict=True):
            v = dv.Value.Value if _code(dv) == 0 and dv.Value is not None else None
            old = self._engineering[p.id]
            if name == "EngineeringUnits" and isinstance(v, ua.EUInformation) and old.unit is None:
                text = (v.DisplayName.Text or v.Description.Text or "") if v.DisplayName else ""
                self._engineering[p.id] = Engineering(text or None, old.low, old.high)
            elif name == "EURange" and isinstance(v, ua.Range) and old.low is None:
                self._engineering[p.id] = Engineering(old.unit, float(v.Low), float(v.High))

    async def _subscribe(self, session: _Session) -> None:
        client = session.client
        interval_ms = self.publishing_interval * 1000
        keepalive = max(
            1, math.ceil(max(1.0, 3 * self.publishing_interval) / self.publishing_interval)
        )
        params = ua.CreateSubscriptionParameters()
        params.RequestedPublishingInterval = interval_ms
        params.RequestedMaxKeepAliveCount = keepalive
        params.RequestedLifetimeCount = keepalive * 10
        params.MaxNotificationsPerPublish = 0
        params.PublishingEnabled = True
        params.Priority = 0
        try:
            sub = await client.create_subscription(
                params, None, queue_maxsize=self._buffer.maxlen or 0
            )
        except ua.UaStatusCodeError as exc:
            code = int(exc.code)
            _q, reason = quality_of(code)
            raise SubscriptionRefused(
                self.device_id,
                self.endpoint,
                f"server refused the subscription ({status_name(code)})",
                code,
                reason or Reason.CONFIG_ERROR,
            ) from exc
        reraise_pending_cancel()
        session.subscription = sub
        revised = sub.parameters.RequestedPublishingInterval / 1000 or self.publishing_interval
        session.keepalive_s = revised * keepalive * 3 + self._timeout
        points = [p for p in self.points if p.id in session.nodes]
        requests = []
        for handle, p in enumerate(points, start=1):
            requests.append(self._monitored_item(session.nodes[p.id], p, handle, interval_ms))
            session.handles[handle] = p
        if self._tasks is None:
            raise RuntimeError("OpcUaDriver used outside its async context")
        session.consumer = self._tasks.create_task(
            self._consume(session, sub), name=f"{self.device_id}-opcua-subscription"
        )
        if not requests:
            return
        results = await sub.create_monitored_items(requests)
        reraise_pending_cancel()
        for p, result in zip(points, results, strict=True):
            if isinstance(result, ua.StatusCode):
                name = status_name(result.value)
                _q, reason = quality_of(result.value)
                self._problem(
                    session, p, f"monitored item refused ({name})", reason or Reason.CONFIG_ERROR
                )

    def _monitored_item(
        self, node: ua.NodeId, p: OpcUaPoint, handle: int, interval_ms: float
    ) -> ua.MonitoredItemCreateRequest:
        rv = ua.ReadValueId()
        rv.NodeId = node
        rv.AttributeId = ua.AttributeIds.Value
        mp = ua.MonitoringParameters()
        mp.ClientHandle = handle
        mp.SamplingInterval = (
            p.sampling_interval * 1000 if p.sampling_interval is not None else interval_ms
        )
        mp.QueueSize = p.queue_size
        mp.DiscardOldest = True
        if p.deadband is not None and p.deadband.value > 0:
            flt = ua.DataChangeFilter()
            flt.Trigger = ua.DataChangeTrigger.StatusValue
            flt.DeadbandType = (
                ua.DeadbandType.Absolute
                if p.deadband.kind == "absolute"
                else ua.DeadbandType.Percent
            )
            flt.DeadbandValue = p.deadband.value
            mp.Filter = flt
        item = ua.MonitoredItemCreateRequest()
        item.ItemToMonitor = rv
        item.MonitoringMode = ua.MonitoringMode.Reporting
        item.RequestedParameters = mp
        return item

    async def _consume(self, session: _Session, sub: Subscription) -> None:
        """Turn every notification of ``sub`` into a buffered sample until it closes."""
        async for event in sub:
            if isinstance(event, DataChangeEvent):
                p = session.handles.get(int(event.data.monitored_item.ClientHandle))
                if p is None or p.id in session.problems:
                    continue
                sample, why = sample_of(p, event.data.monitored_item.Value, self._clock())
                if why is not None:
                    self._value_problem(session, p, why)
                if len(self._buffer) == self._buffer.maxlen:
                    if not self.dropped:
                        log.warning(
                            "%s at %s: reads do not keep up with data changes, dropping the oldest",
                            self.device_id,
                            self.endpoint,
                        )
                    self.dropped += 1
                self._buffer.append(sample)
            elif isinstance(event, StatusChangeEvent):
                code = int(event.notification.Status.value)
                if code >> 30 and self._tasks is not None:  # not Good: the subscription is gone
                    session.dead = _status_error(
                        self.device_id, self.endpoint, code, "subscription"
                    )
                    # close at once: asyncua would retry publishing on the dead session
                    session.closer = self._tasks.create_task(
                        self._close(session), name=f"{self.device_id}-opcua-close"
                    )
                    return

    async def _close(self, session: _Session) -> None:
        """Close a session's connection once (bounded and quiet)."""
        if not session.closed:
            session.closed = True
            await _close_client(session.client)

    async def _drop(self) -> None:
        """Forget the session: stop its consumer, close the connection (bounded, quiet)."""
        session, self._session = self._session, None
        if session is None:
            return
        if session.consumer is not None and not session.consumer.done():
            session.consumer.cancel()
        for task in (session.consumer, session.closer):
            if task is not None:
                # the consumer ends cancelled; a cancellation of this task stays pending
                # (task.cancelling()) for the caller: teardown itself goes on to the end
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._close(session)


def _code(dv: ua.DataValue) -> int:
    """The StatusCode of a DataValue as an integer (absent means Good)."""
    return int(dv.StatusCode.value) if dv.StatusCode is not None else 0


def _plain_node(target: ua.NodeId) -> ua.NodeId:
    """A browse target (an ExpandedNodeId) as the plain NodeId services take."""
    return ua.NodeId(target.Identifier, target.NamespaceIndex, target.NodeIdType)


def _ns0(identifier: int) -> ua.NodeId:
    """A numeric NodeId of namespace 0 (the standard's nodes)."""
    return ua.NodeId(ua.Int32(identifier), ua.Int16(0))


_NODE_CLASS = ua.AttributeIds.NodeClass
_DATA_TYPE = ua.AttributeIds.DataType
_VALUE = ua.AttributeIds.Value


def _class_name(node_class: object) -> str:
    return node_class.name.lower() if isinstance(node_class, ua.NodeClass) else str(node_class)


async def _translate_each(
    client: Client, paths: Sequence[tuple[ua.NodeId, str]]
) -> list[ua.NodeId | None]:
    """One TranslateBrowsePathsToNodeIds call for paths from different start nodes."""
    request = []
    for start, rel in paths:
        bp = ua.BrowsePath()
        bp.StartingNode = start
        bp.RelativePath = ua.RelativePath.from_string(rel)
        request.append(bp)
    results = await client.uaclient.translate_browsepaths_to_nodeids(request)
    reraise_pending_cancel()
    return [
        _plain_node(r.Targets[0].TargetId) if r.StatusCode.is_good() and r.Targets else None
        for r in results
    ]


# ---------------------------------------------------------------------------- browse, discover


@dataclass(frozen=True, slots=True)
class BrowseEntry:
    """One node below the browsed one, as a technician writes it into a config."""

    node: str
    path: str
    display_name: str
    node_class: str
    data_type: str | None = None
    value: str | None = None
    """A variable's current value as text (its StatusCode name when not Good)."""


async def browse(
    url: str,
    path: str | None = None,
    *,
    security: Security | None = None,
    username: str | None = None,
    password: str | None = None,
    request_timeout: float = 5.0,
    device_id: str = "browse",
) -> list[BrowseEntry]:
    """The children of ``path`` (browse names below Objects; default the Objects folder).

    Two service calls after connecting: one Browse and one Read of the variables'
    data types and values. Raises :class:`DriverError` like the driver does.
    """
    endpoint = _plain_url(url)
    client, _identity = await _open_client(
        device_id, url, security or Security(), username, password, request_timeout
    )
    try:
        async with asyncio.timeout(request_timeout * 4 + 5):
            start = _ns0(ua.ObjectIds.ObjectsFolder)
            prefix = ""
            if path:
                targets = await client.translate_browsepaths(start, [relative_path(path)])
                r = targets[0]
                if not r.StatusCode.is_good() or not r.Targets:
                    raise PointProblem(
                        device_id, endpoint, "browse", path, "not found", Reason.CONFIG_ERROR
                    )
                start = _plain_node(r.Targets[0].TargetId)
                prefix = path.strip().strip("/") + "/"
            children = await client.get_node(start).get_references(
                refs=ua.ObjectIds.HierarchicalReferences, direction=ua.BrowseDirection.Forward
            )
            variables = [c for c in children if c.NodeClass == ua.NodeClass.Variable]
            types: dict[str, str] = {}
            values: dict[str, str] = {}
            if variables:
                asks = [(c.NodeId, a) for c in variables for a in (_DATA_TYPE, _VALUE)]
                results = await client.uaclient.read(_read_params(asks))
                for k, c in enumerate(variables):
                    dtype, dv = results[2 * k], results[2 * k + 1]
                    v = dtype.Value.Value if dtype.Value is not None else None
                    if isinstance(v, ua.NodeId):
                        types[c.NodeId.to_string()] = _type_name(v)
                    values[c.NodeId.to_string()] = _value_text(dv)
    except BaseException as exc:
        await _close_client(client)
        if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | SystemExit):
            raise
        raise _as_error(device_id, endpoint, exc, "browse") from exc
    await _close_client(client)
    return [
        BrowseEntry(
            node=c.NodeId.to_string(),
            path=f"{prefix}{c.BrowseName.NamespaceIndex}:{c.BrowseName.Name}",
            display_name=c.DisplayName.Text or c.BrowseName.Name or "",
            node_class=_class_name(c.NodeClass),
            data_type=types.get(c.NodeId.to_string()),
            value=values.get(c.NodeId.to_string()),
        )
        for c in children
    ]


def _value_text(dv: ua.DataValue) -> str:
    """A value as a technician reads it: the value, or the StatusCode that stands for it."""
    code = _code(dv)
    if code >> 30 == 2:  # Bad: no value
        return status_name(code)
    v = dv.Value.Value if dv.Value is not None else None
    text = "" if v is None else str(v)
    if len(text) > 60:
        text = text[:57] + "..."
    return text if code == 0 else f"{text} ({status_name(code)})"


def _type_name(node: ua.NodeId) -> str:
    if node.NamespaceIndex == 0 and isinstance(node.Identifier, int):
        name = ua.ObjectIdNames.get(node.Identifier)
        if name:
            return str(name)
    return str(node.to_string())


@dataclass(frozen=True, slots=True)
class EndpointInfo:
    """One endpoint a server offers: where, how secured, which user tokens, which certificate."""

    url: str
    mode: str
    policy: str
    security_level: int
    user_tokens: tuple[str, ...]
    certificate: str | None
    """SHA-256 fingerprint of the server certificate (what ``trusted_servers`` must hold)."""
    certificate_der: bytes | None = None
    """The server certificate itself (DER), as the endpoint description carries it."""


async def discover(
    url: str, *, request_timeout: float = 5.0, device_id: str = "scan"
) -> list[EndpointInfo]:
    """The endpoints and security policies ``url`` offers (GetEndpoints, no session).

    Raises :class:`DriverError` when the server cannot be asked.
    """
    endpoint = _plain_url(url)
    client = Client(url, timeout=request_timeout)
    try:
        async with asyncio.timeout(request_timeout * 2 + 1):
            endpoints = await client.connect_and_get_server_endpoints()
    except BaseException as exc:
        with contextlib.suppress(Exception):
            client.disconnect_socket()
        if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | SystemExit):
            raise
        raise _as_error(device_id, endpoint, exc, "get endpoints") from exc
    reraise_pending_cancel()
    out = []
    for e in endpoints:
        mode, policy = _endpoint_name(e).split("/", 1)
        tokens = tuple(
            {0: "anonymous", 1: "username", 2: "certificate", 3: "issued"}.get(
                int(t.TokenType), str(t.TokenType)
            )
            for t in e.UserIdentityTokens or []
        )
        der = _first_certificate(e.ServerCertificate) if e.ServerCertificate else None
        cert = fingerprint(der) if der else None
        out.append(
            EndpointInfo(e.EndpointUrl, mode, policy, int(e.SecurityLevel), tokens, cert, der)
        )
    return out
