"""Configuration of the ingest service (the ``ingest.yaml`` file), pydantic v2 models.

Loaded like the gateway's file (:func:`gateway.common.yamlconf.load_model`) and built
from the same base (:mod:`gateway.common.types`: unknown keys are errors, the same
``mqtt.tls`` and ``ops`` sections), every problem is reported as
``FILE:LINE:COL: path: message``, and ``${NAME}``, ``${NAME:-default}`` or
``${file:PATH}`` take values from the environment or a file (secrets such as
``password`` and ``token``; never logged). See ``config/examples/ingest.yaml``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, model_validator

from gateway.common.types import (
    Duration,
    ListenAddress,
    Listening,
    OpsEndpoint,
    Strict,
    TlsConfig,
)
from gateway.common.yamlconf import load_model

__all__ = [
    "BatchConfig",
    "ConsoleConfig",
    "ConsoleUser",
    "InfluxV1Store",
    "InfluxV2Store",
    "IngestConfig",
    "IngestOpsConfig",
    "MqttConfig",
    "PointSpec",
    "RiskConfig",
    "SqliteStore",
    "TlsConfig",
    "load_config",
]

# a value that is never logged or printed (pydantic shows it as **********)
Secret = SecretStr


class MqttConfig(Strict):
    url: str = Field("mqtt://127.0.0.1:1883", pattern=r"^mqtts?://[^/:]+(:\d+)?/?$")
    # Stable per worker: a restarted worker resumes its session and gets back the
    # messages it had not acknowledged.
    client_id: str = Field(min_length=1, max_length=64)
    group: str = Field("metrogate-ingest", pattern=r"^[^/+#]+$")
    # "5" (default): MQTT 5, Receive Maximum, session expiry. "3.1.1": for brokers
    # without MQTT 5 (the demo's embedded amqtt); a persistent session (clean
    # session off) and the broker's own in-flight limit instead.
    protocol: Literal["5", "3.1.1"] = "5"
    # $share/{group}/… so workers split the load; false: a plain subscription (one
    # worker only, or a broker without shared subscriptions such as amqtt)
    shared: bool = True
    prefix: str = Field("metrogate", min_length=1)
    kinds: list[Literal["data", "alarm", "event", "status"]] = Field(
        ["data", "alarm", "event", "status"]
    )
    username: str | None = None
    password: Secret | None = None
    tls: TlsConfig | None = None
    keepalive: Duration = 30.0
    session_expiry: Duration = 7 * 86400.0
    # Messages the broker may have in flight to this worker before acknowledgement;
    # the bound on memory when the store is down, and on batch size.
    receive_maximum: int = Field(2000, ge=1, le=65535)
    dead_letter_topic: str = Field("metrogate/deadletter", pattern=r"^[^+#]+$")
    # A larger message is dead-lettered (too_large) with its first max_payload bytes;
    # at least the gateways' mqtt.batch.max_bytes (256 kB by default).
    max_payload: int = Field(1_048_576, ge=1024, le=134_217_728)
    # QoS 0 messages have no flow control: those held at once are capped, the rest
    # dropped and counted (dropped.qos0).
    qos0_max_messages: int = Field(1000, ge=1, le=1_000_000)
    qos0_max_bytes: int = Field(16_777_216, ge=1024)


class InfluxV1Store(Strict):
    kind: Literal["influxdb_v1"]
    url: str = Field("http://127.0.0.1:8086", pattern=r"^https?://")
    database: str = Field(min_length=1)
    retention_policy: str | None = None
    username: str | None = None
    password: Secret | None = None
    timeout: Duration = 10.0
    create_database: bool = False


class InfluxV2Store(Strict):
    kind: Literal["influxdb_v2"]
    url: str = Field(pattern=r"^https?://")
    bucket: str = Field(min_length=1)
    org: str = ""
    token: Secret | None = None
    timeout: Duration = 10.0


class SqliteStore(Strict):
    kind: Literal["sqlite"]
    path: Path


Store = Annotated[InfluxV1Store | InfluxV2Store | SqliteStore, Field(discriminator="kind")]


class BatchConfig(Strict):
    max_lines: int = Field(5000, ge=1, le=1_000_000)
    max_delay: Duration = 1.0
    retry_initial: Duration = 0.5
    retry_max: Duration = 30.0


class IngestOpsConfig(OpsEndpoint):
    """Where the worker serves ``/metrics`` (Prometheus) and ``/health`` (JSON)."""

    listen: ListenAddress = "127.0.0.1:9109"


Language = Literal["en", "zh"]
_ID = r"^[A-Za-z0-9_.@-]{1,64}$"


class ConsoleUser(Strict):
    """A person who logs in to the console (docs/supervision.md)."""

    name: str = Field(pattern=_ID)
    # argon2id hash as ``metrogate console --hash-password`` prints it; never a password
    password_hash: Secret = Field(description="argon2 hash of the password")
    role: Literal["viewer", "operator"] = "viewer"
    language: Language | None = None
    # operators: the gateway-side operator id and the private key that signs their commands
    operator_id: str | None = Field(None, pattern=_ID)
    operator_key: Path | None = None


class PointSpec(Strict):
    """What the console needs to know of points matching ``match`` (``gateway/device/point``,
    shell wildcards): specification limits, chart kind, capability target."""

    match: str = Field(min_length=1)
    lower: float | None = None
    upper: float | None = None
    chart: Literal["individuals", "xbar_r"] = "individuals"
    subgroup: int = Field(1, ge=1, le=5)
    min_cpk: float = Field(1.33, gt=0)


class RiskWeights(Strict):
    """Points each indicator adds to an entry's score (docs/supervision.md)."""

    out_of_tolerance: float = Field(40.0, ge=0)
    conditional: float = Field(15.0, ge=0)
    spc_signals: float = Field(10.0, ge=0)
    cpk_low: float = Field(15.0, ge=0)
    calibration_expired: float = Field(30.0, ge=0)
    calibration_missing: float = Field(20.0, ge=0)
    calibration_due_soon: float = Field(5.0, ge=0)
    # a tamper counter that moved is direct evidence of interference with a legally
    # controlled instrument: one change outweighs the other indicators of a site
    tamper: float = Field(100.0, ge=0)
    log_gaps: float = Field(25.0, ge=0)
    security: float = Field(35.0, ge=0)
    completeness: float = Field(20.0, ge=0)
    clock_unsynchronised: float = Field(10.0, ge=0)


