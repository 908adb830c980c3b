"""One writer per run folder: an OS lock (``fcntl.flock``) on ``RUN/.lock``.

The kernel releases the lock when its holder exits or is killed, so a lock left by a dead process
never blocks anyone; the file only records the holder's pid, to name it in the refusal.
"""

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path

from .errors import IntlmError

LOCK_NAME = ".lock"


@contextmanager
def run_lock(run_dir):
    """Hold the lock of ``run_dir`` (which must exist) for the ``with`` block, or refuse at once."""
    fd = os.open(Path(run_dir) / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "(pid not yet written)"
            raise IntlmError(f"{run_dir} is in use by process {holder}: wait for it to end, "
                             f"or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock
