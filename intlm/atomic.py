"""Write a folder or file all at once: build it under a temporary sibling name, then rename it into place
(and delete a folder all at once: rename it aside, then delete it).

A crash leaves at most a hidden ``.NAME.tmp-PID`` (a half-built replacement, or a folder half deleted) or
``.NAME.old-PID`` folder (the previous NAME, moved aside for the instant of the swap) behind, never
a half-written or half-deleted NAME. ``clean_stale`` removes the first kind and puts the second
back when NAME is missing, for processes that are no longer alive.
"""

import os
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

LEFTOVER = re.compile(r"\.(.+)\.(tmp|old)-(\d+)")


def _fsync(path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    """Flush every file, then every folder, so a power cut cannot leave a renamed but empty folder.
    The fsyncs run concurrently: a journaling file system then commits them together (on ext4 a
    checkpoint's 40 files took 0.27 s one after another, a few ms this way)."""
    files, folders = [], []
    for root, _, names in os.walk(folder):
        files += [os.path.join(root, name) for name in names]
        folders.append(root)
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(_fsync, files))
        list(pool.map(_fsync, folders))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def clean_stale(parent, name=None) -> None:
    """Remove the leftovers of dead processes in ``parent`` (only those of ``name``, when given); an
    ``.old`` folder whose NAME is missing is the last good copy and is renamed back instead."""
    parent = Path(parent)
    if not parent.is_dir():
        return
    for path in parent.iterdir():
        m = LEFTOVER.fullmatch(path.name)
        if not m or (name is not None and m.group(1) != name) or _alive(int(m.group(3))):
            continue
        _settle(path, parent / m.group(1))


def _settle(leftover: Path, final: Path) -> None:
    """Put an ``.old`` leftover back when ``final`` is missing; otherwise delete the leftover."""
    if leftover.name.startswith(f".{final.name}.old-") and leftover.exists() and not final.exists():
        os.replace(leftover, final)
        _fsync(final.parent)
    elif leftover.is_dir():
        shutil.rmtree(leftover, ignore_errors=True)
    else:
        leftover.unlink(missing_ok=True)


@contextmanager
def atomic_folder(final):
    """Yield a fresh temporary folder path; on a clean exit it replaces ``final`` by one rename.

    An existing ``final`` is renamed aside, not deleted, until the new one is in place, and is put
    back if anything (a signal included) stops the swap half-way.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(final.parent, final.name)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    aside = final.parent / f".{final.name}.old-{os.getpid()}"
    for leftover in (aside, tmp):  # this process's own, from a swap that failed earlier
        _settle(leftover, final)
    try:
        yield tmp
        _fsync_tree(tmp)
        if final.exists():
            os.replace(final, aside)
        os.replace(tmp, final)
        _fsync(final.parent)
    finally:
        for leftover in (aside, tmp):
            _settle(leftover, final)


def atomic_file(final, data: bytes) -> None:
    """Replace the file ``final`` by ``data`` in one rename, flushed to disk before and after."""
    final = Path(final)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        _fsync(final.parent)
    finally:
        tmp.unlink(missing_ok=True)


def remove_folder(folder) -> None:
    """Delete ``folder`` all at once: it is renamed to a hidden ``.NAME.tmp-PID`` first, which
    clean_stale removes should this process die before the deletion is done."""
    folder = Path(folder)
    aside = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    os.replace(folder, aside)
    _fsync(folder.parent)
    shutil.rmtree(aside, ignore_errors=True)
