"""The wire contract: what leaves the gateway and what a receiver checks.

Readings and their wire form, batch encoding and topics, Ed25519 signing and key
files, batch verification and sequence tracking, and the JSON Schemas in
``schema/``. This package is what ``supervision`` may import of the gateway; it
imports only ``drivers.base`` (quality and reason names) and ``gateway.common``.
"""
