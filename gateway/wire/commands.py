"""Signed operator commands (``{base}/cmd/ack``, ``{base}/cmd/shelve``): the format.

A command is a signed payload (:mod:`gateway.wire.signing`): the JSON body, a
newline, the signature line, signed with the *operator's* Ed25519 key. The body::

    {"v":1,"type":"command","action":"ack"|"shelve","gateway":G,"site":S,
     "alarm":"device/point/rule","operator":ID,"ts":<µs since the epoch, UTC>,
     "nonce":<32 hex digits>,"duration":<seconds, shelve only>}

``gateway`` and ``site`` bind the command to one gateway (a command captured on one
gateway's topic cannot be replayed to another); ``ts`` and ``nonce`` let the gateway
refuse stale and replayed commands (:mod:`gateway.operator`). This module builds
and parses; it decides nothing about who may do what. docs/wire.md has the contract.
"""

from __future__ import annotations

import json
import math
import re
import secrets
from dataclasses import dataclass
from typing import Any, Literal

from gateway.wire.signing import Signer

__all__ = [
    "ACTIONS",
    "Command",
    "CommandError",
    "build_command",
    "parse_command",
]

Action = Literal["ack", "shelve"]
ACTIONS: tuple[Action, ...] = ("ack", "shelve")
_NONCE = re.compile(r"^[0-9a-f]{32}$")
_ID = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


class CommandError(Exception):
    """A command body that is not of the form above; ``kind`` is ``malformed``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.kind = "malformed"


@dataclass(frozen=True, slots=True)
class Command:
    """One parsed command body (its signature was checked separately)."""

    action: Action
    gateway: str
    site: str
    alarm: str
    operator: str
    ts_us: int
    nonce: str
    duration_s: float | None = None

    def body(self) -> bytes:
        """The canonical body bytes (compact JSON, keys in a fixed order)."""
        d: dict[str, Any] = {
            "v": 1,
            "type": "command",
            "action": self.action,
            "gateway": self.gateway,
            "site": self.site,
            "alarm": self.alarm,
            "operator": self.operator,
            "ts": self.ts_us,
            "nonce": self.nonce,
        }
        if self.duration_s is not None:
            d["duration"] = self.duration_s
        return json.dumps(d, separators=(",", ":"), allow_nan=False).encode()


def build_command(
    signer: Signer,
    *,
    action: Action,
    gateway: str,
    site: str,
    alarm: str,
    operator: str,
    ts_us: int,
    duration_s: float | None = None,
    nonce: str | None = None,
) -> bytes:
    """The signed payload of one command; a fresh random nonce unless ``nonce`` is given.

    Raises :class:`CommandError` for a body :func:`parse_command` would refuse, so a
    sender finds its own mistakes before the gateway does.
    """
    cmd = Command(
        action=action,
        gateway=gateway,
        site=site,
        alarm=alarm,
        operator=operator,
        ts_us=ts_us,
        nonce=nonce if nonce is not None else secrets.token_hex(16),
        duration_s=float(duration_s) if action == "shelve" and duration_s is not None else None,
    )
    body = cmd.body()
    parse_command(body)
    return signer.sign_payload(body)


def _str(d: dict[str, Any], key: str, pattern: re.Pattern[str] | None = None) -> str:
    v = d.get(key)
    if not isinstance(v, str) or not v:
        raise CommandError(f"{key!r} must be a non-empty string")
    if pattern is not None and not pattern.match(v):
        raise CommandError(f"{key!r} has an invalid form: {v[:80]!r}")
    return v


def parse_command(body: bytes) -> Command:
    """Parse and check a command body; :class:`CommandError` saying what is wrong."""
    try:
        d = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CommandError(f"body is not JSON ({exc})") from None
    if not isinstance(d, dict):
        raise CommandError("body is not a JSON object")
    if type(d.get("v")) is not int or d.get("v") != 1 or d.get("type") != "command":
        raise CommandError("not a version 1 command (v, type)")
    action = d.get("action")
    if action not in ACTIONS:
        raise CommandError(f"action must be one of {', '.join(ACTIONS)}")
    ts = d.get("ts")
    if type(ts) is not int or ts <= 0:
        raise CommandError("'ts' must be a positive integer (µs since the epoch)")
    given = d.get("duration")
    duration: float | None = None
    if action == "shelve":
        if not isinstance(given, int | float) or isinstance(given, bool):
            raise CommandError("shelve needs 'duration' > 0 (seconds)")
        duration = float(given)
        if not math.isfinite(duration) or duration <= 0:
            raise CommandError("shelve needs 'duration' > 0 (seconds)")
    elif given is not None:
        raise CommandError("'duration' is for shelve only")
    known = {"v", "type", "action", "gateway", "site", "alarm", "operator", "ts", "nonce"}
    extra = set(d) - known - {"duration"}
    if extra:
        raise CommandError(f"unknown keys: {', '.join(sorted(extra))}")
    alarm = _str(d, "alarm")
    if not 1 <= alarm.count("/") <= 2 or len(alarm) > 300:
        raise CommandError("'alarm' must be device/point/rule (or device/expression)")
    return Command(
        action=action,
        gateway=_str(d, "gateway"),
        site=_str(d, "site"),
        alarm=alarm,
        operator=_str(d, "operator", _ID),
        ts_us=ts,
        nonce=_str(d, "nonce", _NONCE),
        duration_s=duration,
    )
