"""Operator actions on alarms (``cmd/ack``, ``cmd/shelve``) and the retained active-alarm set.

Every command is a signed operator command (:mod:`gateway.wire.commands`). The
:class:`CommandGuard` checks it and refuses it — unsigned, malformed, signed by an
unknown key, forged (signature or operator id), meant for another gateway, out of the
time window (``commands.window``), replayed (nonce seen), or not permitted by the
operator's roles. Refusals are counted and written to the event log as one
``commands_refused`` summary entry at most every ``commands.refusal_summary``
seconds, never one entry per message. An accepted command that changes nothing
(acknowledging an acknowledged alarm) writes nothing.

An :class:`AlarmDesk` holds what it needs, passed in by the daemon: the devices'
metrology, a way to record an audit entry, to emit alarm records into the outbox,
to persist a device's rule state and to retain a signed message. Topics and
payloads are in docs/wire.md.
"""

from __future__ import annotations

import json
import logging
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from drivers.base import Clock
from gateway.config.schema import CommandsConfig, OperatorConfig
from gateway.metrology.alarms import AlarmError, UnknownAlarm
from gateway.metrology.pipeline import DeviceMetrology
from gateway.wire.commands import Command, CommandError, parse_command
from gateway.wire.keys import public_key_from_text
from gateway.wire.signing import SignatureError, Signer, key_id, verify_payload

log = logging.getLogger("metrogate.runtime")

__all__ = ["AlarmDesk", "CommandGuard", "CommandRefused", "NonceCache", "Operator"]


