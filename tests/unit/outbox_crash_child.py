"""Crash-test producer for the outbox: puts batches until it is killed.

Usage: ``python outbox_crash_child.py PATH DURABILITY MAX_BYTES``

Each put is one batch of 1-5 records. After ``put()`` has returned, the child prints
``<seq> <records>`` on its own line and flushes, so every line the parent reads names
a batch the outbox has promised to keep. It stops by itself after a bounded number
of puts or seconds, so a parent that fails to kill it does not leave it running.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Literal

from gateway.delivery.outbox import Outbox

MAX_PUTS = 200_000
MAX_SECONDS = 60.0


def seal(kind: str, seq: int, sealed_us: int, records: list[dict[str, Any]]) -> bytes:
    body = {"v": 1, "type": kind, "seq": seq, "sealed": sealed_us, "readings": records}
    return json.dumps(body, separators=(",", ":")).encode()


def main(argv: list[str]) -> int:
    path, durability_arg, max_bytes = Path(argv[1]), argv[2], int(argv[3])
    durability: Literal["process", "power"] = "power" if durability_arg == "power" else "process"
    deadline = time.monotonic() + MAX_SECONDS
    with Outbox(path, seal=seal, max_bytes=max_bytes, durability=durability) as outbox:
        for i in range(MAX_PUTS):
            if time.monotonic() > deadline:
                break
            n = 1 + i % 5
            records = [
                {"ts": 1_795_847_523_000_000 + i, "device": "d1", "point": f"p{j}", "value": i}
                for j in range(n)
            ]
            for seq in outbox.put("data", records):
                sys.stdout.write(f"{seq} {n}\n")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
