"""Exit codes of every ``metrogate`` command (docs/cli.md), defined once.

``OK`` (0) the command did what was asked; ``FAILED`` (1) it ran and found a failure
(a bad reading, a corrupt or forged capture, an unhealthy or unreachable gateway or
broker); ``INVALID`` (2) the configuration or the usage is wrong, so nothing was
started (argparse exits with 2 on usage errors too); ``INTERRUPTED`` (130, the
shell's 128 + SIGINT) a Ctrl-C arrived before the command could stop cleanly.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["ExitCode"]


class ExitCode(IntEnum):
    """The process exit status of a command; an ``int``, so ``sys.exit`` takes it."""

    OK = 0
    FAILED = 1
    INVALID = 2
    INTERRUPTED = 130
