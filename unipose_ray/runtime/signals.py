"""Ctrl+C stays the job's own around Ray's ``fit()`` calls.

Called in the main thread, Ray Train's ``fit()`` and Ray Tune's ``Tuner.fit()`` install
SIGINT handlers and leave them installed when they return: Train's a closure over the
finished run's controller (which keeps that actor alive, and turns the next Ctrl+C into an
abort request to it; the third exits with code 0), Tune's one that only flags its finished
experiment (SIGUSR1 too). A job that evaluates or trains on afterwards would ignore Ctrl+C.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def handlers_restored(*signals: signal.Signals) -> Iterator[None]:
    """The handlers of ``signals`` as they were before the block, whatever it installed
    (only the main thread can have handlers; elsewhere this does nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {s: signal.getsignal(s) for s in signals}
    try:
        yield
    finally:
        for s, handler in before.items():
            if handler is not None:  # None: installed outside Python; left as it is
                signal.signal(s, handler)
