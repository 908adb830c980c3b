"""Tests of the NumPy reference model: initialisation, noise layout, antithetic members, document
resets, state carrying and the population fitness."""

import numpy as np
import pytest

from intlm import model
from intlm.arith import ONE
from intlm.noise import NOISE_MAX, rank_mult

from conftest import random_params, random_state, random_tokens, tiny_config


# --- init_params ---------------------------------------------------------------------------------

def test_init_params_deterministic_int8_in_range():
    """Same seed, same bytes; every array int8 in [-127, 127] with the shape of its tensor spec."""
    cfg = tiny_config(layers=2, mlp_ratio=2)
    a, b = model.init_params(cfg), model.init_params(cfg)
    specs = {t.name: t for t in model.tensors(cfg)}
    assert set(a) == set(specs)
    for name, p in a.items():
        assert p.dtype == np.int8 and p.shape == specs[name].shape
        assert p.min() >= -127 and p.max() <= 127
        assert np.array_equal(p, b[name])


def test_init_params_differ_across_seeds():
    """Every random matrix changes with the seed; gains stay 1.0 (16) and biases 0."""
    a = model.init_params(tiny_config(seed=1))
    b = model.init_params(tiny_config(seed=2))
    for t in model.tensors(tiny_config()):
        if t.kind == "matrix":
            assert not np.array_equal(a[t.name], b[t.name]), t.name
            assert np.count_nonzero(a[t.name] != b[t.name]) > a[t.name].size // 2
        elif t.name in ("norm", "out_norm"):
            assert np.all(a[t.name] == ONE)
        else:
            assert np.all(a[t.name] == 0)


def test_init_params_blocks_differ():
    """Blocks of one stacked tensor (layers, GRU matrices) get their own streams, not copies."""
    p = model.init_params(tiny_config(layers=2))
    g = p["gru"].reshape(8, -1)
    for i in range(8):
        for j in range(i + 1, 8):
            assert not np.array_equal(g[i], g[j])
    assert not np.array_equal(p["up"][0], p["up"][1])


@pytest.mark.parametrize("width,mlp_ratio", [(16, 1), (64, 4), (48, 2)])
def test_init_scale_keeps_activations_at_unit_scale(width, mlp_ratio):
    """Weights have std ~2**shift / sqrt(n) (so a matmul of std-16 inputs has std ~16); the embedding
    has std ~16 and the head is 4x smaller than the other matrices."""
    from intlm.arith import matmul_shift

    cfg = tiny_config(width=width, mlp_ratio=mlp_ratio)
    p = model.init_params(cfg)
    assert 14 < p["embed"].astype(float).std() < 18
    for name in ("gru", "up", "down"):
        n = p[name].shape[-1]
        want = 2 ** matmul_shift(n) / np.sqrt(n)
        assert abs(p[name].astype(float).std() / want - 1) < 0.15, name
    want_head = 2 ** matmul_shift(width) / np.sqrt(width) / 4
    assert abs(p["head"].astype(float).std() / want_head - 1) < 0.2


# --- make_noise ----------------------------------------------------------------------------------

@pytest.mark.parametrize("rank,layers,mlp_ratio", [(1, 1, 1), (3, 2, 4)])
def test_make_noise_shapes_and_ranges(rank, layers, mlp_ratio):
    """A is (pairs, *lead, rows, r), B (pairs, *lead, cols, r), e (pairs, *shape), all int8, with the
    rank-scaled (matrices) or full (vectors) maximum magnitude."""
    cfg = tiny_config(rank=rank, layers=layers, mlp_ratio=mlp_ratio)
    nz = model.make_noise(cfg, 5)
    for t in model.tensors(cfg):
        if t.kind == "matrix":
            a, b = nz[t.name]
            lead, (m, n) = t.shape[:-2], t.shape[-2:]
            assert a.shape == (cfg.pairs,) + lead + (m, rank)
            assert b.shape == (cfg.pairs,) + lead + (n, rank)
            for x in (a, b):
                assert x.dtype == np.int8
                assert np.abs(x.astype(int)).max() <= (1020 * rank_mult(rank) + 512) >> 10
        else:
            e = nz[t.name]
            assert e.shape == (cfg.pairs,) + t.shape and e.dtype == np.int8
            assert np.abs(e.astype(int)).max() <= NOISE_MAX


def test_make_noise_subset_of_pairs_and_steps():
    """Noise of a chosen subset of pairs equals those pairs of the full draw; another step differs."""
    cfg = tiny_config(rank=2)
    full = model.make_noise(cfg, 7)
    part = model.make_noise(cfg, 7, pairs=[3, 1])
    other = model.make_noise(cfg, 8)
    for name, v in full.items():
        if isinstance(v, tuple):
            for x, y, z in zip(v, part[name], other[name]):
                assert np.array_equal(x[[3, 1]], y)
                assert not np.array_equal(x, z)
        else:
            assert np.array_equal(v[[3, 1]], part[name])
            assert not np.array_equal(v, other[name])


def test_make_noise_pairs_independent():
    """Different pairs get different perturbations (no pair shares another's factors)."""
    cfg = tiny_config(population=8)
    a, _ = model.make_noise(cfg, 0)["gru"]
    for i in range(cfg.pairs):
        for j in range(i + 1, cfg.pairs):
            assert not np.array_equal(a[i], a[j])


# --- antithetic members --------------------------------------------------------------------------

@pytest.mark.parametrize("rank,sigma", [(1, 0), (3, 4), (2, 2)])
def test_linear_perturbations_are_antithetic(monkeypatch, rank, sigma):
    """For Members.linear, member 2p's perturbation (perturbed minus unperturbed accumulator) is
    exactly the negation of member 2p+1's, for every matrix and pair."""
    cfg = tiny_config(rank=rank, sigma_shift=sigma, mlp_ratio=2, population=8)
    rng = np.random.default_rng(rank + sigma)
    params = random_params(cfg, rng)
    nz = model.make_noise(cfg, 3)
    monkeypatch.setattr(model, "matmul_shift", lambda n: 0)  # compare accumulators before rounding
    rows = cfg.population
    members, plain = model.Members(nz, cfg, rows), model.Members(None, cfg, rows)
    for name, lead in (("gru", (0, 2)), ("up", (0,)), ("down", (0,)), ("head", ())):
        n = params[name].shape[-1]
        x = np.repeat(rng.integers(-127, 128, (cfg.pairs, n)), 2, axis=0)  # a pair reads the same input
        delta = members.linear(name, params[name], x, *lead) - plain.linear(name, params[name], x, *lead)
        assert np.array_equal(delta[0::2], -delta[1::2]), name
        assert np.any(delta != 0), name


def test_linear_antithetic_after_rounding_within_one(rng):
    """With the real rescaling shift, the two members' perturbations are mirror images up to the
    rounding of one shift (at most 1 unit apart)."""
    cfg = tiny_config(rank=2, sigma_shift=0)
    params = random_params(cfg, rng)
    nz = model.make_noise(cfg, 1)
    members, plain = model.Members(nz, cfg, cfg.population), model.Members(None, cfg, cfg.population)
    x = np.repeat(rng.integers(-127, 128, (cfg.pairs, cfg.width)), 2, axis=0)
    delta = members.linear("head", params["head"], x) - plain.linear("head", params["head"], x)
    assert np.max(np.abs(delta[0::2] + delta[1::2])) <= 1
    assert np.any(delta != 0)


def test_vector_and_embed_perturbations_are_antithetic(rng):
    """Vector parameters and embedding rows get +e and -e (away from saturation)."""
    cfg = tiny_config(rank=2, sigma_shift=2)
    nz = model.make_noise(cfg, 2)
    rows = cfg.population
    members = model.Members(nz, cfg, rows)
    bias = np.zeros(256, dtype=np.int8)
    v = members.vector("head_bias", bias)
    assert np.array_equal(v[0::2], -v[1::2]) and np.any(v != 0)
    embed = np.zeros((256, cfg.width), dtype=np.int8)
    byte = np.repeat(rng.integers(0, 256, cfg.pairs), 2)
    e = members.embed(embed, byte)
    assert np.array_equal(e[0::2], -e[1::2]) and np.any(e != 0)


# --- forward: resets, carried state, population fitness ------------------------------------------

def test_zero_byte_resets_state(rng):
    """After a 0 byte the model predicts the same whatever came before and whatever state it held."""
    cfg = tiny_config(layers=2, mlp_ratio=2)
    params = random_params(cfg, rng)
    tail = rng.integers(1, 256, 6)
    tokens = np.stack([np.concatenate([rng.integers(1, 256, 5), [0], tail]) for _ in range(4)]).astype(np.uint8)
    state = random_state(cfg, 4, rng).astype(np.int64)
    ll = model.forward(params, cfg, tokens, state)
    assert np.all(ll[:, 5:] == ll[0, 5:])  # predictions from the 0 byte onwards agree
    assert np.all(state == state[0])
    assert len({tuple(r) for r in ll[:, :5]}) > 1  # ... and before it they did differ


def test_without_reset_history_matters(rng):
    """Control for the test above: without a 0 byte, different histories give different predictions."""
    cfg = tiny_config()
    params = random_params(cfg, rng)
    tail = rng.integers(1, 256, 6)
    tokens = np.stack([np.concatenate([rng.integers(1, 256, 5), [7], tail]) for _ in range(4)]).astype(np.uint8)
    ll = model.forward(params, cfg, tokens, np.zeros((4, 1, 16), dtype=np.int64))
    assert len({tuple(r) for r in ll[:, 5:]}) > 1


def test_state_is_carried_across_calls(rng):
    """Running a window of 2T bytes in one call equals two calls of T with the state carried over."""
    cfg = tiny_config(layers=2, mlp_ratio=4)
    params = random_params(cfg, rng)
    T = 5
    tokens = random_tokens(3, 2 * T + 1, rng, zero_rate=0.05)
    s0 = random_state(cfg, 3, rng).astype(np.int64)
    one = s0.copy()
    ll = model.forward(params, cfg, tokens, one)
    two = s0.copy()
    ll1 = model.forward(params, cfg, tokens[:, : T + 1], two)
    ll2 = model.forward(params, cfg, tokens[:, T:], two)
    assert np.array_equal(ll, np.concatenate([ll1, ll2], axis=1))
    assert np.array_equal(one, two)
    assert not np.array_equal(one, s0)


def test_initial_state_matters(rng):
    """The state passed in is really used (unless a 0 byte resets it)."""
    cfg = tiny_config()
    params = random_params(cfg, rng)
    tokens = random_tokens(1, 5, rng, zero_rate=0.0)
    a = model.forward(params, cfg, tokens, np.zeros((1, 1, 16), dtype=np.int64))
    b = model.forward(params, cfg, tokens, random_state(cfg, 1, rng).astype(np.int64))
    assert not np.array_equal(a, b)


def zero_noise(cfg):
    out = {}
    for name, v in model.make_noise(cfg, 0).items():
        out[name] = tuple(np.zeros_like(x) for x in v) if isinstance(v, tuple) else np.zeros_like(v)
    return out


def test_population_fitness_with_zero_noise(rng):
    """With all noise zeroed, both members of a pair have the fitness and the final state of the
    unperturbed model reading that pair's bytes from that member's state, and it equals the sum of
    forward's log-likelihoods."""
    cfg = tiny_config(layers=2, population=8, window=5)
    params = random_params(cfg, rng)
    pair_tokens = random_tokens(cfg.pairs, cfg.window + 1, rng)
    state = random_state(cfg, cfg.population, rng)
    state[1::2] = state[0::2]  # members of a pair start from the same state
    start = state.copy()
    fit = model.population_fitness(params, cfg, zero_noise(cfg), pair_tokens, state)
    assert fit.dtype == np.int32 and fit.shape == (cfg.population,)
    assert np.array_equal(fit[0::2], fit[1::2])
    assert np.array_equal(state[0::2], state[1::2])
    ref_state = start[0::2].astype(np.int64)
    ll = model.forward(params, cfg, pair_tokens, ref_state)
    assert np.array_equal(fit[0::2], ll.sum(axis=1))
    assert np.array_equal(state[0::2], ref_state)
    assert len(set(fit[0::2].tolist())) > 1  # different pairs read different bytes


def test_population_fitness_members_read_their_pair_bytes(rng):
    """With real noise, member i's fitness depends on pair_tokens[i // 2] only: changing one pair's
    bytes changes exactly that pair's two fitnesses."""
    cfg = tiny_config(population=8, window=4, sigma_shift=0)
    params = random_params(cfg, rng)
    nz = model.make_noise(cfg, 4)
    toks = random_tokens(cfg.pairs, cfg.window + 1, rng, zero_rate=0.0)
    state = np.zeros((cfg.population, 1, cfg.width), dtype=np.int8)
    f1 = model.population_fitness(params, cfg, nz, toks, state.copy())
    toks2 = toks.copy()
    toks2[2] = (toks2[2].astype(int) % 255 + 1).astype(np.uint8)
    f2 = model.population_fitness(params, cfg, nz, toks2, state.copy())
    changed = np.nonzero(f1 != f2)[0]
    assert set(changed.tolist()) == {4, 5}
    assert not np.array_equal(f1[0::2], f1[1::2])  # the noise does separate the pair's members


def test_population_fitness_state_int8_and_carried(rng):
    """The population state is updated in place, stays int8 in range, and a second call continues it."""
    cfg = tiny_config(population=4, window=3)
    params = random_params(cfg, rng)
    nz = model.make_noise(cfg, 0)
    toks = random_tokens(cfg.pairs, 2 * cfg.window + 1, rng, zero_rate=0.0)
    state = np.zeros((cfg.population, 1, cfg.width), dtype=np.int8)
    f_all = model.population_fitness(params, cfg, nz, toks, state)
    assert state.dtype == np.int8 and np.any(state != 0)
    s2 = np.zeros_like(state)
    fa = model.population_fitness(params, cfg, nz, toks[:, : cfg.window + 1], s2)
    fb = model.population_fitness(params, cfg, nz, toks[:, cfg.window:], s2)
    assert np.array_equal(f_all, fa + fb)
    assert np.array_equal(state, s2)


def test_forward_log_likelihoods_are_probabilities(rng):
    """Every log-likelihood is <= ~0 bits, and over all 256 targets the probabilities sum to ~1."""
    cfg = tiny_config()
    params = model.init_params(cfg)
    prefix = random_tokens(1, 4, rng, zero_rate=0.0)
    tokens = np.concatenate([np.repeat(prefix, 256, axis=0), np.arange(256, dtype=np.uint8)[:, None]], axis=1)
    ll = model.forward(params, cfg, tokens, np.zeros((256, 1, 16), dtype=np.int64))
    assert np.all(ll[:, -1] <= 3)  # <= 0.01 bit above 0
    assert np.all(ll[:, :-1] == ll[0, :-1])
    assert abs(np.exp2(ll[:, -1] / 256).sum() - 1) < 0.02
