"""Acquisition: where a reading is acquired — drivers built from the registry, the poll loop.

``build`` opens the drivers of a loaded config, each built by its kind in
:mod:`gateway.config.models.registry`, serial devices sharing one bus owner per line;
``poller`` runs one device's fixed-rate loop and hands readings to metrology and
the outbox; ``clock`` watches time synchronisation. May import ``drivers``,
``gateway.common``, ``gateway.config``, ``gateway.metrology`` and ``gateway.wire``;
never ``gateway.delivery`` (the poller only calls an ``emit`` function it is given).
"""
