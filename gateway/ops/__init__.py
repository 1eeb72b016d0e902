"""Operations: Prometheus metrics, the health endpoint, systemd notify and watchdog,
configuration reload on SIGHUP, and structured logging (docs/operations.md).

Import the submodules directly (``gateway.ops.health``, ``gateway.ops.watchdog``…):
this package imports nothing, so ``metrogate status`` stays quick to start.
"""
