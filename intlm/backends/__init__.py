"""Backends: the declared interface every backend implements, and the one registry of them.

A backend computes the hot operations of a training step and of evaluation: the noise of a range of
pairs, the population's fitness over a range of pairs, the unperturbed forward, the update sums and
the update (and, with defaults from the reference, the full-rank noise of the other optimisers). ``numpy`` (backends/numpy.py) is the reference: it calls the readable spec in model.py,
es.py and noise.py. Every other backend equals it bit for bit, and tests hold them to it.

Pair ranges: noise and fitness take pairs [p0, p1) of the population, so that a process can evaluate
a share of it and the shares combine exactly: the noise of pair p is keyed on p itself (the counter
hash), and the fitnesses (and carried states) of contiguous ranges, concatenated, are the whole
population's.

The registry maps a name to the module and class that implement it; a backend's module is imported
only when it is chosen, so choosing ``numpy`` never imports Numba. A new backend (a ``cupy`` one,
say: backends/cupy.py) is a Backend subclass, one REGISTRY entry and its place in AUTO; if it cannot
run on this machine (no GPU) its constructor raises Unavailable, which ``auto`` passes over and
naming it reports as one error line.
"""

import abc
import importlib

from ..errors import IntlmError

# name -> (module, class); AUTO: what "auto" tries, in order, taking the first that loads
REGISTRY = {
    "numpy": ("intlm.backends.numpy", "NumpyBackend"),
    "numba": ("intlm.backends.numba", "NumbaBackend"),
    "cupy": ("intlm.backends.cupy", "CupyBackend"),
}
AUTO = ("numba", "numpy")  # cupy joins, first, once scripts/gpu_check.sh has passed on a GPU: until then it is chosen by name only
NAMES = ("auto",) + tuple(REGISTRY)  # the --backend choices


class Unavailable(IntlmError):
    """A backend that cannot run here: its package or its hardware is missing."""


class Backend(abc.ABC):
    """The operations a backend implements, with these signatures. ``cfg`` is a checked Config;
    parameters are the int8 arrays of ``model.init_params``; noise is laid out as ``model.make_noise``
    lays it out (matrices (A, B), vectors e, pair axis first)."""

    name: str

    @abc.abstractmethod
    def make_noise(self, cfg, step: int, p0: int = 0, p1: int | None = None) -> dict:
        """The noise of pairs [p0, p1) at ``step`` (p1 None: cfg.pairs), pair axis p1 - p0 long:
        ``model.make_noise(cfg, step, range(p0, p1))``. Pair p's values do not depend on the range."""

    @abc.abstractmethod
    def population_fitness(self, params, cfg, noise, pair_tokens, state, p0: int = 0, p1: int | None = None,
                           positions=False):
        """Fitness (int32, 2 * (p1 - p0)) of members 2*p0 .. 2*p1, each the sum of its log-likelihoods
        over the window: member 2p (+) and 2p + 1 (-) carry pair p's perturbation from ``noise``
        (make_noise of the same range) and read pair_tokens[p] (pair_tokens: every pair's row,
        window + 1 bytes). ``state`` (population, layers, width) int8: rows 2*p0 .. 2*p1 are carried
        through the window and updated in place, the others left alone. ``positions``: each member's
        log-likelihoods (int32, (2 * (p1 - p0), window)) instead of their sum."""

    @abc.abstractmethod
    def forward(self, params, cfg, tokens, state):
        """The unperturbed model over ``tokens`` (rows, T + 1): log-likelihoods (rows, T) int32 of
        tokens[:, 1:]; ``state`` (rows, layers, width) int8 carried and updated in place."""

    @abc.abstractmethod
    def update_sums(self, cfg, noise, f, reads=None, local=None) -> dict:
        """Z per parameter from the whole population's noise and pair fitnesses f (pairs,) int32:
        ``es.update_sums``, exact (int32 or int64 arrays); with context tables, ``reads`` (pairs,
        window, tables) are the rows each pair's window read (``rows_read``), ``local`` (pairs, window)
        each pair's per-byte fitness differences or None (``context.credit``), and Z["context"] is
        ``context.update_sums``' (read, Z, S)."""

    @abc.abstractmethod
    def update(self, params, cfg, step: int, f, Z, momentum=None) -> int:
        """``es.update``: the thresholded +-1 steps (and momentum) in place; returns weights moved."""

    def rows_read(self, cfg, tokens, state_row) -> tuple:
        """``context.rows_read``: the context tables' rows each window reads, and the bytes before
        after it; the reference unless a backend has faster."""
        from ..context import rows_read

        return rows_read(cfg, tokens, state_row)

    def decay_tables(self, param, cfg, step: int) -> int:
        """``context.decay``: this step's slice of the context tables pulled toward zero in place;
        returns the entries moved. The reference unless a backend has faster."""
        from ..context import decay

        return decay(param, cfg, step)

    # Full-rank noise, for the optimisers other than EGGROLL; the reference unless a backend has faster.
    def dense_noise(self, cfg, t, step: int, member: int):
        """``dense_noise.dense_noise``: one member's full-rank noise of tensor t, int8 of t's shape."""
        from ..dense_noise import dense_noise

        return dense_noise(cfg, t, step, member)

    def dither(self, cfg, t, step: int, member: int, bits: int):
        """``dense_noise.dither``: uniform integers in [0, 2**bits), int64 of t's shape."""
        from ..dense_noise import dither

        return dither(cfg, t, step, member, bits)


def load(name: str) -> Backend:
    """The backend registered as ``name``; Unavailable if it cannot run here."""
    module, cls = REGISTRY[name]
    try:
        backend = getattr(importlib.import_module(module), cls)()
    except ImportError as err:
        raise Unavailable(f"the {name} backend is not available: {err}") from None
    assert backend.name == name
    return backend


def get(name: str) -> Backend:
    """The backend for a --backend choice: a registered name, or "auto" (the first of AUTO that loads)."""
    if name not in NAMES:
        raise IntlmError(f"unknown backend {name!r}: choose one of {', '.join(NAMES)}")
    if name != "auto":
        return load(name)
    for candidate in AUTO:
        try:
            return load(candidate)
        except Unavailable:
            continue
    raise IntlmError(f"no backend is available (tried {', '.join(AUTO)})")
