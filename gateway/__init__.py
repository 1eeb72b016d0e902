"""metrogate gateway: configuration, reading model, metrology, outbox, publisher, CLI."""

__version__ = "0.1.0"
