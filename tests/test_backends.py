"""Bit-identity of the Numba backend with the NumPy reference: noise, population fitness, forward,
update sums, and whole training steps; the declared interface and registry; pair ranges that
combine exactly."""

import importlib
import inspect
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from intlm import backends, context, es, train
from intlm.backends import AUTO, NAMES, REGISTRY, Backend
from intlm.config import INT32_MAX, worst_case_bounds
from intlm.errors import IntlmError
from intlm.run import Run

from conftest import random_params, random_state, random_tokens, text_bytes, tiny_config

CONFIGS = [
    dict(rank=1, layers=1, sigma_shift=0, mlp_ratio=1, fitness="sign"),
    dict(rank=3, layers=2, sigma_shift=4, mlp_ratio=4, fitness="rank"),
    dict(rank=1, layers=2, sigma_shift=4, mlp_ratio=1, fitness="rank", population=6, window=6),
    dict(rank=3, layers=1, sigma_shift=0, mlp_ratio=4, fitness="sign", width=32, seed=2 ** 63 - 1),
    # two blocks of members (backends/numba/forward.py BLOCK_ROWS = 32), the second of 6 rows: not a multiple of
    # the 4 rows whose x.B are computed together
    dict(rank=2, layers=1, sigma_shift=3, mlp_ratio=2, fitness="rank", population=38, window=5),
    # a context table (context.py): rank 1 and 3, one and two layers, two blocks of members
    dict(rank=1, layers=1, sigma_shift=3, mlp_ratio=2, fitness="rank", context_bits=8),
    dict(rank=3, layers=2, sigma_shift=0, mlp_ratio=1, fitness="sign", population=38, window=7, context_bits=9,
         context_order=4),
    # context logits: rows of width + 256, random (saturating) rows summed into the logits
    dict(rank=2, layers=1, sigma_shift=2, mlp_ratio=1, fitness="rank", population=38, window=5, context_bits=8,
         context_order=3, context_logits=1),
]


def assert_noise_equal(a, b):
    assert set(a) == set(b)
    for name in a:
        x, y = a[name], b[name]
        if name == context.NAME:  # (stream keys, B)
            assert x[0].dtype == y[0].dtype == np.uint64 and np.array_equal(x[0], y[0])
            assert x[1].dtype == y[1].dtype == np.int8 and np.array_equal(x[1], y[1])
        elif isinstance(x, tuple):
            assert len(x) == len(y) == 2
            for u, v in zip(x, y):
                assert u.dtype == v.dtype == np.int8 and u.shape == v.shape, name
                assert np.array_equal(u, v), name
        else:
            assert x.dtype == y.dtype == np.int8 and x.shape == y.shape, name
            assert np.array_equal(x, y), name


def compare_backends(cfg, step, seed, numpy_backend, numba_backend):
    """Run every hot operation on both backends from the same random model, state and bytes."""
    rng = np.random.default_rng(seed)
    params = random_params(cfg, rng)
    n_np, n_nb = numpy_backend.make_noise(cfg, step), numba_backend.make_noise(cfg, step)
    assert_noise_equal(n_np, n_nb)

    tokens = random_tokens(cfg.pairs, cfg.window + 1, rng)
    state = random_state(cfg, cfg.population, rng)
    reads = context.rows_read(cfg, tokens, state[0::2, cfg.layers])[0] if cfg.context_bits else None
    s_np, s_nb = state.copy(), state.copy()
    f_np = numpy_backend.population_fitness(params, cfg, n_np, tokens, s_np)
    f_nb = numba_backend.population_fitness(params, cfg, n_nb, tokens, s_nb)
    assert f_np.dtype == f_nb.dtype == np.int32
    assert np.array_equal(f_np, f_nb)
    assert s_nb.dtype == np.int8 and np.array_equal(s_np, s_nb)
    assert not np.array_equal(s_np, state)

    rows = 5
    ftok = random_tokens(rows, cfg.window + 3, rng)
    fstate = random_state(cfg, rows, rng)
    a, b = fstate.copy(), fstate.copy()
    ll_np = numpy_backend.forward(params, cfg, ftok, a)
    ll_nb = numba_backend.forward(params, cfg, ftok, b)
    assert ll_np.shape == ll_nb.shape == (rows, cfg.window + 2)
    assert np.array_equal(ll_np, ll_nb)
    assert np.array_equal(a, b)

    for mode in ("sign", "rank", "linear"):
        f, _ = es.shape_fitness(f_np, mode)
        z_np, z_nb = numpy_backend.update_sums(cfg, n_np, f, reads), numba_backend.update_sums(cfg, n_nb, f, reads)
        assert set(z_np) == set(z_nb)
        for name in z_np:
            for u, v in zip(*((z[name] if name == context.NAME else (z[name],)) for z in (z_np, z_nb)), strict=True):
                assert u.shape == v.shape
                assert np.array_equal(u, v), name
    return f_np


