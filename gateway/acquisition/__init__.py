"""Acquisition: where a reading is acquired — drivers built from the registry, the poll loop.

``registry`` is the one table of driver kinds; ``build`` opens the drivers of a
config (sharing serial bus owners); ``poller`` runs one device's fixed-rate loop and
hands readings to metrology and the outbox; ``clock`` watches time synchronisation.
May import ``drivers``, ``gateway.common``, ``gateway.config``, ``gateway.metrology``
and ``gateway.wire``; never ``gateway.delivery`` (the poller only calls an ``emit``
function it is given).
"""
