"""Alarms with the ISA-18.2 state model, on/off delays and shelving — pure.

States (:class:`AlarmState`)::

    normal ──condition──▶ active_unacknowledged ──ack──▶ active_acknowledged
       ▲                        │ condition gone              │ condition gone
       │                        ▼                             ▼
       └──────ack────── returned_unacknowledged            normal
                                │ condition again
                                ▼
                        active_unacknowledged

The condition fed to :meth:`Alarm.update` is already hysteretic (deadband is the
rule's business); the alarm adds the on-delay (the condition must hold that long
to raise) and the off-delay (it must be gone that long to clear).

Shelving is orthogonal to the state: a shelved alarm keeps following its
condition and still produces records (they carry ``"shelved": true`` so displays
can hide them and the evidence stays complete); it unshelves itself when the
shelve time runs out (:meth:`Alarm.tick`).

Every state change returns one record (a JSON-able dict) with the keys ``ts``,
``alarm``, ``device``, ``point``, ``rule``, ``event``, ``state``, ``previous``,
``active``, ``acknowledged``, ``shelved``, ``severity``, ``value``, ``limit``,
``message``, and, where relevant, ``user`` and ``shelved_until``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from gateway.config.models.metrology import AlarmSeverity

__all__ = ["Alarm", "AlarmError", "AlarmEvent", "AlarmState", "ShelveTooLong", "UnknownAlarm"]


class AlarmState(StrEnum):
    NORMAL = "normal"
    ACTIVE_UNACKNOWLEDGED = "active_unacknowledged"
    ACTIVE_ACKNOWLEDGED = "active_acknowledged"
    RETURNED_UNACKNOWLEDGED = "returned_unacknowledged"


class AlarmEvent(StrEnum):
    """What happened, in the ``event`` key of a record."""

    RAISED = "raised"
    RETURNED = "returned"
    CLEARED = "cleared"
    ACKNOWLEDGED = "acknowledged"
    SHELVED = "shelved"
    UNSHELVED = "unshelved"


class AlarmError(Exception):
    """An operator command on an alarm that cannot be carried out."""

    def __init__(self, alarm_id: str, message: str) -> None:
        super().__init__(f"{alarm_id}: {message}")
        self.alarm_id = alarm_id


class UnknownAlarm(AlarmError):
    """No alarm with that id on this device."""


class ShelveTooLong(AlarmError):
    """The requested shelve time exceeds the configured maximum (or is not positive)."""


_S = AlarmState


class Alarm:
    """One alarm: condition debouncing, the ISA-18.2 states and shelving."""

    __slots__ = (
        "active",
        "alarm_id",
        "device",
        "last_limit",
        "last_value",
        "message",
        "off_delay_us",
        "on_delay_us",
        "pending_since_us",
        "point",
        "rule",
        "severity",
        "shelved_until_us",
        "state",
    )

    def __init__(
        self,
        alarm_id: str,
        *,
        device: str,
        point: str | None,
        rule: str,
        severity: AlarmSeverity,
        on_delay_s: float = 0.0,
        off_delay_s: float = 0.0,
        message: str | None = None,
    ) -> None:
        self.alarm_id = alarm_id
        self.device = device
        self.point = point
        self.rule = rule
        self.severity = severity
        self.on_delay_us = round(on_delay_s * 1e6)
        self.off_delay_us = round(off_delay_s * 1e6)
        self.message = message or alarm_id
        self.state = AlarmState.NORMAL
        self.active = False
        """The debounced condition."""
        self.pending_since_us: int | None = None
        self.shelved_until_us: int | None = None
        self.last_value: float | None = None
        self.last_limit: float | None = None

    # ------------------------------------------------------------------ condition

    def update(
        self, condition: bool, now_us: int, value: float | None = None, limit: float | None = None
    ) -> list[dict[str, Any]]:
        """Feed the current (hysteretic) condition; returns the records of any state change."""
        if condition == self.active:
            self.pending_since_us = None
            if condition:
                self.last_value, self.last_limit = value, limit
            return []
        if self.pending_since_us is None:
            self.pending_since_us = now_us
        delay = self.on_delay_us if condition else self.off_delay_us
        if now_us - self.pending_since_us < delay:
            return []
        self.pending_since_us = None
        self.active = condition
        self.last_value, self.last_limit = value, limit
        previous = self.state
        if condition:
            self.state = _S.ACTIVE_UNACKNOWLEDGED
            event = AlarmEvent.RAISED
        elif previous is _S.ACTIVE_UNACKNOWLEDGED:
            self.state = _S.RETURNED_UNACKNOWLEDGED
            event = AlarmEvent.RETURNED
        else:
            self.state = _S.NORMAL
            event = AlarmEvent.CLEARED
        return [self._record(now_us, event, previous)]

    # ------------------------------------------------------------------ operator

    def acknowledge(self, user: str, now_us: int) -> list[dict[str, Any]]:
        """Acknowledge; a no-op (no record) when there is nothing to acknowledge."""
        previous = self.state
        if previous is _S.ACTIVE_UNACKNOWLEDGED:
            self.state = _S.ACTIVE_ACKNOWLEDGED
        elif previous is _S.RETURNED_UNACKNOWLEDGED:
            self.state = _S.NORMAL
        else:
            return []
        return [self._record(now_us, AlarmEvent.ACKNOWLEDGED, previous, user=user)]

    def shelve(self, until_us: int, user: str, now_us: int) -> list[dict[str, Any]]:
        """Shelve until ``until_us`` (the caller enforces the maximum shelve time)."""
        if until_us <= now_us:
            raise ShelveTooLong(self.alarm_id, "shelve time must be positive")
        self.shelved_until_us = until_us
        return [self._record(now_us, AlarmEvent.SHELVED, self.state, user=user)]

    def unshelve(self, user: str | None, now_us: int) -> list[dict[str, Any]]:
        """End shelving now (operator) or because the shelve time ran out (``user`` None)."""
        if self.shelved_until_us is None:
            return []
        self.shelved_until_us = None
        return [self._record(now_us, AlarmEvent.UNSHELVED, self.state, user=user)]

    def tick(self, now_us: int) -> list[dict[str, Any]]:
        """Unshelve when the shelve time has run out."""
        if self.shelved_until_us is not None and now_us >= self.shelved_until_us:
            return self.unshelve(None, now_us)
        return []

    # ------------------------------------------------------------------ views

    def _record(
        self, now_us: int, event: AlarmEvent, previous: AlarmState, user: str | None = None
    ) -> dict[str, Any]:
        rec = self.snapshot(now_us)
        rec["event"] = event.value
        rec["previous"] = previous.value
        if user is not None:
            rec["user"] = user
        return rec

    def snapshot(self, now_us: int) -> dict[str, Any]:
        """The alarm as it stands (the record keys, without event/previous/user)."""
        rec: dict[str, Any] = {
            "ts": now_us,
            "alarm": self.alarm_id,
            "device": self.device,
            "point": self.point,
            "rule": self.rule,
            "state": self.state.value,
            "active": self.active,
            "acknowledged": self.state in (_S.NORMAL, _S.ACTIVE_ACKNOWLEDGED),
            "shelved": self.shelved_until_us is not None,
            "severity": self.severity.value,
            "value": self.last_value,
            "limit": self.last_limit,
            "message": self.message,
        }
        if self.shelved_until_us is not None:
            rec["shelved_until"] = self.shelved_until_us
        return rec

    def to_state(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "active": self.active,
            "pending_since": self.pending_since_us,
            "shelved_until": self.shelved_until_us,
            "value": self.last_value,
            "limit": self.last_limit,
        }

    def load_state(self, st: dict[str, Any]) -> None:
        """Restore what :meth:`to_state` saved (raises ValueError/KeyError if malformed)."""
        self.state = AlarmState(st["state"])
        self.active = bool(st["active"])
        pending = st.get("pending_since")
        self.pending_since_us = None if pending is None else int(pending)
        shelved = st.get("shelved_until")
        self.shelved_until_us = None if shelved is None else int(shelved)
        value, limit = st.get("value"), st.get("limit")
        self.last_value = None if value is None else float(value)
        self.last_limit = None if limit is None else float(limit)
