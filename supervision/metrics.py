"""Prometheus metrics of an ingest worker, computed at scrape time (docs/operations.md)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.common.opsserver import counter, gauge

__all__ = ["INGEST_METRICS", "IngestCollector"]

INGEST_METRICS: dict[str, str] = {
    "metrogate_ingest_messages_total": "Messages by outcome (received, acked, duplicate, ...).",
    "metrogate_ingest_readings_written_total": "Readings the store accepted.",
    "metrogate_ingest_writes_total": "Store writes that succeeded.",
    "metrogate_ingest_write_failures_total": "Store writes that failed and were retried.",
    "metrogate_ingest_verified_total": "Batches whose signature verified.",
    "metrogate_ingest_dead_letters_total": "Messages dead-lettered, by reason.",
    "metrogate_ingest_dead_letters_refused_total": (
        "Dead-letter publications the broker refused (PUBACK reason code), by reason."
    ),
    "metrogate_ingest_dropped_total": "Messages dropped, counted, by reason.",
    "metrogate_ingest_security_events_total": "Security events filed, by kind.",
    "metrogate_ingest_gap_batches": "Sequence numbers this worker has not seen, by gateway.",
    "metrogate_ingest_high_seq": "Highest sequence number seen, by gateway.",
}

_MESSAGE_OUTCOMES = (
    "received", "acked", "unacknowledged", "duplicate", "gap_fill", "late", "replay",
    "internal_error",
)  # fmt: skip


def _gauge(name: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return gauge(name, INGEST_METRICS[name], labels)


def _counter(name: str, labels: Iterable[str] = ()) -> CounterMetricFamily:
    return counter(name, INGEST_METRICS[name], labels)


class SequenceView(Protocol):
    """What :class:`IngestCollector` reads of :class:`gateway.wire.verify.SequenceTracker`."""

    def gaps(self, gateway: str) -> list[tuple[int, int]]: ...

    def high(self, gateway: str) -> int | None: ...


class IngestCollector(Collector):
    """Ingest metrics from a worker's ``counts`` and (optionally) its sequence tracker.

    ``counts`` is :attr:`supervision.ingest.Ingest.counts`, or a function returning it
    (keys ``received``, ``acked``, ``unacknowledged``, ``duplicate``, ``gap_fill``,
    ``late``, ``replay``, ``internal_error``, ``verified``, ``writes``,
    ``write_failures``, ``readings_written``, ``dead_letter.<reason>``,
    ``refused.<reason>``, ``dropped.<reason>``, ``security.<kind>``; missing keys
    count 0); ``gateways`` names the
    registered gateways whose gaps are reported from ``tracker``.
    """

    def __init__(
        self,
        counts: Mapping[str, int] | Callable[[], Mapping[str, int]],
        *,
        tracker: SequenceView | None = None,
        gateways: Callable[[], Iterable[str]] = tuple,
    ) -> None:
        self.counts = counts
        self.tracker = tracker
        self.gateways = gateways

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        counts = Counter(self.counts() if callable(self.counts) else self.counts)
        messages = _counter("metrogate_ingest_messages_total", ["outcome"])
        for outcome in _MESSAGE_OUTCOMES:
            messages.add_metric([outcome], counts[outcome])
        yield messages
        for name, key in (
            ("metrogate_ingest_readings_written_total", "readings_written"),
            ("metrogate_ingest_writes_total", "writes"),
            ("metrogate_ingest_write_failures_total", "write_failures"),
            ("metrogate_ingest_verified_total", "verified"),
        ):
            c = _counter(name)
            c.add_metric([], counts[key])
            yield c
        for name, label, prefix in (
            ("metrogate_ingest_dead_letters_total", "reason", "dead_letter."),
            ("metrogate_ingest_dead_letters_refused_total", "reason", "refused."),
            ("metrogate_ingest_dropped_total", "reason", "dropped."),
            ("metrogate_ingest_security_events_total", "kind", "security."),
        ):
            family = _counter(name, [label])
            for key, n in sorted(counts.items()):
                if key.startswith(prefix):
                    family.add_metric([key.removeprefix(prefix)], n)
            yield family
        if self.tracker is not None:
            gaps = _gauge("metrogate_ingest_gap_batches", ["gateway"])
            high = _gauge("metrogate_ingest_high_seq", ["gateway"])
            for gw in sorted(self.gateways()):
                gaps.add_metric([gw], sum(b - a + 1 for a, b in self.tracker.gaps(gw)))
                top = self.tracker.high(gw)
                if top is not None:
                    high.add_metric([gw], top)
            yield gaps
            yield high
