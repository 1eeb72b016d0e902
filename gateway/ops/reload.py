"""Configuration reload on SIGHUP: validate first, and keep running on a bad file.

:func:`reload_config` re-reads the file the gateway was started with through the
same loader as ``metrogate check`` and start-up: in a short-lived child process
(:func:`gateway.config.loader.load_config_compact`, which also computes the audit
trail's parameter set there), waited for from a worker thread — parsing a
5,000-point file takes seconds, and the event loop must not stop for them. A
file with problems is refused: every problem
is logged, a ``config_reload_refused`` event is recorded in the audit trail, and
:class:`ReloadRefused` is raised so the caller keeps the running configuration. A
valid file is returned (with a ``config_reloaded`` event) for the runtime to apply
by restarting its device tasks; sections a device restart cannot apply (gateway
identity, MQTT, outbox, signing) are named in :attr:`Reloaded.restart_required`.

:func:`watch_sighup` is the long-lived task that ties this to the signal.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.audit.parameters import parameters_json
from gateway.config.loader import ConfigError, LoadedConfig, load_config_compact
from gateway.ops.sdnotify import Notifier

__all__ = [
    "LOAD_TIMEOUT_S",
    "RESTART_SECTIONS",
    "ReloadRefused",
    "Reloaded",
    "load_for_reload",
    "reload_config",
    "watch_sighup",
]

log = logging.getLogger("metrogate.reload")

RecordEvent = Callable[[str, dict[str, Any]], object]

RESTART_SECTIONS = ("gateway", "mqtt", "outbox", "signing")
"""Sections whose change needs a process restart, not only new device tasks."""

LOAD_TIMEOUT_S = 300.0
"""Longest a reload may take to load the file (a big site on a slow board: well under)."""


RELOAD_NICE = 10
"""How much lower the loading child's CPU priority is than the daemon's."""


def load_for_reload(path: Path) -> LoadedConfig:
    """How a reload loads: as start-up does, in a child, parameter set included."""
    return load_config_compact(
        path, parameters=parameters_json, timeout=LOAD_TIMEOUT_S, nice=RELOAD_NICE
    )


class ReloadRefused(Exception):
    """The new configuration is invalid; the running one stays. ``problems`` as ``check`` prints."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        super().__init__(f"{path}: {len(problems)} problem(s); running configuration kept")
        self.path = path
        self.problems = problems


@dataclass(frozen=True, slots=True)
class Reloaded:
    """A valid configuration read again."""

    loaded: LoadedConfig
    changed: bool
    restart_required: tuple[str, ...]


async def reload_config(
    current: LoadedConfig,
    record_event: RecordEvent,
    *,
    load: Callable[[Path], LoadedConfig] = load_for_reload,
) -> Reloaded:
    """Re-load ``current.path``; :class:`ReloadRefused` (logged and recorded) when invalid.

    ``load`` runs in a worker thread; everything else (logging, ``record_event``)
    here, on the event loop.
    """
    path = current.path
    try:
        new = await asyncio.to_thread(load, path)
    except ConfigError as exc:
        problems = [str(p) for p in exc.problems]
        for problem in problems:
            log.error("reload refused: %s", problem)
        log.error("%s: %d problem(s); keeping the running configuration", path, len(problems))
        record_event(
            "config_reload_refused",
            {"path": str(path), "sha256": current.sha256, "problems": problems},
        )
        raise ReloadRefused(path, problems) from None
    except OSError as exc:  # TimeoutError too: the loading child was killed
        timed_out = isinstance(exc, TimeoutError)
        problems = [str(exc) if timed_out else f"{path}: cannot read: {exc.strerror or exc}"]
        log.error("reload refused: %s; keeping the running configuration", problems[0])
        record_event(
            "config_reload_refused",
            {"path": str(path), "sha256": current.sha256, "problems": problems},
        )
        raise ReloadRefused(path, problems) from None
    for warning in new.warnings:
        log.warning("%s", warning)
    old_cfg, new_cfg = current.config, new.config
    restart = tuple(
        s
        for s in RESTART_SECTIONS
        if getattr(old_cfg, s).model_dump(mode="json")
        != getattr(new_cfg, s).model_dump(mode="json")
    )
    changed = new.sha256 != current.sha256
    if changed:
        log.info("configuration reloaded: %s sha256 %s", path, new.sha256[:16])
        if restart:
            log.warning("changes to %s take effect at the next restart", ", ".join(restart))
        record_event(
            "config_reloaded",
            {
                "path": str(path),
                "sha256": new.sha256,
                "previous_sha256": current.sha256,
                "restart_required": list(restart),
            },
        )
    else:
        log.info("configuration unchanged (%s)", new.sha256[:16])
    return Reloaded(new, changed, restart)


async def watch_sighup(
    current: Callable[[], LoadedConfig],
    record_event: RecordEvent,
    apply: Callable[[Reloaded], Awaitable[None]],
    *,
    notifier: Notifier | None = None,
) -> None:
    """Until cancelled: on each SIGHUP reload, and ``apply`` a valid, changed configuration.

    Signals arriving during a reload coalesce into one more reload afterwards. A
    reload that fails in any way (an event that cannot be recorded, a failing
    ``apply``) is logged with its traceback and leaves the running configuration:
    this task runs beside every device and must not end.
    """
    loop = asyncio.get_running_loop()
    hup = asyncio.Event()
    loop.add_signal_handler(signal.SIGHUP, hup.set)
    try:
        while True:
            await hup.wait()  # unbounded on purpose: waits for an operator
            hup.clear()
            if notifier is not None:
                notifier.reloading()
            try:
                result = await reload_config(current(), record_event)
                if result.changed:
                    await apply(result)
            except ReloadRefused:
                pass  # logged and recorded; the running configuration stays
            except Exception as exc:  # (the audit trail not writable, ...): never the end
                log.error("reload failed: %s; keeping the running configuration", exc, exc_info=exc)
            finally:
                if notifier is not None:
                    notifier.ready()
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
