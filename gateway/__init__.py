"""metrogate gateway: the edge side of the pipeline, one subpackage per stage.

``config`` → ``acquisition`` (drivers, poll loop) → ``metrology`` (calibrate, judge)
→ ``delivery`` (outbox, publisher) with ``wire`` (the contract) and ``audit`` (event
log, software identity) beside them; ``ops`` observes, ``daemon`` composes, ``cli``
is the command line. ``common`` is the base shared with ``supervision``.
"""

__version__ = "0.1.0"
