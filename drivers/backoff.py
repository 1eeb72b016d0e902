"""Capped, jittered, doubling back-off: the one retry policy of metrogate.

Every place that waits after a failure uses :class:`Backoff`: the device poller
(``gateway.acquisition.poller``), the MQTT publisher (``gateway.delivery.publisher``),
the serial bus quarantine (:mod:`drivers.serial_line`) and the ingest's store
retries (``supervision.ingest``). It lives in ``drivers``, the bottom layer that
imports nothing of ours, so every other package may import it from here; it
imports nothing but the standard library.

Contract: after the n-th consecutive failure (``n = 1, 2, ...``) the step is
``min(cap, initial × 2^(n-1))`` and :meth:`Backoff.next_delay` returns a delay drawn
uniformly from ``[step × (1 - jitter), step]``, so

* no delay ever exceeds ``cap`` (nor the step), and none is below
  ``(1 - jitter) × min(initial, cap)``;
* steps double until they reach ``cap`` and then stay there, however many
  failures follow (no overflow after thousands of them);
* ``jitter=0`` gives the exact steps (the serial quarantine, whose periods are
  documented as doubling); the default ``0.5`` spreads peers that failed
  together so they do not retry in lock step;
* :meth:`Backoff.reset` after a success starts again at ``initial``.

``rng`` (the jitter's source) and ``clock`` (for :attr:`Backoff.until` and
:meth:`Backoff.remaining`) are injectable, so tests need neither luck nor wall time.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable

__all__ = ["Backoff"]


class Backoff:
    """Delays to wait after consecutive failures (see the module docstring)."""

    __slots__ = (
        "_clock", "_rng", "_step", "cap", "delay", "failures", "initial", "jitter", "until",
    )  # fmt: skip

    def __init__(
        self,
        initial: float,
        cap: float,
        *,
        jitter: float = 0.5,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (0 <= initial < math.inf and 0 <= cap < math.inf):  # NaN fails this too
            raise ValueError(f"back-off: initial {initial!r} and cap {cap!r} must be finite, ≥ 0")
        if not 0 <= jitter <= 1:
            raise ValueError(f"back-off: jitter {jitter!r} must lie in [0, 1]")
        self.initial = float(initial)
        self.cap = float(cap)
        self.jitter = float(jitter)
        self._rng = rng if rng is not None else random.Random()
        self._clock = clock
        self._step = 0.0
        self.failures = 0
        """Consecutive failures since the start or the last :meth:`reset`."""
        self.delay = 0.0
        """The last delay handed out (0 before any and after :meth:`reset`)."""
        self.until = 0.0
        """Clock time at which the last delay handed out ends (0 before any)."""

    def next_delay(self) -> float:
        """Count one more failure and return the seconds to wait before the next attempt."""
        self.failures += 1
        self._step = min(self.cap, self._step * 2 if self._step else self.initial)
        step = self._step
        delay = step if self.jitter == 0 else self._rng.uniform(step * (1 - self.jitter), step)
        self.delay = min(delay, step)  # uniform() may round a hair past its upper end
        self.until = self._clock() + self.delay
        return self.delay

    def reset(self) -> None:
        """After a success: the next failure waits ``initial`` again."""
        self.failures = 0
        self._step = 0.0
        self.delay = 0.0
        self.until = 0.0

    def remaining(self) -> float:
        """Seconds left of the last delay on ``clock`` (0 when it has passed or none was given)."""
        return max(0.0, self.until - self._clock())
