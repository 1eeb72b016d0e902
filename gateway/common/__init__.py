"""The shared base of the gateway and the platform: what both sides may import.

Located YAML loading (``FILE:LINE:COL`` problems), small config types and bases,
logging setup, the ops HTTP endpoint and exit codes. It holds no pipeline logic and
imports nothing of ours outside ``gateway.common``. (The one back-off policy lives a
layer lower still, in :mod:`drivers.backoff`, so that drivers can use it too.)
"""
