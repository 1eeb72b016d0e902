"""What the operations code may see of a running gateway (read-only, structural types).

:class:`gateway.daemon.Gateway` satisfies :class:`GatewayView` as it is; tests may
pass any object with these attributes. Nothing here is written to, so observing
a gateway never changes what it does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from gateway.acquisition.clock import SyncState
from gateway.audit.software_id import SoftwareId
from gateway.common.stall import StallStats
from gateway.config.loader import LoadedConfig
from gateway.delivery.outbox import OutboxStats
from gateway.delivery.publisher import PublisherStats
from gateway.delivery.writer import WriterStats

if TYPE_CHECKING:  # the runtime imports every driver; the ops code needs only its types
    from gateway.acquisition.poller import DeviceHealth


class PollerView(Protocol):
    @property
    def health(self) -> DeviceHealth: ...

    @property
    def device(self) -> Any: ...  # the device's config model (``.id``, ``.poll``, ``.bus``)


class OutboxView(Protocol):
    def stats(self) -> OutboxStats: ...


class WriterView(Protocol):
    @property
    def stats(self) -> WriterStats: ...


class StallView(Protocol):
    @property
    def stats(self) -> StallStats: ...


class PublisherView(Protocol):
    @property
    def stats(self) -> PublisherStats: ...


class EventsView(Protocol):
    """The event log as the daemon writes it (gateway.delivery.events.EventFeed)."""

    @property
    def entries(self) -> int: ...

    @property
    def max_entries(self) -> int: ...

    @property
    def full(self) -> bool: ...

    @property
    def parameter_changes_allowed(self) -> bool: ...

    @property
    def pending(self) -> int: ...

    @property
    def refused(self) -> int: ...

    @property
    def changes_refused(self) -> int: ...

    @property
    def write_error(self) -> str | None: ...


class ClockView(Protocol):
    @property
    def state(self) -> SyncState: ...

    @property
    def synchronised(self) -> bool: ...


class PollersView(Protocol):
    """Enough for the watchdog: the device pollers."""

    @property
    def pollers(self) -> Mapping[str, PollerView]: ...


class RatesView(PollersView, Protocol):
    """Enough for the rate meter: pollers and the outbox."""

    @property
    def outbox(self) -> OutboxView | None: ...


class GatewayView(RatesView, Protocol):
    """Everything health and metrics read."""

    @property
    def publisher(self) -> PublisherView | None: ...

    @property
    def events(self) -> EventsView | None: ...

    @property
    def writer(self) -> WriterView | None: ...

    @property
    def stalls(self) -> StallView: ...

    @property
    def clock_monitor(self) -> ClockView: ...

    @property
    def loaded(self) -> LoadedConfig: ...

    @property
    def software(self) -> SoftwareId: ...

    @property
    def started_us(self) -> int: ...

    @property
    def base_topic(self) -> str: ...

    def command_counts(self) -> Mapping[str, int]:
        """Operator commands so far by outcome: ``accepted``, ``unchanged`` and each refusal
        reason (docs/wire.md)."""
        ...
