"""Crash-test producer for the sequence reservation: an event log as the outbox's
sequence store, and puts until it is killed.

Usage: ``python seq_crash_child.py STATE_DIR KEY_FILE MARGIN``

After each ``put()`` has returned it prints ``<seq>`` on its own line and flushes, so
every line the parent reads names a number the outbox has used. It stops by itself
after a bounded number of puts or seconds.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from gateway.audit.eventlog import EventLog
from gateway.delivery.outbox import Outbox
from gateway.wire.keys import load_signer

MAX_PUTS = 100_000
MAX_SECONDS = 60.0


def seal(kind: str, seq: int, sealed_us: int, records: list[dict[str, Any]]) -> bytes:
    body = {"v": 1, "type": kind, "seq": seq, "sealed": sealed_us, "readings": records}
    return json.dumps(body, separators=(",", ":")).encode()


def main(argv: list[str]) -> int:
    state, key, margin = Path(argv[1]), Path(argv[2]), int(argv[3])
    deadline = time.monotonic() + MAX_SECONDS
    signer = load_signer(key)
    with (
        EventLog(state / "events.log", signer, software_id="child") as log,
        Outbox(
            state / "outbox.db", seal=seal, max_bytes=1 << 30, seq_store=log, seq_margin=margin
        ) as outbox,
    ):
        for i in range(MAX_PUTS):
            if time.monotonic() > deadline:
                break
            for seq in outbox.put("data", [{"device": "d1", "point": "p", "value": i}]):
                sys.stdout.write(f"{seq}\n")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
