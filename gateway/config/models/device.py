"""What every device model has, whatever its driver.

Each driver kind's model (one per entry of :data:`gateway.config.models.registry.KINDS`)
declares these fields itself — their order, defaults and descriptions are part of
the JSON Schema — and inherits this class, so code that handles any device (the
checks, the poller, the audit trail) can rely on them being there. ``critical``
alone is declared here, once for every kind.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from gateway.config.models.metrology import DeviceMetrologyFields

__all__ = ["DeviceFields"]


class DeviceFields(DeviceMetrologyFields):
    """The fields of every device: its identity, its driver kind and its poll period.

    ``sim`` is read by simulators only (``metrogate sim`` and ``demo``: faults on
    request, docs/simulator.md); the gateway never looks at it.
    """

    sim: Any = Field(
        None,
        description="Simulator faults of this device (metrogate sim): {fault: KIND[,PARAM]} "
        "or a list; see docs/simulator.md.",
    )

    # one definition for every kind (not declared per model: it is about delivery)
    critical: bool = Field(
        True,
        description="false: polling stops while the outbox is nearly full "
        "(outbox.overflow: stop_noncritical).",
    )

    if TYPE_CHECKING:  # declared (with descriptions) by each model, in its own order
        driver: str
        id: str
        enabled: bool
        description: str | None
        poll: float
        profile: str | None
