"""Atomic, content-hashed integer checkpoints stored as zarr v3 groups.

A run folder holds ``step-00000100/``, ``step-00000200/``, ... Each is written into a
``.step-*.tmp-PID`` sibling first and renamed into place, so a crash never leaves a
half-written ``step-*`` folder. Identical inputs give byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from . import memory
from .atomic import atomic_folder, clean_stale, remove_folder
from .errors import IntlmError

STEP_DIR = re.compile(r"step-(\d{8,})")
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")  # flat, portable array names
# Explicit codec settings so the bytes on disk do not depend on zarr's defaults.
COMPRESSOR = ZstdCodec(level=3, checksum=False)


@dataclass
class Checkpoint:
    arrays: dict[str, np.ndarray]
    attrs: dict  # as saved (including "step"), without content_hash
    path: Path
    step: int
    content_hash: str  # as stored, and verified
    damaged: list[str] = field(default_factory=list)  # why each newer checkpoint was passed over


def _canonical(attrs: dict) -> str:
    try:
        return json.dumps(attrs, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as err:
        raise TypeError(f"checkpoint attrs must be plain JSON: {err}") from None


def content_hash(arrays: dict[str, np.ndarray], attrs: dict) -> str:
    """sha256 over each array (sorted by name: name, dtype, shape, C-order bytes), then the attrs'
    canonical JSON."""
    return _hash(((name, arrays[name]) for name in sorted(arrays)), attrs)


def _hash(named, attrs: dict) -> str:
    """content_hash of (name, array) pairs that come in name order, one at a time (each may be
    dropped once hashed)."""
    h = hashlib.sha256()
    for name, a in named:
        a = np.asarray(a)
        shape = list(a.shape)  # before ascontiguousarray, which makes a 0-d array 1-d
        a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))  # one byte order on every machine
        h.update(f"{name}\0{a.dtype.str}\0{shape}\0".encode())
        h.update(a)  # its C-order bytes, without a copy
    h.update(_canonical(attrs).encode())
    return h.hexdigest()


def save(run_dir, step: int, arrays: dict[str, np.ndarray], attrs: dict) -> Path:
    """Write ``run_dir/step-{step:08d}`` atomically; ``attrs`` gains ``step`` (and ``content_hash`` on disk).

    An intact checkpoint of the same content already there is kept as it is (a resumed run that takes
    no step saves its step again), after reading it back to check it: a second write is only a risk."""
    run_dir = Path(run_dir)
    if attrs.get("step", step) != step:
        raise ValueError(f"attrs step {attrs['step']} differs from step {step}")
    for name, a in arrays.items():
        if not NAME.fullmatch(name) or name == "zarr.json":
            raise ValueError(f"bad checkpoint array name {name!r}")
        if not (np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_):
            raise TypeError(f"checkpoint array {name!r} has non-integer dtype {a.dtype}")
    # Store attrs in canonical (sorted) order so the metadata bytes are deterministic.
    attrs = json.loads(_canonical({**attrs, "step": step}))
    stored = {**attrs, "content_hash": content_hash(arrays, attrs)}

    final = run_dir / f"step-{step:08d}"
    if final.exists() and _intact_hash(final) == stored["content_hash"]:
        return final
    with atomic_folder(final) as tmp:
        group = zarr.open_group(tmp, mode="w", zarr_format=3)
        for name in sorted(arrays):
            a = np.asarray(arrays[name])
            arr = group.create_array(
                name,
                shape=a.shape,
                dtype=a.dtype,
                chunks=tuple(max(1, s) for s in a.shape),  # one chunk per array
                compressors=COMPRESSOR,
                fill_value=0,
                # Write all-zero chunks too: a missing chunk file then always means damage.
                config={"write_empty_chunks": True},
            )
            arr[...] = a
        group.attrs.update(stored)
    return final


def list_checkpoints(run_dir) -> list[Path]:
    """The ``step-*`` folders of a run, by step (``.tmp-*`` leftovers are ignored)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [p for p in run_dir.iterdir() if p.is_dir() and STEP_DIR.fullmatch(p.name)]
    return sorted(found, key=step_of)


