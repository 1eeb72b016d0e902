"""Models of instruments, calibrations, rules and point maps, and the driver registry.

Everything here decides how a number on the wire becomes a measured value — which
driver reads which device, with which plan, and how its points are decoded and
corrected — so the whole package is covered by the software identification
(``gateway.audit.software_id``). ``registry`` is the one table of driver kinds
(docs/architecture.md). Imports only ``gateway.common``, ``gateway.wire`` and ``drivers``.
"""
