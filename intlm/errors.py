"""The exceptions the CLI turns into one clear line on stderr."""

import signal


class IntlmError(Exception):
    """A user-facing problem: bad input, bad settings, a corrupt checkpoint."""


class Stopped(Exception):
    """Training stopped by a signal: ``path`` is the checkpoint written on the way out, or None
    when a second signal abandoned that save (the previous checkpoint is then the latest)."""

    def __init__(self, signum: int, path):
        self.signum, self.path = signum, path
        name = signal.Signals(signum).name
        where = f"checkpoint saved in {path}" if path else "save abandoned, the previous checkpoint is intact"
        super().__init__(f"stopped by {name}: {where}")
