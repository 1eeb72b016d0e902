"""Delivery: a sealed batch is stored and sent — the durable outbox and the MQTT publisher.

The outbox is the only link between device tasks and the publisher: batches are
sealed (numbered, encoded, signed) on ``put`` and deleted only after the broker's
PUBACK with a success code; a refused one stays. The outbox reserves its sequence
numbers in the event log's signed head, and :mod:`gateway.delivery.events` seals
event-log entries into it as they become durable (logged means published). Imports
``gateway.audit``, ``gateway.wire``, ``gateway.common``, ``gateway.config``
(sections) and ``drivers.base``.
"""
