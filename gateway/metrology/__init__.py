"""Metrology: a reading is calibrated and judged — pure, synchronous functions.

Calibration and uncertainty (GUM), conformity decisions, limit/rate/stuck/stale
rules, SPC and ISA-18.2 alarms, and the per-device ``pipeline`` that applies them
in order. No I/O, no asyncio, no clock of its own (time is passed in). Imports only
``gateway.config.models``, ``gateway.wire.reading`` and ``drivers.base``.
"""
