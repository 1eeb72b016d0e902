"""Reloads do not keep the replaced devices and configurations alive.

After start-up and after each reload the daemon exempts what then lives from the
garbage collector's full collections (``gc.freeze``); anything replaced must
still be freed, or every reload would leak a configuration and its devices.
"""

from __future__ import annotations

import asyncio
import functools
import weakref
from pathlib import Path

from gateway.daemon import Gateway
from gateway.ops.reload import reload_config
from tests.eventually import eventually
from tests.integration.gwtest import synced_clock
from tests.unit.ops_support import one_device_config


def reloaded(gw: Gateway, poll: float) -> bool:
    return bool(gw.pollers) and all(p.device.poll == poll for p in gw.pollers.values())


async def test_replaced_devices_and_configurations_are_freed(tmp_path: Path) -> None:
    # nothing listens: every poll fails (exceptions and tracebacks are made each poll)
    loaded = one_device_config(tmp_path, devices=3, extra="mqtt: {url: 'mqtt://127.0.0.1:1'}\n")
    gw = Gateway(loaded, clock_monitor=synced_clock())
    path = loaded.path
    del loaded  # the gateway holds the configuration it runs, and nothing else does
    stop = asyncio.Event()
    task = asyncio.create_task(gw.run(stop), name="gateway-under-test")
    replaced: list[weakref.ref[object]] = []
    try:
        async with asyncio.timeout(10):
            await gw.ready.wait()
        for k in range(1, 6):
            await eventually(lambda: all(p.health.polls for p in gw.pollers.values()), "polls")
            replaced += [weakref.ref(p) for p in gw.pollers.values()]
            replaced += [weakref.ref(m) for m in gw.metrology.values()]
            replaced.append(weakref.ref(gw.loaded.config))
            path.write_text(path.read_text().replace(f"poll: {k}s", f"poll: {k + 1}s"))
            await gw._apply_reload(await reload_config(gw.loaded, gw.record_event))
            await eventually(functools.partial(reloaded, gw, k + 1), "the new devices")
        # every generation but the last is gone, except the start-up configuration: the
        # sections only a restart changes (gateway, mqtt, outbox, signing) run from it
        alive = [i for i, r in enumerate(replaced[:-7]) if r() is not None]
        assert alive == [6], f"replaced objects still alive: {alive}"
    finally:
        stop.set()
        async with asyncio.timeout(10):
            await task
