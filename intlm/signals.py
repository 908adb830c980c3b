"""SIGINT and SIGTERM during training: the first asks the loop to stop after its current step (it
then saves a checkpoint and exits 128 + the signal number); a second one aborts at once, and the
atomic save it interrupts leaves the previous checkpoint as it was.

A signal's exception can be raised at any bytecode, also inside a Numba call, where CPython reports
it as a SystemError caused by it: ``interruption`` finds the signal's exception behind any other."""

import os
import signal
import threading

from .errors import Stopped

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopOnSignal:
    """``with StopOnSignal() as stop:`` ... ``stop.signum`` is the first signal received, or None."""

    def __enter__(self):
        self.signum, self.previous = None, {}
        if threading.current_thread() is threading.main_thread():  # Python allows handlers only there
            self.previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def _handle(self, signum, frame):
        if self.signum is not None:
            raise Stopped(signum, None)
        self.signum = signum

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)


def interruption(err: BaseException):
    """The Stopped or KeyboardInterrupt that ``err`` is, or was raised because of (its __cause__ or
    __context__ chain), else None."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, (Stopped, KeyboardInterrupt)):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def _interrupted_while_starting(signum, frame):
    try:
        os.write(2, b"error: interrupted\n")
    finally:
        os._exit(128 + signum)


def quiet_start() -> None:
    """From the command's first import until its main() takes over (``quiet_start_ends``), a Ctrl-C ends
    the process with one line, not a KeyboardInterrupt traceback from whichever module was loading."""
    signal.signal(signal.SIGINT, _interrupted_while_starting)


def quiet_start_ends() -> None:
    if signal.getsignal(signal.SIGINT) is _interrupted_while_starting:
        signal.signal(signal.SIGINT, signal.default_int_handler)
