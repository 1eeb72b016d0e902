"""Operator actions on alarms (``cmd/ack``, ``cmd/shelve``) and the retained active-alarm set.

An :class:`AlarmDesk` holds what it needs, passed in by the daemon: the devices'
metrology, a way to record an audit entry, to emit alarm records into the outbox,
to persist a device's rule state and to retain a signed message. Topics and
payloads are in docs/wire.md.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from drivers.base import Clock
from gateway.metrology.pipeline import DeviceMetrology
from gateway.wire.signing import Signer

log = logging.getLogger("metrogate.runtime")


class AlarmDesk:
    """Applies operator commands to the alarms of a running gateway."""

    def __init__(
        self,
        *,
        gateway: str,
        site: str,
        metrology: Callable[[], Mapping[str, DeviceMetrology]],
        record_event: Callable[..., None],
        emit: Callable[[str, list[dict[str, Any]]], None],
        save_state: Callable[[str], None],
        retain: Callable[[str, bytes], None] | None,
        signer: Signer,
        clock: Clock,
    ) -> None:
        self.gateway = gateway
        self.site = site
        self.metrology = metrology
        self.record_event = record_event
        self.emit = emit
        self.save_state = save_state
        self.retain = retain
        self.signer = signer
        self.clock = clock

    async def on_command(self, name: str, payload: bytes) -> None:
        """``cmd/ack`` and ``cmd/shelve`` with ``{"alarm": id, "user": ..., "duration": s}``."""
        try:
            body = json.loads(payload or b"{}")
        except ValueError:
            log.warning("command %s: payload is not JSON", name)
            return
        records = self.command(name, body)
        if records is None:
            log.warning("command %s: unknown command or alarm", name)

    def command(self, name: str, body: dict[str, Any]) -> list[dict[str, Any]] | None:
        alarm = str(body.get("alarm", ""))
        user = str(body.get("user", "mqtt"))
        metro = self.metrology().get(alarm.split("/", 1)[0])
        if metro is None or name not in ("ack", "shelve"):
            return None
        now = self.clock()
        if name == "ack":
            records = metro.acknowledge(alarm, user, now)
        else:
            records = metro.shelve(alarm, float(body.get("duration", 3600)), user, now)
        self.record_event(f"alarm_{name}", {"alarm": alarm, "user": user}, source=user)
        if records:
            self.emit("alarm", records)
            self.changed(alarm.split("/", 1)[0])
        return records

    def changed(self, dev_id: str) -> None:
        """Persist the device's rule state and retain the gateway's active alarm set."""
        self.save_state(dev_id)
        self.retain_set()

    def retain_set(self) -> None:
        """The active alarms, signed, retained on ``{base}/alarms`` (docs/wire.md)."""
        if self.retain is None:
            return
        active = [a for metro in self.metrology().values() for a in metro.active_alarms()]
        body = {
            "v": 1,
            "type": "alarm_set",
            "gateway": self.gateway,
            "site": self.site,
            "ts": self.clock(),
            "alarms": active,
        }
        raw = json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
        self.retain("alarms", self.signer.sign_payload(raw))
