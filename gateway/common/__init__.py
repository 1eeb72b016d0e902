"""The shared base of the gateway and the platform: what both sides may import.

Located YAML loading (``FILE:LINE:COL`` problems), small config types, logging
setup, the capped jittered back-off, the ops HTTP endpoint and exit codes. It holds
no pipeline logic and imports nothing of ours outside ``gateway.common``.
"""
