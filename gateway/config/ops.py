"""The ``ops:`` section of a gateway configuration: metrics, health and the systemd watchdog.

Kept apart from :mod:`gateway.config.schema` so operations can evolve on their own;
``Config`` carries it as ``ops: OpsConfig = OpsConfig()``.
"""

from __future__ import annotations

from pydantic import Field

from gateway.common.types import ListenAddress, OpsEndpoint


class OpsConfig(OpsEndpoint):
    """Where ``/metrics`` and ``/health`` are served and whether systemd's watchdog is fed."""

    listen: ListenAddress = "127.0.0.1:9108"
    watchdog: bool = Field(
        True,
        description="Feed systemd's watchdog (WatchdogSec=) while every loop makes progress.",
    )
