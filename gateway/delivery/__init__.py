"""Delivery: a sealed batch is stored and sent — the durable outbox and the MQTT publisher.

The outbox is the only link between device tasks and the publisher: batches are
sealed (numbered, encoded, signed) on ``put`` and deleted only after the broker's
PUBACK. Imports ``gateway.wire``, ``gateway.common``, ``gateway.config`` (sections)
and ``drivers.base``.
"""
