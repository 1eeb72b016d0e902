"""Opening the drivers of a loaded config: one per device, built by its driver kind.

Which driver a device gets, and from what, is its kind's business
(:data:`gateway.config.models.registry.KINDS`: the builder only constructs). Here drivers
are opened and kept open: the serial bus owners their devices share (one
:class:`~drivers.serial_line.SerialBus` per bus that has devices), then every
driver, all entered on one :class:`AsyncExitStack` that the caller holds for as long
as the drivers run. Each device's compiled plan is logged once as its driver opens.
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack

from drivers.base import Clock, Driver, utc_now_us
from drivers.serial_line import SerialBus
from gateway.config.loader import LoadedConfig
from gateway.config.models.registry import KINDS, BuildContext

log = logging.getLogger("metrogate.acquisition")


async def build_drivers(
    loaded: LoadedConfig,
    stack: AsyncExitStack,
    *,
    clock: Clock = utc_now_us,
    only: str | None = None,
) -> dict[str, Driver]:
    """One driver per enabled device of ``loaded`` (or just device ``only``), entered on
    ``stack`` after the bus owners it needs, so it is closed before them.

    Nothing is contacted here: TCP connections and serial ports open at the first read.
    """
    config = loaded.config
    devices = [d for d in config.devices if d.enabled and (only is None or d.id == only)]
    lines = {b.id: b for b in config.buses}
    owners: dict[str, SerialBus] = {}
    drivers: dict[str, Driver] = {}
    for dev in devices:
        kind = KINDS[dev.driver]
        if dev.id not in loaded.plans:
            raise LookupError(
                f"device {dev.id}: no compiled plan (load the config with the loader)"
            )
        plan = loaded.plans[dev.id]
        ctx: BuildContext[object] = BuildContext(plan, clock)
        if kind.serial is not None:
            line = lines[kind.serial.bus(dev)]
            if line.id not in owners:
                owners[line.id] = await stack.enter_async_context(
                    SerialBus(
                        line.settings(),
                        failures_to_quarantine=line.quarantine_after,
                        initial_backoff=line.backoff,
                        max_backoff=line.max_backoff,
                    )
                )
            ctx = BuildContext(plan, clock, owners[line.id], line)
        driver = await stack.enter_async_context(kind.build(dev, ctx))
        drivers[dev.id] = driver
        described = kind.describe(dev, plan)
        log.info(
            "device %s (%s, %s): %d request(s) per poll, every %gs",
            dev.id,
            dev.driver,
            driver.endpoint,
            len(described),
            dev.poll,
        )
        for text in described:
            log.debug("device %s: %s", dev.id, text)
    return drivers
