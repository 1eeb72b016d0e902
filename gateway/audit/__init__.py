"""Audit: the hash-chained, signed event log, software identification, the parameter set.

What a regulator checks later: every start-up, parameter change (old and new
value), clock jump, instrument identity and tamper counter, in an append-only log
whose signed head (``events.log.counter``) shows entries cut from its end; which
legally relevant code is running; and, for ``metrogate audit reinit``, how a new
log continues a retired one. Imports ``gateway.wire`` (signing), ``gateway.config``
(to list parameters) and ``drivers.base``.
"""
