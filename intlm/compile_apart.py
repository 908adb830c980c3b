"""A run's Numba kernels compiled in a child process, the first time, so the compiler's memory ends
with the child: LLVM keeps what it built for every kernel a process compiled (about 240 MB for the
default model's), but nothing of kernels loaded from Numba's cache. Measured on an AMD EPYC Zen 3
(2 cores, nothing else running; commands in scripts/memory/README.md): the default run's process
peaks at 1,086,784 kB (VmHWM, kB of 1024 bytes) when it compiles its kernels and at 811,548 kB when a
child compiles them.

The child warms up a throwaway run of the same config on a few bytes of its own (train.warm_up_alone),
which fills Numba's cache; the run then warms up as every later run does, from the cache. Where the child
fails, or leaves a kernel out (another task's kernels, a corpus of other types), the run compiles what
is missing itself, as it always could.
"""

import contextlib
import subprocess
import sys

# the peak of a process compiling the default model's kernels (measured, Zen 3: 530 MiB): a run that
# needs less than this gains nothing from a second process, whose peak would be the higher one
COMPILING_BYTES = 530 << 20


class Uncompiled(Exception):
    """A kernel was about to be compiled in this process."""


@contextlib.contextmanager
def refusing():
    """Raise Uncompiled where Numba would start compiling a kernel (loading one from its cache is not
    compiling), before any compiler work."""
    from numba.core import event

    class Refuse(event.Listener):
        def on_start(self, ev):
            raise Uncompiled

        def on_end(self, ev):
            pass

    with event.install_listener("numba:compile", Refuse()):
        yield


def in_child(function: str, argument: str, timeout: float = 3600.0) -> bool:
    """Call ``function`` ("module:name") with ``argument`` in a child Python (Numba's cache is the
    parent's: same environment); True when it ended well. Its output is dropped: a failure shows again
    when the parent compiles."""
    call = "import importlib, sys; m, f = sys.argv[1].split(':'); getattr(importlib.import_module(m), f)(sys.argv[2])"
    try:
        done = subprocess.run([sys.executable, "-c", call, function, argument], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def warm_up(throwaway, function: str, argument: str) -> None:
    """Call ``throwaway`` (a warm-up, which calls the kernels); where it would compile one, first let
    ``in_child(function, argument)`` compile them, then call it again."""
    try:
        with refusing():
            return throwaway()
    except Uncompiled:
        in_child(function, argument)
    throwaway()
