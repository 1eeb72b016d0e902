"""The configuration model: what a metrogate YAML file may say (pydantic v2).

Every model forbids unknown keys, so a misspelt key is an error with its location,
not a silent default. Devices are a discriminated union on ``driver`` of the models
of the driver kinds in :mod:`gateway.config.models.registry`. Cross-object
checks (duplicate ids, overlapping registers, timeouts, port claims) live in
:mod:`gateway.config.checks`; this module only checks what one object can know.
The JSON Schema generated from these models is ``config/metrogate.schema.json``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import (
    ByteSize,
    Field,
    SecretStr,
)

from gateway.common.types import Duration, Ident, Strict, TlsConfig
from gateway.config.models.device import DeviceFields
from gateway.config.models.metrology import InstrumentConfig
from gateway.config.models.registry import device_union
from gateway.config.models.serial import BusConfig
from gateway.config.ops import OpsConfig
from gateway.wire.keys import PRIVATE_KEY_NAME


class GatewaySection(Strict):
    id: Ident = Field(description="Gateway id: one MQTT topic level, unique per platform.")
    site: Ident = Field(description="Site (plant, market, lab) the gateway belongs to.")
    state_dir: Path = Field(
        Path("state"),
        description="Where the outbox, event log, keys and rule state live. "
        "Relative paths are relative to the config file.",
    )


class BatchConfig(Strict):
    max_readings: int = Field(1000, ge=1, le=100_000, description="Readings per data batch.")
    max_bytes: int = Field(256_000, ge=1024, le=10_000_000, description="Bytes per payload.")
    linger: Duration = Field(
        0.005,
        ge=0,
        le=1.0,
        description="How long a data batch stays open for the other devices' polls of the same "
        "tick (0: one batch per poll).",
    )


class MqttConfig(Strict):
    url: str = Field(
        "mqtt://127.0.0.1:1883",
        pattern=r"^mqtts?://[^/\s:]+(:\d+)?/?$",
        description="Broker: mqtt://host:port (plain) or mqtts://host:port (TLS).",
    )
    prefix: str = Field("metrogate", pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")
    client_id: str | None = Field(None, description="Default: metrogate-{site}-{gateway}.")
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    username: str | None = None
    password: SecretStr | None = None
    tls: TlsConfig | None = None
    keepalive: Duration = 30.0
    inflight: int = Field(20, ge=1, le=1000, description="QoS 1 messages awaiting PUBACK.")
    drain_rate: float | None = Field(
        None,
        gt=0,
        description="Backlog batches/s at most (data sealed before the current connection); "
        "alarms, events and live data are never paced (default: no limit).",
    )
    publish_timeout: Duration = Field(10.0, description="PUBACK wait before reconnecting.")
    backoff_max: Duration = Field(60.0, description="Longest wait between reconnect attempts.")
    batch: BatchConfig = BatchConfig()

    @property
    def host(self) -> str:
        return re.sub(r"^mqtts?://", "", self.url).rstrip("/").split(":")[0]

    @property
    def port(self) -> int:
        rest = re.sub(r"^mqtts?://", "", self.url).rstrip("/")
        if ":" in rest:
            return int(rest.rsplit(":", 1)[1])
        return 8883 if self.uses_tls else 1883

    @property
    def uses_tls(self) -> bool:
        return self.url.startswith("mqtts://") or self.tls is not None


class OutboxConfig(Strict):
    path: Path | None = Field(None, description="Default: {state_dir}/outbox.db.")
    max_bytes: ByteSize = Field(
        ByteSize(256 * 1024 * 1024), description="Bound on stored batches, e.g. '256MiB'."
    )
    max_age: Duration | None = Field(None, description="Drop data batches older than this.")
    overflow: Literal["drop_oldest", "thin", "stop_noncritical"] = Field(
        "drop_oldest",
        description="At max_bytes: drop_oldest drops the oldest data batches; thin keeps "
        "every thin_keep-th data batch of each device (oldest part first, again and again) "
        "so a long outage keeps a coarse record; stop_noncritical stops polling devices with "
        "critical: false while the outbox is nearly full, then drops the oldest. Alarm and "
        "event batches are never dropped while data batches remain.",
    )
    thin_keep: int = Field(
        10, ge=2, le=10_000, description="overflow: thin keeps one data batch in this many."
    )
    durability: Literal["process", "power"] = Field(
        "process",
        description="process: survives a crash of metrogate (SQLite synchronous=NORMAL); "
        "power: also survives power loss (synchronous=FULL, slower on SD cards).",
    )


class SigningConfig(Strict):
    key: Path | None = Field(
        None, description="Ed25519 private key. Default {state_dir}/gateway.key."
    )
    create: bool = Field(
        True, description="Create the key pair at first start when the key file is missing."
    )


def _ack_only() -> list[Literal["ack", "shelve"]]:
    return ["ack"]


class OperatorConfig(Strict):
    """One person or system allowed to act on alarms with signed commands (docs/wire.md)."""

    id: str = Field(
        pattern=r"^[A-Za-z0-9_.@-]{1,64}$",
        description="Operator id: named in every command it signs and in the event log.",
    )
    public_key: str = Field(
        min_length=1,
        description="Ed25519 public key: the raw 32 bytes in base64, or the path of a PEM "
        "public key file (`metrogate keygen --name ID`), relative to the config file.",
    )
    roles: list[Literal["ack", "shelve"]] = Field(
        default_factory=_ack_only,
        min_length=1,
        description="What the operator may do: ack, shelve.",
    )


class CommandsConfig(Strict):
    """How the gateway checks operator commands (gateway/operator.py)."""

    window: Duration = Field(
        30.0,
        gt=0,
        description="A command's timestamp must be within ± this of the gateway's clock.",
    )
    nonce_cache: int = Field(
        4096,
        ge=16,
        le=1_000_000,
        description="Nonces remembered to refuse replays (those older than the window are "
        "forgotten first; a full cache of recent nonces refuses new commands).",
    )
    refusal_summary: Duration = Field(
        60.0,
        gt=0,
        description="Refused commands are counted and written to the event log as one "
        "summary entry at most this often.",
    )


if TYPE_CHECKING:
    # mypy cannot follow a union built at run time: statically a device is what every
    # kind's model has in common
    Device = DeviceFields
else:
    Device = device_union()


class LogConfig(Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"


class Config(Strict):
    """A whole gateway configuration file."""

    gateway: GatewaySection
    mqtt: MqttConfig = MqttConfig()
    outbox: OutboxConfig = OutboxConfig()
    signing: SigningConfig = SigningConfig()
    log: LogConfig = LogConfig()
    ops: OpsConfig = OpsConfig()
    operators: list[OperatorConfig] = Field(default_factory=list)
    commands: CommandsConfig = CommandsConfig()
    instruments: list[InstrumentConfig] = Field(default_factory=list)
    buses: list[BusConfig] = Field(default_factory=list)
    devices: list[Device] = Field(default_factory=list)

    @property
    def signing_key(self) -> Path:
        """The gateway's private key file: ``signing.key``, else ``{state_dir}/gateway.key``."""
        return self.signing.key or self.gateway.state_dir / PRIVATE_KEY_NAME
