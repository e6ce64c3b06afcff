"""Ctrl-C and SIGTERM as an exception, held back while a file and its record change together.

The CLI installs :func:`interrupt` for both signals: Python runs it between two bytecodes
of the main thread, so an ``Interrupted`` can surface anywhere, for instance after a zoom
frame's rename and before the count that zoom.json reports. Inside :func:`held` the handler
only notes the signal, and the block's end raises it.
"""

from __future__ import annotations

import contextlib
import signal
import threading


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM: raised where Python is, so that every ``finally`` runs."""

    def __init__(self, signum=signal.SIGINT):
        super().__init__(signum)
        self.signum = signum


_holding = 0  # how many held() blocks are open
_pending = []  # the signal heard inside them, if any


def interrupt(signum, frame):
    if _holding:
        _pending[:] = _pending or [signum]
        return
    _pending.clear()  # one held, then this one as its block ended: this one says it for both
    raise Interrupted(signum)


@contextlib.contextmanager
def held():
    """Let the block finish before an interrupt; raise it as the block ends."""
    global _holding
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach the main thread only; another's block must not hold them
        return
    _holding += 1
    try:
        yield
    finally:
        _holding -= 1
        if not _holding and _pending:
            signum = _pending.pop()
            raise Interrupted(signum)