class CommandRefused(Exception):
    """A command the gateway will not carry out; ``kind`` names why (docs/wire.md)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind


@dataclass(frozen=True, slots=True)
class Operator:
    """A configured operator: id, public key (and its key id), permitted actions."""

    id: str
    key: Ed25519PublicKey
    kid: str
    roles: frozenset[str]

    @classmethod
    def from_config(cls, cfg: OperatorConfig) -> Operator:
        key = public_key_from_text(cfg.public_key)
        return cls(cfg.id, key, key_id(key), frozenset(cfg.roles))


class NonceCache:
    """Nonces of accepted commands, at most ``capacity``, to refuse replays.

    A nonce older than the time window can be forgotten: its command would be refused
    as out of window anyway. When the cache is full of nonces still inside the
    window, :meth:`add` returns False and the command is refused (a flood of valid
    commands must not push out the nonces that stop replays).
    """

    def __init__(self, capacity: int, window_us: int) -> None:
        self.capacity = capacity
        self.window_us = window_us
        self._seen: OrderedDict[str, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, nonce: object) -> bool:
        return nonce in self._seen

    def add(self, nonce: str, ts_us: int, now_us: int) -> bool:
        if len(self._seen) >= self.capacity:
            horizon = now_us - self.window_us
            for old in [n for n, t in self._seen.items() if t < horizon]:
                del self._seen[old]
            if len(self._seen) >= self.capacity:
                return False
        self._seen[nonce] = ts_us
        return True


class CommandGuard:
    """Verifies signed operator commands for one gateway (see the module docstring)."""

    def __init__(
        self,
        *,
        gateway: str,
        site: str,
        operators: Iterable[Operator],
        settings: CommandsConfig,
        clock: Clock,
        record_event: Callable[..., None],
    ) -> None:
        self.gateway = gateway
        self.site = site
        self.operators = {op.id: op for op in operators}
        self.keys = {op.kid: op.key for op in self.operators.values()}
        self._by_kid = {op.kid: op for op in self.operators.values()}
        self.window_us = round(settings.window * 1e6)
        self.summary_us = round(settings.refusal_summary * 1e6)
        self.nonces = NonceCache(settings.nonce_cache, self.window_us)
        self.clock = clock
        self.record_event = record_event
        self.refused: Counter[str] = Counter()  # since start, by kind
        self._pending: Counter[str] = Counter()  # since the last summary entry
        self._pending_since: int | None = None
        self._last: dict[str, str] = {}
        self._last_summary_us: int | None = None

    def check(self, name: str, payload: bytes) -> tuple[Command, Operator]:
        """The command and its operator, or :class:`CommandRefused`. Records the nonce."""
        try:
            body, kid = verify_payload(payload, self.keys)
        except SignatureError as exc:
            kind = "unknown_operator" if exc.kind == "unknown_key" else exc.kind
            raise CommandRefused(kind, str(exc)) from None
        try:
            cmd = parse_command(body)
        except CommandError as exc:
            raise CommandRefused("malformed", str(exc)) from None
        op = self._by_kid[kid]
        if cmd.operator != op.id:
            raise CommandRefused(
                "forged", f"signed by operator {op.id}'s key but names operator {cmd.operator}"
            )
        if cmd.action != name:
            raise CommandRefused("topic_mismatch", f"{cmd.action} command on cmd/{name}")
        if (cmd.gateway, cmd.site) != (self.gateway, self.site):
            raise CommandRefused(
                "wrong_gateway", f"for {cmd.site}/{cmd.gateway}, this is {self.site}/{self.gateway}"
            )
        now = self.clock()
        skew = cmd.ts_us - now
        if abs(skew) > self.window_us:
            raise CommandRefused(
                "out_of_window",
                f"timestamp {skew / 1e6:+.1f} s from the gateway's clock "
                f"(window ±{self.window_us / 1e6:g} s)",
            )
        if cmd.nonce in self.nonces:
            raise CommandRefused("replayed", f"nonce {cmd.nonce} was already used")
        if cmd.action not in op.roles:
            raise CommandRefused(
                "not_permitted", f"operator {op.id} may not {cmd.action} (roles {sorted(op.roles)})"
            )
        if not self.nonces.add(cmd.nonce, cmd.ts_us, now):
            raise CommandRefused("busy", "too many recent commands; try again within the window")
        return cmd, op

    def refuse(self, exc: CommandRefused, name: str) -> None:
        """Count a refusal; write a summary entry now if none was written lately."""
        now = self.clock()
        self.refused[exc.kind] += 1
        if not self._pending:
            self._pending_since = now
            log.warning("command %s refused: %s (further refusals are summarised)", name, exc)
        self._pending[exc.kind] += 1
        self._last = {"kind": exc.kind, "command": name, "detail": str(exc)[:200]}
        if self._last_summary_us is None or now - self._last_summary_us >= self.summary_us:
            self.flush(now)

    def flush(self, now: int) -> None:
        """Write the pending refusals as one ``commands_refused`` entry (if any)."""
        if not self._pending:
            return
        data = {
            "counts": dict(sorted(self._pending.items())),
            "total": sum(self._pending.values()),
            "since": self._pending_since,
            "until": now,
            "last": self._last,
        }
        self.record_event("commands_refused", data, source="operator")
        self._pending.clear()
        self._last_summary_us = now

    def tick(self, now: int) -> None:
        """From housekeeping: pending refusals are written once the interval has passed."""
        if self._pending and (
            self._last_summary_us is None or now - self._last_summary_us >= self.summary_us
        ):
            self.flush(now)


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
        guard: CommandGuard | None = None,
    ) -> None:
        """``guard`` checks commands; None refuses them all (no operators configured)."""
        self.guard = guard or CommandGuard(
            gateway=gateway,
            site=site,
            operators=(),
            settings=CommandsConfig(),
            clock=clock,
            record_event=record_event,
        )
        self.outcomes: Counter[str] = Counter()  # accepted / unchanged (refusals: the guard)
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
        """A message on ``cmd/{name}``: a signed command, carried out or refused."""
        self.command(name, payload)

    def command(self, name: str, payload: bytes) -> list[dict[str, Any]] | None:
        """Check and carry out one command; the alarm records it produced, None if refused.

        An accepted command that changed something is recorded in the event log as
        ``alarm_ack`` / ``alarm_shelve`` with the operator id as source; one that
        changed nothing (``[]``) writes nothing.
        """
        guard = self.guard
        try:
            cmd, op = guard.check(name, payload)
            records = self._apply(cmd)
        except CommandRefused as exc:
            guard.refuse(exc, name)
            return None
        if not records:
            self.outcomes["unchanged"] += 1
            log.info("command %s %s by %s changed nothing", name, cmd.alarm, op.id)
            return records
        self.outcomes["accepted"] += 1
        data: dict[str, Any] = {
            "alarm": cmd.alarm,
            "operator": op.id,
            "kid": op.kid,
            "ts": cmd.ts_us,
            "nonce": cmd.nonce,
        }
        if cmd.duration_s is not None:
            data["duration"] = cmd.duration_s
        self.record_event(f"alarm_{cmd.action}", data, source=op.id)
        self.emit("alarm", records)
        self.changed(cmd.alarm.split("/", 1)[0])
        return records

    def _apply(self, cmd: Command) -> list[dict[str, Any]]:
        metro = self.metrology().get(cmd.alarm.split("/", 1)[0])
        if metro is None:
            raise CommandRefused("unknown_alarm", f"no device of alarm {cmd.alarm}")
        now = self.clock()
        try:
            if cmd.action == "ack":
                return metro.acknowledge(cmd.alarm, cmd.operator, now)
            assert cmd.duration_s is not None
            return metro.shelve(cmd.alarm, cmd.duration_s, cmd.operator, now)
        except AlarmError as exc:
            kind = "unknown_alarm" if isinstance(exc, UnknownAlarm) else "invalid"
            raise CommandRefused(kind, str(exc)) from None

    def counts(self) -> dict[str, int]:
        """Commands so far by outcome: accepted, unchanged, and each refusal reason."""
        return {**self.outcomes, **self.guard.refused}

    def tick(self, now: int) -> None:
        """Housekeeping: pending refusal counts reach the event log."""
        self.guard.tick(now)

    def tick_final(self, now: int) -> None:
        """At shutdown: whatever refusals are pending are written now."""
        self.guard.flush(now)

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
