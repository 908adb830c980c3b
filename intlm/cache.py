"""The corpus cache (data.cache_dir_default: $INTLM_CACHE, else ~/.cache/intlm), seen and freed
by ``intlm cache list`` and ``intlm cache clear``: the default corpus (shakespeare.zarr) and the
stores of text files and folders prepared on the fly (corpus-<hash>.zarr), which nothing else
ever deletes."""

import json
import os
from pathlib import Path

from .atomic import remove_folder

DEFAULT_STORE = "shakespeare.zarr"


def size_on_disk(path: Path) -> int:
    """Bytes of a file, or of every file under a folder."""
    if not path.is_dir():
        return path.stat().st_size
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names)


def what(path: Path) -> str:
    """What a cache entry holds: the default corpus, or the text its store was prepared from."""
    if path.name == DEFAULT_STORE:
        return "the default corpus (Shakespeare's plays)"
    try:
        sources = sorted({s["path"] for s in json.loads((path / "zarr.json").read_text())["attributes"]["sources"]})
    except (OSError, ValueError, KeyError, TypeError):
        return "not a corpus store (a leftover)"
    if len(sources) == 1:
        return sources[0]
    return f"{os.path.commonpath(sources)} ({len(sources)} files)"


def human(size: float) -> str:
    """Bytes as a person reads them: 512 B, 84.6 kB, 2.0 MB."""
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000


def entries(cache_dir) -> list:
    """(path, bytes on disk, what it holds) of everything in the cache, by name; not the hidden
    folders of a store being written (atomic.clean_stale removes those a dead process left)."""
    cache_dir = Path(cache_dir)
    found = sorted(p for p in cache_dir.iterdir() if not p.name.startswith(".")) if cache_dir.is_dir() else []
    return [(p, size_on_disk(p), what(p)) for p in found]


def clear(cache_dir, everything=False) -> tuple:
    """Delete what the cache holds, the default corpus only when ``everything`` (it is downloaded
    again when next needed); returns (entries deleted, bytes freed)."""
    gone = [(p, size) for p, size, _ in entries(cache_dir) if everything or p.name != DEFAULT_STORE]
    for path, _ in gone:
        if path.is_dir():
            remove_folder(path)
        else:
            path.unlink()
    return len(gone), sum(size for _, size in gone)
