"""Audit: the hash-chained, signed event log, software identification, the parameter set.

What a regulator checks later: every start-up, parameter change (old and new
value), clock jump, instrument identity and tamper counter, in an append-only log;
and which legally relevant code is running. Imports ``gateway.wire`` (signing),
``gateway.config`` (to list parameters) and ``drivers.base``.
"""
