"""Simulated instruments that speak the real protocols over real sockets.

They are built from the same point definitions the gateway reads with
(:class:`drivers.modbus_codec.PointSpec`), produce values from small deterministic
generators (:mod:`simulators.values`) and inject faults on request, so drivers,
the gateway and benchmarks can run without hardware. This package imports nothing
of metrogate but the register codec.
"""
