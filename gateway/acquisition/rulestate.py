"""Where each device's rule and alarm state survives a restart: one small JSON file each.

Written atomically (temporary file, then rename) when an alarm changes state and
once a minute, read once when the device task is built. An unreadable file is
logged and the device starts with fresh rule state; it never stops the gateway.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from gateway.metrology.pipeline import DeviceMetrology

log = logging.getLogger("metrogate.runtime")


class RuleStore:
    """Rule state files under ``directory`` (``{device}.json``)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def restore(self, metro: DeviceMetrology) -> None:
        """Load ``metro``'s saved state, if any; a broken file is logged and ignored."""
        saved = self.directory / f"{metro.device}.json"
        if not saved.exists():
            return
        try:
            metro.load_state(json.loads(saved.read_text()))
        except (ValueError, KeyError, TypeError) as exc:
            log.error("rule state of %s unreadable (%s); starting fresh", metro.device, exc)

    def save(self, metro: DeviceMetrology) -> None:
        """Write ``metro``'s state atomically."""
        self.directory.mkdir(exist_ok=True)
        tmp = self.directory / f"{metro.device}.json.tmp"
        tmp.write_text(json.dumps(metro.to_state()))
        os.replace(tmp, self.directory / f"{metro.device}.json")