def step_of(path) -> int:
    """The step a ``step-*`` checkpoint folder's name says."""
    return int(STEP_DIR.fullmatch(Path(path).name).group(1))


def prune(run_dir, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` checkpoints of a run (0: delete none), each all at once;
    returns the ones deleted."""
    gone = list_checkpoints(run_dir)[:-keep] if keep > 0 else []
    for path in gone:
        remove_folder(path)
    return gone


def refuse_inside(folder, what: str) -> None:
    """Refuse to write ``what`` (say "--out run/step-00000100") into ``folder`` when it is or is inside a
    zarr store (a checkpoint, a corpus): it would nest in, and be lost with, a folder replaced whole."""
    folder = Path(folder).absolute()
    for store in (folder, *folder.parents):
        if (store / "zarr.json").is_file():
            raise IntlmError(f"{what} is inside {store}, a checkpoint or corpus store: choose a folder outside it")


def latest(run_dir) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def _intact_hash(path: Path) -> str | None:
    try:
        return _read(path)[2]
    except IntlmError:
        return None


def load(path, keep=None) -> Checkpoint:
    """Load a checkpoint folder, or the newest intact checkpoint of a run folder, and verify its hash;
    ``keep``: a test of array names, the arrays it refuses read and hashed but not kept.

    In a run folder, damaged checkpoints newer than the one loaded are listed in ``damaged``; with
    none intact, the newest one's error is raised."""
    path = Path(path)
    if not path.exists():
        raise IntlmError(f"checkpoint path {path} does not exist")
    if not path.is_dir() or (path / "zarr.json").exists() or STEP_DIR.fullmatch(path.name):
        arrays, attrs, digest = _read(path, keep)
        return Checkpoint(arrays=arrays, attrs=attrs, path=path, step=attrs["step"], content_hash=digest)
    clean_stale(path)
    found = list_checkpoints(path)
    if not found:
        raise IntlmError(f"no checkpoints in {path}")
    damaged, first_error = [], None
    for candidate in reversed(found):
        try:
            arrays, attrs, digest = _read(candidate, keep)
        except IntlmError as err:
            damaged.append(str(err))
            first_error = first_error or err
            continue
        return Checkpoint(arrays=arrays, attrs=attrs, path=candidate, step=attrs["step"], content_hash=digest,
                          damaged=damaged)
    raise first_error


def _read(path: Path, keep=None) -> tuple[dict, dict, str]:
    """(arrays, attrs without content_hash, content_hash) of one checkpoint folder, its hash verified;
    an array is refused (one line) before it is read when it does not fit in the memory available."""
    if not (path / "zarr.json").exists():
        raise IntlmError(f"{path} is not a checkpoint (no zarr.json)")
    try:
        group = zarr.open_group(path, mode="r")
        stored = dict(group.attrs)
    except Exception as err:
        raise IntlmError(f"{path} is not a readable checkpoint: {type(err).__name__}".splitlines()[0]) from None
    expected = stored.pop("content_hash", None)
    if not isinstance(expected, str) or not isinstance(stored.get("step"), int):
        raise IntlmError(f"{path} is not an intlm checkpoint (missing content_hash or step)")
    arrays = {}

    def each():
        for name, arr in sorted(group.arrays(), key=lambda named: named[0]):
            # A missing chunk would silently read as zeros; we always write every chunk.
            if arr.nchunks_initialized != arr.nchunks:
                raise IntlmError(f"checkpoint {path} is corrupt: array {name!r} is missing data")
            memory.refuse(f"reading array {name!r} of checkpoint {path}", arr.nbytes, "it cannot be read here")
            a = np.asarray(arr[...])
            if keep is None or keep(name):
                arrays[name] = a
            yield name, a

    try:
        digest = _hash(each(), stored)
    except IntlmError:
        raise
    except Exception as err:
        raise IntlmError(f"checkpoint {path} is corrupt: cannot read its arrays ({type(err).__name__})") from None
    if digest != expected:
        raise IntlmError(f"checkpoint {path} is corrupt: content hash mismatch")
    return arrays, stored, expected
