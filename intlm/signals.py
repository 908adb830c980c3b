"""SIGINT and SIGTERM during training: the first asks the loop to stop after its current step (it
then saves a checkpoint and exits 128 + the signal number); a second one aborts at once, and the
atomic save it interrupts leaves the previous checkpoint as it was."""

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
