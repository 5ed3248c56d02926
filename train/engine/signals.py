"""SIGTERM, how schedulers end jobs, handled like Ctrl-C: ``Terminated`` (a KeyboardInterrupt) is raised where the
program is, so the run is closed KILLED and the process exits with 143.

Python cannot raise from everywhere: a signal that lands while it runs a garbage-collection callback (a weakref
finaliser, such as SQLAlchemy's) has its exception printed as "Exception ignored" and dropped, and the job would
train on. So the handler also notes the signal, and the training loop asks ``raise_if_terminated`` at every step:
a SIGTERM is never lost, at most one step late.
"""
from __future__ import annotations

import signal

from train.errors import Terminated

_received: int | None = None  # the signal, once one arrived


def raise_on_sigterm() -> None:
    def handler(signum, frame):
        global _received
        _received = signum
        raise Terminated(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


def raise_if_terminated() -> None:
    """Raise the SIGTERM the handler's own raise may have lost."""
    if _received is not None:
        raise Terminated(f"signal {_received}")
