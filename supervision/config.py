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

from pydantic import Field, SecretStr

from gateway.common.types import Duration, ListenAddress, OpsEndpoint, Strict, TlsConfig
from gateway.common.yamlconf import load_model

__all__ = [
    "BatchConfig",
    "InfluxV1Store",
    "InfluxV2Store",
    "IngestConfig",
    "IngestOpsConfig",
    "MqttConfig",
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


def load_config(path: Path) -> IngestConfig:
    """Read and validate an ingest YAML file; :class:`gateway.config.loader.ConfigError`
    (every problem located to file:line:col) on bad content.

    Relative paths in the file (``keys_dir``, the SQLite ``path``, ``mqtt.tls.ca/cert/key``
    and ``${file:PATH}`` secrets) are taken from the file's directory, not from the
    working directory.
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
    return cfg.model_copy(update=updates) if updates else cfg
