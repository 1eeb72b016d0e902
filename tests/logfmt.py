"""Read back the logfmt lines of :class:`gateway.common.logs.KeyValueFormatter`."""

from __future__ import annotations

import json
import re

_PAIR = re.compile(r'(?P<key>[^\s=]+)=(?P<value>"(?:[^"\\]|\\.)*"|[^\s"]*)')


def parse_logfmt(line: str) -> dict[str, str]:
    """The ``key=value`` pairs of one line; quoted values are JSON strings, unquoted plain."""
    out: dict[str, str] = {}
    for m in _PAIR.finditer(line):
        value = m["value"]
        out[m["key"]] = json.loads(value) if value.startswith('"') else value
    return out