@pytest.mark.parametrize("changes", CONFIGS, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
def test_numba_matches_numpy(changes, numpy_backend, numba_backend):
    """make_noise, population_fitness (fitness and state), forward (ll and state) and update_sums
    are bit-identical on random saturating models."""
    cfg = tiny_config(**changes)
    for step, seed in ((0, 1), (123456789, 2)):
        compare_backends(cfg, step, seed, numpy_backend, numba_backend)


@settings(max_examples=6, deadline=None)
@given(rank=st.integers(1, 3), layers=st.integers(1, 2), mlp_ratio=st.sampled_from([1, 2, 4]),
       sigma=st.integers(0, 8), pop=st.sampled_from([2, 4, 8]), window=st.integers(1, 6),
       step=st.integers(0, 2 ** 40), seed=st.integers(0, 2 ** 32 - 1),
       cfg_seed=st.integers(0, 2 ** 63 - 1), context_bits=st.sampled_from([0, 8, 12]))
def test_numba_matches_numpy_hypothesis(rank, layers, mlp_ratio, sigma, pop, window, step, seed, cfg_seed,
                                        context_bits, numpy_backend, numba_backend):
    """Same identity over hypothesis-drawn tiny configs, steps and seeds."""
    cfg = tiny_config(rank=rank, layers=layers, mlp_ratio=mlp_ratio, sigma_shift=sigma, population=pop,
                      window=window, seed=cfg_seed, context_bits=context_bits)
    compare_backends(cfg, step, seed, numpy_backend, numba_backend)


def test_update_sums_extreme_noise(numpy_backend, numba_backend):
    """With every noise factor at +-max and f at +-RANK_LEVELS the int32 Numba sums still equal the
    int64 reference."""
    cfg = tiny_config(rank=3, fitness="rank", population=8)
    nz = numpy_backend.make_noise(cfg, 0)
    ext = {}
    for name, v in nz.items():
        if isinstance(v, tuple):
            ext[name] = tuple(np.where(x >= 0, 59, -59).astype(np.int8) for x in v)
        else:
            ext[name] = np.where(v >= 0, 78, -78).astype(np.int8)
    f = np.array([8, -8, 8, 8], dtype=np.int32)
    z_np, z_nb = numpy_backend.update_sums(cfg, ext, f), numba_backend.update_sums(cfg, ext, f)
    for name in z_np:
        assert np.array_equal(z_np[name], z_nb[name]), name


@settings(max_examples=25, deadline=None)
@given(momentum_shift=st.integers(0, 8), step=st.integers(0, 5000), seed=st.integers(0, 2 ** 32 - 1),
       zero_f=st.booleans(), population=st.sampled_from([16, 1 << 20]))
def test_update_matches_numpy(momentum_shift, step, seed, zero_f, population, numpy_backend, numba_backend):
    """The fused Numba update moves the same weights, leaves the same momentum and counts the same
    moves as es.update, from saturated weights, momentum and Z at their worst cases (int64 at
    population 2**20) and all-zero fitness alike; the momentum stays within its bound."""
    cfg = tiny_config(momentum_shift=momentum_shift, population=population, rank=2, fitness="rank")
    rng = np.random.default_rng(seed)
    params = random_params(cfg, rng)
    f = np.zeros(cfg.pairs, np.int32) if zero_f else rng.integers(-8, 9, cfg.pairs).astype(np.int32)
    bounds = worst_case_bounds(cfg)
    zmax, mmax = bounds["update sum Z"], bounds["momentum M"]
    z_dtype = np.int32 if zmax <= INT32_MAX else np.int64

    def extreme(v, bound, dtype):
        """Random values in [-bound, bound] with the bound itself at both ends of the array."""
        out = rng.integers(-bound, bound + 1, v.shape, dtype=np.int64)
        out.flat[0], out.flat[-1] = bound, -bound
        return out.astype(dtype)

    Z = {k: extreme(v, zmax, z_dtype) for k, v in params.items()}
    momentum = {k: extreme(v, mmax, v.dtype) for k, v in es.init_momentum(cfg, params).items()}
    results = []
    for be in (numpy_backend, numba_backend):
        p = {k: v.copy() for k, v in params.items()}
        m = {k: v.copy() for k, v in momentum.items()}
        moved = be.update(p, cfg, step, f, {k: v.copy() for k, v in Z.items()}, m)
        results.append((moved, p, m))
    (moved_np, p_np, m_np), (moved_nb, p_nb, m_nb) = results
    assert moved_np == moved_nb
    assert (moved_np == 0) == zero_f
    for k in params:
        assert p_nb[k].dtype == np.int8 and np.array_equal(p_np[k], p_nb[k]), k
    for k in momentum:
        assert m_nb[k].dtype == es.momentum_dtype(cfg) and np.array_equal(m_np[k], m_nb[k]), k
        assert np.abs(m_nb[k].astype(np.int64)).max() <= mmax, k


def test_update_sums_reuse_no_stale_pairs(numpy_backend, numba_backend):
    """An odd pair count pads the pair axis; after a run with one more pair (same buffer shapes) the
    padding must not carry that run's last pair into the sums."""
    for population in (8, 6):
        cfg = tiny_config(population=population, rank=1, fitness="rank")
        noise = numpy_backend.make_noise(cfg, 3)
        f = np.arange(1, cfg.pairs + 1, dtype=np.int32)
        z_np, z_nb = numpy_backend.update_sums(cfg, noise, f), numba_backend.update_sums(cfg, noise, f)
        for name in z_np:
            assert np.array_equal(z_np[name], z_nb[name]), (population, name)


def test_training_steps_identical(numpy_backend, numba_backend):
    """Three train.train_step calls with each backend leave identical parameters, hidden state and
    step statistics (the whole step: windows, noise, fitness, shaping, update)."""
    text = np.frombuffer(b"".join(b"\0" + text_bytes(60, seed=s) for s in range(3)), dtype=np.uint8)
    for changes in (dict(population=8, window=5, fitness="sign"),
                    dict(population=8, window=3, rank=3, layers=2, fitness="rank", sigma_shift=2)):
        cfg = tiny_config(alpha_q16=65536, **changes)
        runs = {be.name: Run.fresh(cfg) for be in (numpy_backend, numba_backend)}
        start = {k: v.copy() for k, v in runs["numpy"].params.items()}
        for _ in range(3):
            stats = {be.name: train.train_step(runs[be.name], text, be) for be in (numpy_backend, numba_backend)}
            assert stats["numpy"] == stats["numba"]
        a, b = runs["numpy"], runs["numba"]
        assert a.step == b.step == 3
        for name in a.params:
            assert np.array_equal(a.params[name], b.params[name]), name
        assert np.array_equal(a.recurrent, b.recurrent)
        assert any(not np.array_equal(start[k], a.params[k]) for k in start)  # training did move weights


def test_backend_names():
    """get() knows numpy / numba / auto and refuses others with an IntlmError."""
    assert backends.get("numpy").name == "numpy"
    assert backends.get("numba").name == "numba"
    assert backends.get("auto").name in ("cupy", "numba")  # cupy only where a GPU is usable
    with pytest.raises(IntlmError):
        backends.get("cuda")


def test_registry_is_the_one_list_of_backends():
    """--backend's choices are "auto" and the registry's names, in every command, and auto's order
    names only registered backends."""
    from intlm.cli import cli

    assert NAMES == ("auto",) + tuple(REGISTRY)
    assert set(AUTO) <= set(REGISTRY)
    for command in ("pretrain", "eval", "bench"):
        option = next(p for p in cli.commands[command].params if p.name == "backend")
        assert tuple(option.type.choices) == NAMES, command


@pytest.mark.parametrize("name", list(REGISTRY))
def test_backends_implement_the_interface_with_its_signatures(name):
    """Each registered backend is a Backend whose operations have the interface's signatures exactly
    (names, defaults and annotations)."""
    module, cls = REGISTRY[name]
    klass = getattr(importlib.import_module(module), cls)  # the class: a GPU backend cannot be made without a GPU
    assert issubclass(klass, Backend) and klass.name == name
    for op in sorted(Backend.__abstractmethods__):
        assert inspect.signature(getattr(klass, op)) == inspect.signature(getattr(Backend, op)), (name, op)


def test_auto_passes_over_unavailable_backends(monkeypatch):
    """A registered backend whose module does not import, or whose constructor finds no hardware
    (Unavailable, as a GPU backend without a GPU), is skipped by auto, and naming it is an IntlmError."""
    import types

    from intlm.backends.numpy import NumpyBackend

    first_available = backends.get("auto").name  # cupy where a GPU is usable, else numba

    class NoDevice(NumpyBackend):
        name = "nodevice"

        def __init__(self):
            raise backends.Unavailable("the nodevice backend is not available: no device")

    module = types.ModuleType("intlm_test_nodevice")
    module.NoDevice = NoDevice
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(REGISTRY, "nodevice", (module.__name__, "NoDevice"))
    monkeypatch.setitem(REGISTRY, "missing", ("intlm_test_no_such_module", "Missing"))
    monkeypatch.setattr(backends, "NAMES", NAMES + ("nodevice", "missing"))
    monkeypatch.setattr(backends, "AUTO", ("nodevice", "missing") + AUTO)
    assert backends.get("auto").name == first_available
    for name in ("nodevice", "missing"):
        with pytest.raises(IntlmError, match=f"the {name} backend is not available"):
            backends.get(name)


def test_choosing_numpy_imports_no_numba():
    """The command line, the training loop and the NumPy backend import without Numba."""
    code = ("import sys; import intlm.cli, intlm.train, intlm.sample; from intlm.backends import get; "
            "get('numpy'); print('numba' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_pair_ranges_are_checked(numpy_backend, numba_backend):
    """An empty or out-of-range pair range, or noise of another range, is refused."""
    cfg = tiny_config()
    rng = np.random.default_rng(0)
    params, tokens = random_params(cfg, rng), random_tokens(cfg.pairs, cfg.window + 1, rng)
    state = random_state(cfg, cfg.population, rng)
    for be in (numpy_backend, numba_backend):
        for p0, p1 in ((2, 2), (-1, 2), (0, cfg.pairs + 1), (3, 1)):
            with pytest.raises(ValueError):
                be.make_noise(cfg, 0, p0, p1)
        with pytest.raises(ValueError):
            be.population_fitness(params, cfg, be.make_noise(cfg, 0, 0, 2), tokens, state, 1, 2)


def slice_noise(noise, p0, p1):
    return {k: tuple(x[p0:p1] for x in v) if isinstance(v, tuple) else v[p0:p1] for k, v in noise.items()}


@settings(max_examples=8, deadline=None)
@given(data=st.data(), pop=st.sampled_from([2, 8, 70]), rank=st.integers(1, 2), step=st.integers(0, 2 ** 40),
       seed=st.integers(0, 2 ** 32 - 1))
def test_pair_ranges_combine_exactly(data, pop, rank, step, seed, numpy_backend, numba_backend):
    """For a random split of the pairs into contiguous ranges, each range's noise is that slice of
    the whole population's, and the ranges' fitnesses, concatenated, and the states they carry are
    the whole population's, on both backends (population 70: ranges that cross the Numba backend's
    blocks of 32 members)."""
    cfg = tiny_config(population=pop, rank=rank, window=3)
    cuts = sorted(data.draw(st.sets(st.integers(1, cfg.pairs - 1), max_size=4)) if cfg.pairs > 1 else set())
    bounds = [0] + cuts + [cfg.pairs]
    rng = np.random.default_rng(seed)
    params, tokens = random_params(cfg, rng), random_tokens(cfg.pairs, cfg.window + 1, rng)
    state = random_state(cfg, cfg.population, rng)
    wholes = []
    for be in (numpy_backend, numba_backend):
        noise = be.make_noise(cfg, step)
        whole_state = state.copy()
        whole = be.population_fitness(params, cfg, noise, tokens, whole_state)
        parts, part_state = [], state.copy()
        for p0, p1 in zip(bounds, bounds[1:]):
            part_noise = be.make_noise(cfg, step, p0, p1)
            assert_noise_equal(part_noise, slice_noise(noise, p0, p1))
            parts.append(be.population_fitness(params, cfg, part_noise, tokens, part_state, p0, p1))
            assert np.array_equal(part_state[2 * p1:], state[2 * p1:])  # rows past the range untouched
        assert np.array_equal(np.concatenate(parts), whole), be.name
        assert np.array_equal(part_state, whole_state), be.name
        wholes.append((whole, whole_state))
    assert np.array_equal(wholes[0][0], wholes[1][0]) and np.array_equal(wholes[0][1], wholes[1][1])
