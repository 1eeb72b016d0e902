"""sd_notify(3) without a dependency: one datagram to ``$NOTIFY_SOCKET`` per message.

Outside systemd (no ``NOTIFY_SOCKET``) every call is a no-op, so the daemon runs the
same under a terminal, Docker or systemd.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping


class Notifier:
    """Sends ``READY=1``, ``WATCHDOG=1``, ``STATUS=…`` to the service manager."""

    def __init__(self, address: str | None, *, watchdog_usec: int | None = None) -> None:
        # a leading '@' names a Linux abstract socket
        self.address = "\0" + address[1:] if address and address.startswith("@") else address
        self.watchdog_usec = watchdog_usec

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Notifier:
        """From ``NOTIFY_SOCKET`` and ``WATCHDOG_USEC`` (ignored when meant for another pid)."""
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        mine = pid is None or pid == str(os.getpid())
        return cls(env.get("NOTIFY_SOCKET"), watchdog_usec=int(usec) if usec and mine else None)

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between pings (half of ``WatchdogSec``), or None when no watchdog is set."""
        return None if not self.watchdog_usec else self.watchdog_usec / 2e6

    def send(self, *lines: str) -> bool:
        """Send ``lines`` as one message; False when not under a service manager."""
        if not self.address:
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto("\n".join(lines).encode(), self.address)
        return True

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> bool:
        # MONOTONIC_USEC lets Type=notify-reload match this to the reload it requested
        return self.send("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")
