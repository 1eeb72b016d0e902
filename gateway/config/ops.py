"""The ``ops:`` section of a gateway configuration: metrics, health and the systemd watchdog.

Kept apart from :mod:`gateway.config.schema` so operations can evolve on their own;
``Config`` carries it as ``ops: OpsConfig = OpsConfig()``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class OpsConfig(BaseModel):
    """Where ``/metrics`` and ``/health`` are served and whether systemd's watchdog is fed."""

    model_config = ConfigDict(extra="forbid")

    listen: str = Field(
        "127.0.0.1:9108",
        pattern=r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):\d{1,5}$",
        description="host:port of the metrics and health endpoint. Loopback by default: "
        "the endpoint has no authentication, expose it only on a trusted network.",
    )
    enabled: bool = Field(True, description="Serve /metrics and /health.")
    watchdog: bool = Field(
        True,
        description="Feed systemd's watchdog (WatchdogSec=) while every loop makes progress.",
    )

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])
