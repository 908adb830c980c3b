"""One writer per run folder: an OS lock (``fcntl.flock``) on ``RUN/.lock``, tied to the folder itself.

The kernel releases the lock when its holder exits or is killed, so a lock left by a dead process
never blocks anyone; the file records the holder's pid (to name it in the refusal) and an id of this
run. A lock guards a file, not a path: when RUN is removed or replaced while a run trains, the next
run to start there locks a new file and would share the path. So the holder checks, before every
save and log write (``Held.check``), that RUN is still the folder it locked (its device and inode)
and that RUN/.lock is still its file with its id; if not, it stops with one line and writes nothing
more (a save would recreate the folder, or land in the other run's).
"""

import fcntl
import os
import secrets
from contextlib import contextmanager
from pathlib import Path

from .errors import IntlmError

LOCK_NAME = ".lock"


class Held:
    """The lock of a run folder, held: ``check()`` before writing to the folder."""

    def __init__(self, run_dir: Path, fd: int):
        self.run_dir, self.fd = run_dir, fd
        self.stamp = f"{os.getpid()} {secrets.token_hex(8)}\n".encode()  # pid first: the refusal names it
        os.ftruncate(fd, 0)
        os.pwrite(fd, self.stamp, 0)
        self.folder = _identity(os.stat(run_dir))

    def check(self) -> None:
        """Raise IntlmError when the folder was removed or replaced since the lock was taken."""
        try:
            same = (_identity(os.stat(self.run_dir)) == self.folder
                    and _identity(os.stat(self.run_dir / LOCK_NAME)) == _identity(os.fstat(self.fd))
                    and os.pread(self.fd, len(self.stamp) + 1, 0) == self.stamp)
        except FileNotFoundError:
            same = False
        if not same:
            raise IntlmError(f"{self.run_dir} was removed or replaced while this run trained: stopped without "
                             f"writing to it again (what it saved went with the old folder)")


def _identity(st) -> tuple:
    return st.st_dev, st.st_ino


@contextmanager
def run_lock(run_dir):
    """Hold the lock of ``run_dir`` (which must exist) for the ``with`` block as a Held, or refuse at once."""
    run_dir = Path(run_dir)
    fd = os.open(run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            stamp = os.pread(fd, 64, 0).decode(errors="replace").split()
            holder = stamp[0] if stamp else "(pid not yet written)"
            raise IntlmError(f"{run_dir} is in use by process {holder}: wait for it to end, "
                             f"or choose another --out") from None
        yield Held(run_dir, fd)
    finally:
        os.close(fd)  # closing releases the lock
