"""OPC UA servers (PLCs, SCADA, edge devices): ``driver: opcua``.

One device is one server endpoint and the points read from it, by NodeId or browse
path (docs/opcua.md). What one object can know is checked here: the endpoint URL,
NodeId and browse-path syntax, security mode and policy that fit together, a
certificate with its key, a password with a user name. What needs the files or
several devices (certificates that load, a key that belongs to its certificate, a
trust list that trusts something, subscription settings on a polled device) is the
kind's check in the registry; what needs the server is ``metrogate check --online``.
Relative paths (certificate, key, trust list) are taken from the config file's
directory, as every path of a config is.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from gateway.common.types import Duration, Ident, Strict, finite
from gateway.config.models.device import DeviceFields
from gateway.config.models.metrology import PointMetrologyFields

__all__ = ["OpcUaDeadband", "OpcUaDevice", "OpcUaPointConfig", "OpcUaSecurity"]


def _has_login(url: str) -> bool:
    return "@" in url.split("//", 1)[-1].split("/", 1)[0]


_URL = re.compile(r"^opc\.tcp://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(:\d{1,5})?(/\S*)?$")


class OpcUaDeadband(Strict):
    """Report a data change only beyond ``value`` (engineering units, or % of EURange)."""

    kind: Literal["absolute", "percent"]
    value: float = Field(ge=0, description="Units (absolute) or percent of EURange (percent).")

    @model_validator(mode="after")
    def _percent(self) -> OpcUaDeadband:
        if self.kind == "percent" and self.value > 100:
            raise ValueError(f"a percent deadband is at most 100, not {self.value:g}")
        return self


class OpcUaPointConfig(PointMetrologyFields):
    id: Ident
    node: str | None = Field(
        None, description="NodeId: ns=2;s=Line1.Temp, ns=3;i=1001, ns=1;g=..., ns=1;b=..."
    )
    path: str | None = Field(
        None, description="Instead of node: browse names below Objects, 2:Line1/2:Temp."
    )
    kind: Literal["number", "bool", "string"] = Field(
        "number", description="What the value must be; another type reads bad."
    )
    scale: Annotated[float, finite("scale")] = 1.0
    offset: Annotated[float, finite("offset")] = 0.0
    unit: str | None = Field(None, description="Default: the server's EngineeringUnits.")
    low: float | None = Field(None, description="Default: the server's EURange.")
    high: float | None = None
    sampling_interval: Duration | None = Field(
        None, description="subscribe: how often the server samples (default: the publishing "
        "interval)."
    )  # fmt: skip
    queue_size: int = Field(
        1, ge=1, le=10_000, description="subscribe: changes kept between publishes."
    )
    deadband: OpcUaDeadband | None = Field(None, description="subscribe: a data-change filter.")
    description: str | None = None
    sim: Any = Field(
        None, description="Simulator value for this point (metrogate sim): see docs/simulator.md."
    )

    # the messages leave the value out: the loader shows it once, "(got ...)"

    @field_validator("node")
    @classmethod
    def _node(cls, v: str | None) -> str | None:
        if v is not None:
            from drivers.opcua import parse_node_id  # asyncua: only where OPC UA is configured

            try:
                parse_node_id(v)
            except ValueError:
                raise ValueError(
                    "not a NodeId: write ns=N;s=NAME, ns=N;i=NUMBER, ns=N;g=GUID or ns=N;b=BASE64"
                ) from None
        return v

    @field_validator("path")
    @classmethod
    def _path(cls, v: str | None) -> str | None:
        if v is not None:
            if not v.strip().strip("/"):
                raise ValueError("an empty browse path: write browse names, e.g. 2:Line1/2:Temp")
            from drivers.opcua import relative_path

            try:
                relative_path(v)
            except ValueError:
                raise ValueError(
                    "not a browse path: write browse names below Objects, e.g. 2:Line1/2:Temp"
                ) from None
        return v

    @model_validator(mode="after")
    def _where(self) -> OpcUaPointConfig:
        if (self.node is None) == (self.path is None):
            raise ValueError("give node (a NodeId) or path (a browse path), exactly one")
        if (self.low is None) != (self.high is None):
            raise ValueError("low and high go together (or both come from the server)")
        if self.low is not None and self.high is not None and not self.low < self.high:
            raise ValueError(f"low {self.low:g} must be below high {self.high:g}")
        if self.kind != "number" and (self.scale, self.offset) != (1.0, 0.0):
            raise ValueError(f"scale and offset apply to numbers, not to a {self.kind} point")
        return self


class OpcUaSecurity(Strict):
    """How the secure channel is made and which servers are trusted (docs/opcua.md)."""

    mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    policy: Literal["None", "Basic256Sha256", "Aes128_Sha256_RsaOaep"] = "None"
    certificate: Path | None = Field(
        None, description="The gateway's application instance certificate (PEM or DER)."
    )
    private_key: Path | None = Field(None, description="Its private key (PEM or DER).")
    trusted_servers: list[Path] = Field(
        default_factory=list,
        description="Server certificates to trust: files, or folders of *.pem/*.der/*.crt.",
    )
    accept_unknown_server: bool = Field(
        False,
        description="Accept a server whose certificate is not trusted (logged at each "
        "connect; for commissioning only).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> OpcUaSecurity:
        if (self.mode == "None") != (self.policy == "None"):
            other = "policy None" if self.mode == "None" else "a policy other than None"
            raise ValueError(f"security mode {self.mode} goes with {other}, not {self.policy}")
        if (self.certificate is None) != (self.private_key is None):
            given = "certificate" if self.certificate is not None else "private_key"
            missing = "private_key" if given == "certificate" else "certificate"
            raise ValueError(f"{given} needs {missing}: the certificate and its key go together")
        if self.mode != "None" and self.certificate is None:
            raise ValueError(f"security mode {self.mode} needs certificate and private_key")
        return self

    @property
    def secured(self) -> bool:
        return self.mode != "None"


class OpcUaDevice(DeviceFields):
    driver: Literal["opcua"]
    id: Ident
    enabled: bool = True
    description: str | None = None
    url: str = Field(description="Endpoint: opc.tcp://host:4840/path.")
    mode: Literal["poll", "subscribe"] = Field(
        "poll",
        description="poll: one Read of every point per poll; subscribe: monitored items, "
        "the changes collected every poll.",
    )
    publishing_interval: Duration = Field(1.0, description="subscribe: the publishing interval.")
    poll: Duration = Field(1.0, description="Poll period (subscribe: how often changes are "
                           "collected).")  # fmt: skip
    timeout: Duration = Field(0.5, description="Per-request timeout; must be below poll.")
    security: OpcUaSecurity = Field(default_factory=OpcUaSecurity)
    username: str | None = Field(None, description="User-name login (default: anonymous).")
    password: SecretStr | None = Field(None, description="Its password: ${ENV} or ${file:...}.")
    profile: str | None = Field(None, description="Device profile in config/profiles/ (by name).")
    points: list[OpcUaPointConfig] = Field(default_factory=list)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if _has_login(v):
            return v  # refused by the model, which never shows the value
        if not _URL.match(v):
            raise ValueError("not an OPC UA endpoint: write opc.tcp://host[:port][/path]")
        return v

    @model_validator(mode="after")
    def _login(self) -> OpcUaDevice:
        if _has_login(self.url):
            raise ValueError(
                "url: the endpoint carries a user name or password: put them in username "
                "and password (from ${ENV} or ${file:...}), not in the URL"
            )
        if self.password is not None and self.username is None:
            raise ValueError("a password needs a username")
        if self.publishing_interval <= 0:
            raise ValueError("publishing_interval must be > 0")
        return self
