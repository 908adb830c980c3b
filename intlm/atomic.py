"""Write a folder all at once: build it under a temporary sibling name, then rename it into place.

A crash leaves at most a hidden ``.NAME.tmp-PID`` folder behind, never a half-written NAME.
"""

import os
import shutil
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_folder(final):
    """Yield a fresh temporary folder path; on a clean exit it replaces ``final`` by one rename."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
