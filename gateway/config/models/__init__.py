"""Models of instruments, calibrations, rules and point maps: legally relevant parameters.

Everything here decides how a number on the wire becomes a measured value, so the
whole package is covered by the software identification (``gateway.audit``).
Imports only ``gateway.common`` and ``drivers`` (codecs, data items).
"""
