"""The compressor lines a trained model is held to: each compressor on the validation bytes alone,
and given the training split first.

A model that trained on the training split should be compared with a compressor that has read it
too: the bits of compress(train + validation) minus the bits of compress(train), over the validation
bytes (every output byte counted, headers too). The compressors: xz -9e (Python's lzma, .xz,
preset 9 | PRESET_EXTREME), bzip2 -9 (Python's bz2; its 900 kB blocks see little of the training
split, so its two lines are close), and PPMd order 8 with 256 MB (pyppmd's variant I, the optional
extra ``intlm[ppmd]``; left out when it is not installed). Floats here are figures for people, never
part of training.

Compressing a corpus of a few MB takes tens of seconds (xz -9e most of it), so ``cached_lines``
keeps the figures in a JSON file beside the corpus store, keyed by the splits' fingerprints, and a
corpus's lines are computed once.
"""

import bz2
import hashlib
import json
import lzma
from pathlib import Path

import numpy as np

from .atomic import atomic_file

CACHE_VERSION = 1
TRAIN_MAX = 64 << 20  # a larger training split is not compressed (minutes of xz -9e): no lines


def xz(data: bytes) -> int:
    return len(lzma.compress(data, format=lzma.FORMAT_XZ, preset=9 | lzma.PRESET_EXTREME))


def bzip2(data: bytes) -> int:
    return len(bz2.compress(data, compresslevel=9))


def ppmd(data: bytes) -> int:
    import pyppmd

    encoder = pyppmd.Ppmd8Encoder(8, 256 << 20)
    return len(encoder.encode(data) + encoder.flush())


def compressors() -> dict:
    """Name -> compressed size function, PPMd only where pyppmd is installed."""
    out = {"xz -9e": xz, "bzip2 -9": bzip2}
    try:
        import pyppmd  # noqa: F401
    except ImportError:
        return out
    out["PPMd order 8"] = ppmd
    return out


def lines(train: bytes, val: bytes) -> dict:
    """{compressor: (bits/byte of ``val`` alone, bits/byte of ``val`` given ``train`` first)}."""
    out = {}
    for name, size in compressors().items():
        alone = 8 * size(val) / len(val)
        given = 8 * (size(train + val) - size(train)) / len(val)
        out[name] = (round(alone, 4), round(given, 4))
    return out


def cached_lines(corpus, announce=None) -> dict:
    """``lines`` of a corpus's splits, from the JSON file beside its store when it holds them for
    these bytes and these compressors, else computed (``announce``, a callable, is told first) and
    written there (when the folder is writable). {} when the training split is over TRAIN_MAX."""
    if len(corpus.train) > TRAIN_MAX or len(corpus.val) == 0:
        return {}
    train = np.ascontiguousarray(corpus.train[:], dtype=np.uint8).tobytes()
    val = np.ascontiguousarray(corpus.val[:], dtype=np.uint8).tobytes()
    key = {"version": CACHE_VERSION, "compressors": sorted(compressors()),
           "train": hashlib.sha256(train).hexdigest()[:16], "val": hashlib.sha256(val).hexdigest()[:16]}
    cache = Path(str(corpus.path) + ".compressors.json") if corpus.path else None
    if cache is not None:
        try:
            held = json.loads(cache.read_text())
            if held.get("key") == key:
                return {name: tuple(v) for name, v in held["lines"].items()}
        except (OSError, ValueError, AttributeError, KeyError, TypeError):
            pass  # missing or damaged: computed again
    if announce:
        announce()
    out = lines(train, val)
    if cache is not None:
        try:
            atomic_file(cache, (json.dumps({"key": key, "lines": out}, indent=1) + "\n").encode())
        except OSError:
            pass  # a read-only place: computed again next time
    return out


def fair_lines(corpus, announce=None) -> dict:
    """The lines a plot draws: each compressor given the training split (``cached_lines``), by
    name ("xz -9e given train")."""
    return {f"{name} given train": fair for name, (_, fair) in cached_lines(corpus, announce).items()}