class RiskThresholds(Strict):
    """Where an indicator starts to count."""

    out_of_tolerance_rate: float = Field(0.01, ge=0, le=1)
    conditional_rate: float = Field(0.05, ge=0, le=1)
    spc_signals: int = Field(1, ge=1)
    completeness_target: float = Field(0.99, ge=0, le=1)


class RiskConfig(Strict):
    window: Duration = 7 * 86400.0
    # the ranking scans the whole window: it is recomputed at most this often
    refresh: Duration = Field(30.0, ge=0)
    weights: RiskWeights = RiskWeights.model_validate({})
    thresholds: RiskThresholds = RiskThresholds.model_validate({})


class ConsoleConfig(Listening):
    """The ``console:`` section: the web console over this ingest's store."""

    listen: str = Field("127.0.0.1:8480", pattern=r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):\d{1,5}$")
    language: Language = "en"
    users: list[ConsoleUser] = Field(default_factory=list)
    session_ttl: Duration = 8 * 3600.0
    # set when the console is served over HTTPS (a reverse proxy): cookies get ``Secure``
    secure_cookies: bool = False
    query_timeout: Duration = 15.0
    # live pages (fleet, points, alarms, risk) reload themselves this often; 0: never
    refresh: Duration = Field(30.0, ge=0)
    # broker credentials for publishing operator commands, instead of ``mqtt``'s (with the
    # deploy ACL the ingest's user may not write ``cmd/``; the ``operator`` user may)
    mqtt_username: str | None = None
    mqtt_password: Secret | None = None
    # most chart points sent to the browser per series; longer ranges are downsampled
    # in the database query
    max_points: int = Field(1500, ge=100, le=20_000)
    points: list[PointSpec] = Field(default_factory=list)
    risk: RiskConfig = RiskConfig.model_validate({})

    @model_validator(mode="after")
    def _users(self) -> ConsoleConfig:
        seen: set[str] = set()
        for u in self.users:
            if u.name in seen:
                raise ValueError(f"console user {u.name!r} is listed twice")
            seen.add(u.name)
            if u.role == "operator" and (u.operator_id is None or u.operator_key is None):
                raise ValueError(
                    f"console user {u.name!r} is an operator: give operator_id and operator_key"
                )
        return self


class IngestConfig(Strict):
    mqtt: MqttConfig
    keys_dir: Path
    store: Store
    batch: BatchConfig = BatchConfig.model_validate({})
    stats_interval: Duration = 60.0
    ops: IngestOpsConfig = IngestOpsConfig.model_validate({})
    # How long event-log counters missing between two event batches may stay missing
    # before they are filed as an event_gap security event (other workers, or a late
    # redelivery, may still deliver them).
    event_gap_grace: Duration = 60.0
    console: ConsoleConfig = ConsoleConfig.model_validate({})


def load_config(path: Path) -> IngestConfig:
    """Read and validate an ingest YAML file; :class:`gateway.config.loader.ConfigError`
    (every problem located to file:line:col) on bad content.

    Relative paths in the file (``keys_dir``, the SQLite ``path``, ``mqtt.tls.ca/cert/key``,
    ``console.users[].operator_key`` and ``${file:PATH}`` secrets) are taken from the
    file's directory, not from the working directory.
    """
    cfg = load_model(path, IngestConfig)
    base = Path(path).resolve().parent
    updates: dict[str, Any] = {}
    if not cfg.keys_dir.is_absolute():
        updates["keys_dir"] = base / cfg.keys_dir
    if isinstance(cfg.store, SqliteStore) and not cfg.store.path.is_absolute():
        updates["store"] = cfg.store.model_copy(update={"path": base / cfg.store.path})
    tls = cfg.mqtt.tls
    if tls is not None:
        files = {
            key: base / value
            for key in ("ca", "cert", "key")
            if isinstance(value := getattr(tls, key), Path) and not value.is_absolute()
        }
        if files:
            updates["mqtt"] = cfg.mqtt.model_copy(update={"tls": tls.model_copy(update=files)})
    users = [
        u.model_copy(update={"operator_key": base / u.operator_key})
        if u.operator_key is not None and not u.operator_key.is_absolute()
        else u
        for u in cfg.console.users
    ]
    if users != list(cfg.console.users):
        updates["console"] = cfg.console.model_copy(update={"users": users})
    return cfg.model_copy(update=updates) if updates else cfg
