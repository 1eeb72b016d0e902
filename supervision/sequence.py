"""Per-gateway batch sequence tracking in one worker: duplicates, conflicts, gaps, late fills.

Bounded memory: per gateway, the digests of the last ``window`` sequence numbers and
at most ``window`` missing ones. With several workers on a shared subscription each
sees only part of a gateway's sequence, so the gaps here are local hints; the
authoritative completeness is computed from the store's ``batch`` points
(docs/ingest.md). Duplicates and conflicts are reliable for what this worker saw.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

__all__ = ["SeqVerdict", "SequenceTracker"]


class SeqVerdict(enum.Enum):
    NEW = "new"  # beyond everything seen so far (possibly after a gap)
    LATE = "late"  # fills a gap this tracker had recorded
    DUPLICATE = "duplicate"  # seen before with the same bytes
    CONFLICT = "conflict"  # seen before with different bytes


@dataclass(slots=True)
class _Gateway:
    high: int = 0
    digests: dict[int, bytes] = field(default_factory=dict)
    missing: set[int] = field(default_factory=set)


class SequenceTracker:
    """Classifies each ``(gateway, seq, digest)`` against what was seen before."""

    def __init__(self, window: int = 65_536) -> None:
        if window < 1:
            raise ValueError("window must be positive")
        self._window = window
        self._gw: dict[str, _Gateway] = {}

    def observe(self, gateway: str, seq: int, digest: bytes) -> SeqVerdict:
        g = self._gw.get(gateway)
        if g is None:
            g = self._gw[gateway] = _Gateway()
        known = g.digests.get(seq)
        if known is not None:
            return SeqVerdict.DUPLICATE if known == digest else SeqVerdict.CONFLICT
        verdict = SeqVerdict.NEW
        if seq > g.high:
            if g.high and seq - g.high - 1 <= self._window:
                g.missing.update(range(g.high + 1, seq))
            g.high = seq
            self._prune(g)
        elif seq in g.missing:
            g.missing.discard(seq)
            verdict = SeqVerdict.LATE
        g.digests[seq] = digest
        if len(g.digests) > 2 * self._window:
            self._prune(g)
        return verdict

    def _prune(self, g: _Gateway) -> None:
        floor = g.high - self._window
        if len(g.digests) > self._window:
            g.digests = {s: d for s, d in g.digests.items() if s > floor}
        if len(g.missing) > self._window:
            g.missing = {s for s in g.missing if s > floor}

    def gaps(self, gateway: str) -> list[tuple[int, int]]:
        """Missing sequence numbers as inclusive ranges, oldest first (local view)."""
        g = self._gw.get(gateway)
        if g is None:
            return []
        out: list[tuple[int, int]] = []
        for s in sorted(g.missing):
            if out and out[-1][1] == s - 1:
                out[-1] = (out[-1][0], s)
            else:
                out.append((s, s))
        return out

    def high(self, gateway: str) -> int:
        g = self._gw.get(gateway)
        return g.high if g else 0
