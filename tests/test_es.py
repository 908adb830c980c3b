"""Tests of the integer EGGROLL update: fitness shaping, the z-test threshold and the +-1 steps."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from intlm import es, model
from intlm.arith import TAIL_Q31
from intlm.config import INT32_MAX, RANK_LEVELS, UPDATE_CHUNK, Config, worst_case_bounds
from intlm.noise import rank_mult

from conftest import tiny_config

fitness_arrays = st.integers(1, 40).flatmap(
    lambda pairs: hnp.arrays(np.int32, 2 * pairs, elements=st.integers(-50, 50) | st.integers(-(2 ** 31), 2 ** 31 - 1)))
FEW = settings(max_examples=150, deadline=None)


def swap_members(fitness):
    out = fitness.copy()
    out[0::2], out[1::2] = fitness[1::2], fitness[0::2]
    return out


# --- shape_fitness: sign -------------------------------------------------------------------------

@FEW
@given(fitness_arrays)
def test_sign_shaping(fitness):
    """sign mode: f_p = sign(F+ - F-) in {-1, 0, 1}; ties counted; swapping members negates f."""
    f, ties = es.shape_fitness(fitness, "sign")
    plus, minus = fitness[0::2].astype(np.int64), fitness[1::2].astype(np.int64)
    assert f.dtype == np.int32 and f.shape == (len(fitness) // 2,)
    assert set(f.tolist()) <= {-1, 0, 1}
    assert np.array_equal(f, np.sign(plus - minus))  # no int32 wrap on the difference
    assert ties == int(np.sum(plus == minus)) == int(np.sum(f == 0))
    g, ties2 = es.shape_fitness(swap_members(fitness), "sign")
    assert np.array_equal(g, -f) and ties2 == ties


def test_sign_shaping_extremes_do_not_wrap():
    """F+ = INT32_MAX, F- = INT32_MIN is a win for + (the difference is taken in int64)."""
    fit = np.array([2 ** 31 - 1, -(2 ** 31), -(2 ** 31) + 1, 2 ** 31 - 2], dtype=np.int32)
    f, ties = es.shape_fitness(fit, "sign")
    assert list(f) == [1, -1] and ties == 0
    f, _ = es.shape_fitness(fit, "rank")  # |d| ranks 1, 0: the larger win gets the top level
    assert list(f) == [RANK_LEVELS, -1]


# --- shape_fitness: linear -----------------------------------------------------------------------

@FEW
@given(fitness_arrays)
def test_linear_shaping_is_the_difference_scaled_rounded_and_clipped(fitness):
    """linear mode: f = round(RANK_LEVELS * d / (LINEAR_SPAN * mean |d|)) clipped to RANK_LEVELS in
    magnitude (mean |d| rounded down, at least 1); swapping members negates f; ties get 0; f never
    has the opposite sign of d, and a larger |d| never gets a smaller |f|."""
    f, ties = es.shape_fitness(fitness, "linear")
    d = fitness[0::2].astype(np.int64) - fitness[1::2].astype(np.int64)
    mean = max(1, int(np.abs(d).sum()) // len(d))
    assert f.dtype == np.int32 and ties == int(np.sum(d == 0))
    if len(d) > 1:
        exact = [min(RANK_LEVELS, math.floor(RANK_LEVELS * abs(x) / (es.LINEAR_SPAN * mean) + 0.5)) for x in d.tolist()]
        assert np.array_equal(np.abs(f), exact)
    assert np.all(np.sign(f) * np.sign(d) >= 0) and np.all(f[d == 0] == 0)
    order = np.argsort(np.abs(d), kind="stable")
    assert np.all(np.diff(np.abs(f[order])) >= 0)
    g, ties2 = es.shape_fitness(swap_members(fitness), "linear")
    assert np.array_equal(g, -f) and ties2 == ties


def test_linear_shaping_exact_values():
    """d = 90, -30, 0, 6: mean |d| 31, so 8 * |d| / 93 rounds to 8 (7.74), 3 (2.58), 0 and 1 (0.52)."""
    fit = np.array([90, 0, 0, 30, 7, 7, 6, 0], dtype=np.int32)
    f, ties = es.shape_fitness(fit, "linear")
    assert list(f) == [8, -3, 0, 1] and ties == 1


# --- shape_fitness: rank -------------------------------------------------------------------------

@FEW
@given(fitness_arrays)
def test_rank_shaping_range_antisymmetry_and_ties(fitness):
    """rank mode: f in [-RANK_LEVELS, RANK_LEVELS]; swapping members negates f; a pair whose members
    tie gets 0; the sign of f is the sign of F+ - F- (no sign information is lost)."""
    f, ties = es.shape_fitness(fitness, "rank")
    plus, minus = fitness[0::2].astype(np.int64), fitness[1::2].astype(np.int64)
    assert f.dtype == np.int32
    assert np.all(np.abs(f) <= RANK_LEVELS)
    assert np.all(f[plus == minus] == 0)
    assert ties == int(np.sum(plus == minus))
    assert np.array_equal(np.sign(f), np.sign(plus - minus))
    g, _ = es.shape_fitness(swap_members(fitness), "rank")
    assert np.array_equal(g, -f)
    h, _ = es.shape_fitness(-fitness.astype(np.int64), "rank")  # negating every fitness negates f
    assert np.array_equal(h, -f)


@FEW
@given(fitness_arrays, st.integers(1, 5), st.integers(-1000, 1000))
def test_rank_shaping_invariant_under_scale_and_offset(fitness, scale, offset):
    """Only the ranks of the pair differences |F+ - F-| matter: scaling every fitness by a positive
    constant and adding a constant gives the same f."""
    f, _ = es.shape_fitness(fitness, "rank")
    g, _ = es.shape_fitness(scale * fitness.astype(np.int64) + offset, "rank")
    assert np.array_equal(f, g)


@FEW
@given(fitness_arrays)
def test_rank_shaping_monotone_in_the_difference(fitness):
    """A pair with a larger |F+ - F-| never gets a smaller |f|."""
    f, _ = es.shape_fitness(fitness, "rank")
    d = np.abs(fitness[0::2].astype(np.int64) - fitness[1::2].astype(np.int64))
    order = np.argsort(d, kind="stable")
    assert np.all(np.diff(np.abs(f[order])) >= 0)


def test_rank_shaping_exact_values():
    """A worked example: the widest win gets +-RANK_LEVELS, a narrow one a middle level, a tie 0."""
    fit = np.array([100, 0, 50, 51, 7, 7], dtype=np.int32)  # d = 100, -1, 0
    f, ties = es.shape_fitness(fit, "rank")
    # doubled ranks of |d|: 4, 2, 0; den = 4; level = 1 + (7 * rank2 * 2 + 4) // 8 -> 8, 5
    assert list(f) == [8, -5, 0] and ties == 1


def test_rank_shaping_equal_differences_share_the_mean_rank():
    """Pairs with equal |F+ - F-| share the mean of their ranks, whatever their signs."""
    fit = np.array([5, 1, 0, 4, 9, 0], dtype=np.int32)  # d = 4, -4, 9: |d| ranks 0.5, 0.5, 2
    f, ties = es.shape_fitness(fit, "rank")
    # doubled ranks 1, 1, 4; den = 4; levels 1 + (14 + 4) // 8 = 3 and 1 + (56 + 4) // 8 = 8
    assert list(f) == [3, -3, 8] and ties == 0


def test_rank_shaping_differs_from_sign_on_magnitude():
    """Rank mode grades: a narrow win and a wide win get different weights (sign mode cannot)."""
    fit = np.array([10, 9, 100, -100], dtype=np.int32)
    f_rank, _ = es.shape_fitness(fit, "rank")
    f_sign, _ = es.shape_fitness(fit, "sign")
    assert list(f_sign) == [1, 1]
    assert 0 < f_rank[0] < f_rank[1]


# --- z threshold ---------------------------------------------------------------------------------

@FEW
@given(st.integers(1, 65536), st.integers(1, 10 ** 6), st.integers(0, 10 ** 12), st.integers(0, 10 ** 6))
def test_z_threshold_positive_and_non_decreasing(alpha_q16, halflife, step, later):
    """z >= 1 (1/16) always, so the first step never moves every weight; z never falls as steps pass;
    and z is the smallest table entry whose tail is <= alpha_t (when the table reaches that far)."""
    cfg = Config(alpha_q16=alpha_q16, alpha_halflife=halflife)
    z = es.z_threshold_q4(cfg, step)
    assert 1 <= z <= 127
    assert es.z_threshold_q4(cfg, step + later) >= z
    alpha_q31 = (alpha_q16 << 15) * halflife // (halflife + step)
    if z > 1 and z < 127:
        assert TAIL_Q31[z] <= alpha_q31 < TAIL_Q31[z - 1]


def test_z_threshold_values():
    """alpha = 1/2 gives z = 0.6875 (11/16, the first 1/16 step above 0.674); alpha = 1 gives 1/16;
    alpha = 0.05 at its half-life step gives the z of 0.025 (2.25 > 2.241)."""
    assert es.z_threshold_q4(Config(alpha_q16=32768), 0) == 11
    assert es.z_threshold_q4(Config(alpha_q16=65536), 0) == 1
    cfg = Config(alpha_q16=3277, alpha_halflife=100)
    assert es.z_threshold_q4(cfg, 100) == math.ceil(2.2414 * 16)


# --- update --------------------------------------------------------------------------------------

def test_zero_fitness_moves_nothing(rng):
    """All-zero f: update returns 0 and leaves every parameter unchanged."""
    cfg = tiny_config()
    params = model.init_params(cfg)
    before = {k: v.copy() for k, v in params.items()}
    f = np.zeros(cfg.pairs, dtype=np.int32)
    Z = es.update_sums(cfg, model.make_noise(cfg, 0), f)
    assert all(np.all(z == 0) for z in Z.values())
    assert es.update(params, cfg, 0, f, Z) == 0
    for k in params:
        assert np.array_equal(params[k], before[k])


def test_zero_sums_move_nothing_even_at_alpha_one():
    """Z = 0 never moves a weight: the threshold is positive even for alpha = 1 at step 0."""
    cfg = tiny_config(alpha_q16=65536)
    params = model.init_params(cfg)
    before = {k: v.copy() for k, v in params.items()}
    f = np.ones(cfg.pairs, dtype=np.int32)
    thr = es.thresholds(cfg, 0, f)
    assert thr[0] > 0 and thr[1] > 0
    Z = {k: np.zeros(v.shape, dtype=np.int64) for k, v in params.items()}
    assert es.update(params, cfg, 0, f, Z) == 0
    assert all(np.array_equal(params[k], before[k]) for k in params)


@pytest.mark.parametrize("alpha_q16", [32768, 6554])
def test_moved_fraction_close_to_alpha(alpha_q16):
    """With 256 pairs of random noise and random f in {-1, 0, 1}, step 0 moves a fraction of all
    weights within 0.04 of alpha (Z is near-Gaussian with the std the threshold assumes), and far
    fewer than all of them."""
    cfg = tiny_config(population=512, alpha_q16=alpha_q16)
    rng = np.random.default_rng(alpha_q16)
    f = rng.integers(-1, 2, cfg.pairs).astype(np.int32)
    params = model.init_params(cfg)
    total = sum(p.size for p in params.values())
    moved = es.update(params, cfg, 0, f, es.update_sums(cfg, model.make_noise(cfg, 0), f))
    alpha = alpha_q16 / 65536
    assert abs(moved / total - alpha) < 0.04
    assert moved < 0.75 * total


def test_moved_fraction_anneals():
    """Later steps (smaller alpha_t) move fewer weights for the same sums."""
    cfg = tiny_config(population=128, alpha_q16=32768, alpha_halflife=10)
    f = np.random.default_rng(0).integers(-1, 2, cfg.pairs).astype(np.int32)
    Z = es.update_sums(cfg, model.make_noise(cfg, 0), f)
    counts = []
    for step in (0, 10, 100, 1000):
        params = model.init_params(cfg)
        counts.append(es.update(params, cfg, step, f, Z))
    assert counts[0] > counts[1] > counts[2] > counts[3]


def test_update_moves_by_sign_of_z(rng):
    """Moved weights change by exactly sign(Z), the others not at all; the count returned is right."""
    cfg = tiny_config(population=64)
    f = rng.integers(-1, 2, cfg.pairs).astype(np.int32)
    params = model.init_params(cfg)
    before = {k: v.astype(np.int64) for k, v in params.items()}
    Z = es.update_sums(cfg, model.make_noise(cfg, 0), f)
    thr_m, thr_v = es.thresholds(cfg, 0, f)
    moved = es.update(params, cfg, 0, f, Z)
    count = 0
    for t in model.tensors(cfg):
        thr = thr_m if t.kind == "matrix" else thr_v
        d = params[t.name].astype(np.int64) - before[t.name]
        want = np.where(np.abs(Z[t.name]) > thr, np.sign(Z[t.name]), 0)
        want = np.clip(before[t.name] + want, -127, 127) - before[t.name]
        assert np.array_equal(d, want), t.name
        count += int(np.count_nonzero(np.abs(Z[t.name]) > thr))
    assert moved == count > 0


@settings(max_examples=50, deadline=None)
@given(hnp.arrays(np.int8, 64, elements=st.integers(-127, 127)),
       hnp.arrays(np.int64, 64, elements=st.integers(-(2 ** 40), 2 ** 40)), st.integers(0, 2 ** 20))
def test_apply_steps_saturates_never_wraps(param, Z, thr):
    """apply_moves moves by at most 1, stays within [-127, 127] (127 + 1 stays 127, -127 - 1 stays
    -127, never -128 or a wrap), and counts the moves it attempted."""
    p = param.copy()
    n = int(np.count_nonzero(es.apply_moves(p, Z, thr)))
    d = p.astype(int) - param.astype(int)
    assert p.dtype == np.int8
    assert p.min() >= -127 and p.max() <= 127
    assert np.all(np.abs(d) <= 1)
    assert n == int(np.count_nonzero(np.abs(Z) > thr))
    assert np.all(d[np.abs(Z) <= thr] == 0)
    sat = (np.abs(Z) > thr) & (np.abs(param.astype(int) + np.sign(Z)) > 127)
    assert np.all(p[sat] == param[sat])


def test_apply_steps_edges():
    """A worked example: 127 + 1 and -127 - 1 saturate, 0 and 126 move up by one."""
    p = np.array([127, -127, 0, 126], dtype=np.int8)
    es.apply_moves(p, np.array([10, -10, 10, 10]), 5)
    assert list(p) == [127, -127, 1, 127]


def test_thresholds_formula():
    """Thresholds are z * std * sqrt(sum f^2) / 16 with the matrix std 256 and the vector std 16."""
    cfg = tiny_config(population=2 * 64)
    f = np.ones(64, dtype=np.int32)  # sum f^2 = 64, root 8 exactly
    z = es.z_threshold_q4(cfg, 0)
    assert es.thresholds(cfg, 0, f) == (z * 256 * 8 // 16, z * 16 * 8 // 16)


def test_thresholds_within_5_percent_of_exact_root():
    """The documented rule |Z| > z * std * sqrt(sum f^2) within 5%, for any f (small populations too)."""
    cfg = tiny_config(population=8)
    z = es.z_threshold_q4(cfg, 0)
    for f in ([1, -1, 1, 0], [1, 1, 0, 0], [1, -1, 1, -1], [2, -3, 1, 0]):
        f = np.array(f, dtype=np.int32)
        exact = z * 256 * math.sqrt(np.sum(f.astype(np.int64) ** 2)) / 16
        assert abs(es.thresholds(cfg, 0, f)[0] / exact - 1) <= 0.05, f.tolist()


# --- the Z bound ---------------------------------------------------------------------------------

@pytest.mark.parametrize("rank,pairs", [(1, UPDATE_CHUNK), (1, UPDATE_CHUNK + 1), (1, 50_000), (4, 8193)])
def test_update_sums_are_exact_past_int32(numba_backend, rank, pairs):
    """Every noise factor and every f at its max: the Numba update sums equal the exact Python-int
    value, which is the 'update sum Z' bound, at one chunk of int32 partial sums, just past it, and
    where Z itself is past int32 (50,000 pairs at rank 1); each int32 partial sum stays within the
    'update partial sum' bound."""
    a = rank_mult(rank)
    f_max = RANK_LEVELS
    cfg = Config(width=16, layers=1, mlp_ratio=1, population=2 * pairs, rank=rank, fitness="rank",
                 window=4, momentum_shift=0).check()
    a_max = (1020 * a + 512) >> 10
    nz = {}
    for t in model.tensors(cfg):
        if t.kind == "matrix":
            m, n = t.shape[-2:]
            lead = t.shape[:-2]
            nz[t.name] = (np.full((pairs,) + lead + (m, rank), a_max, np.int8),
                          np.full((pairs,) + lead + (n, rank), -a_max, np.int8))
        else:
            nz[t.name] = np.full((pairs,) + t.shape, 78, np.int8)
    f = np.full(pairs, f_max, dtype=np.int32)
    Z = numba_backend.update_sums(cfg, nz, f)
    exact = pairs * rank * f_max * a_max * a_max
    bounds = worst_case_bounds(cfg)
    assert exact == bounds["update sum Z"]
    assert min(pairs * rank, UPDATE_CHUNK) * f_max * a_max * a_max == bounds["update partial sum"] <= INT32_MAX
    for t in model.tensors(cfg):
        if t.kind == "matrix":
            assert np.all(Z[t.name] == -exact), t.name
        else:
            assert np.all(Z[t.name] == pairs * f_max * 78), t.name


def test_momentum_decays_symmetrically_and_spends_on_moves():
    """M <- M - sign(M)(|M| >> k) + Z; a weight that moves has the threshold taken off its M, and a
    weight that does not move keeps its evidence."""
    cfg = tiny_config(population=2 * 64, momentum_shift=2)
    params = model.init_params(cfg)
    momentum = es.init_momentum(cfg, params)
    assert set(momentum) == set(params) and all(m.dtype == np.int32 for m in momentum.values())
    f = np.ones(cfg.pairs, dtype=np.int32)
    thr_matrix, _ = es.thresholds(cfg, 0, f)
    name = "head"
    start = np.array([-9, 9, -1, 1, 0, 0], dtype=np.int32)
    momentum[name].flat[:6] = start
    Z = {k: np.zeros(v.shape, dtype=np.int32) for k, v in params.items()}
    Z[name].flat[4] = thr_matrix + 5  # passes the threshold: moves up, keeps 5
    Z[name].flat[5] = -thr_matrix  # equal to the threshold: does not move
    before = params[name].copy()
    moved = es.update(params, cfg, 0, f, Z, momentum)
    m = momentum[name].flat[:6]
    assert list(m) == [-7, 7, -1, 1, 5, -thr_matrix]  # 9 - (9 >> 2) = 7, symmetric; |1| >> 2 = 0
    assert moved == 1
    assert params[name].flat[4] == min(before.flat[4] + 1, 127) and params[name].flat[5] == before.flat[5]
    assert es.init_momentum(tiny_config(), params) == {}
