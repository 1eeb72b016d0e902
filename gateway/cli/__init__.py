"""The ``metrogate`` command line: the composition root (docs/cli.md).

Only this package (with the demo in it) may import across ``gateway``,
``supervision`` and ``simulators``.
"""

from gateway.cli.app import main

__all__ = ["main"]
