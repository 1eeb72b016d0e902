"""Loading a config for a command: every problem printed, located, before anything starts."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from gateway.config.loader import ConfigError, LoadedConfig, load_config, load_config_compact
from gateway.config.schema import Config

__all__ = ["load_reported"]


def load_reported(
    path: Path,
    *,
    compact: bool = False,
    parameters: Callable[[Config], bytes] | None = None,
) -> LoadedConfig | None:
    """The loaded config, or None after printing every problem to stderr (and the line
    ``FILE: N problem(s); nothing started``); warnings are printed either way."""
    try:
        loaded = load_config_compact(path, parameters=parameters) if compact else load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{path}: {len(exc.problems)} problem(s); nothing started", file=sys.stderr)
        return None
    for warning in loaded.warnings:
        print(warning, file=sys.stderr)
    return loaded
