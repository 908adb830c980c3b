"""Property tests of the integer primitives, the tables, the softmax log-likelihood, the layer norm
and the int32 worst-case bounds of the config."""

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from intlm import es, model
from intlm.arith import (EXP2, EXP2_BITS, EXP2_NEG, LOG2_FRAC, TAIL_Q31, clip8, div_round, graded,
                         int_log2_q8,
                         iroot, isqrt, log_likelihood, matmul_shift, rshift_round)
from intlm.config import (FITNESS_MODES, INT32_MAX, INT64_ACCUMULATORS, INT64_MAX, POPULATION_MAX, RANK_LEVELS,
                          Config, worst_case_bounds)
from intlm.errors import IntlmError
from intlm.noise import NOISE_MAX, NOISE_MULT, rank_mult

from conftest import tiny_config

ints = st.integers(min_value=-(1 << 40), max_value=1 << 40)
FEW = settings(max_examples=150, deadline=None)


# --- clip8 ---------------------------------------------------------------------------------------

@FEW
@given(ints)
def test_clip8_range_and_idempotent(x):
    """clip8 lands in [-127, 127], is the identity there, and clipping twice changes nothing."""
    c = int(clip8(np.int64(x)))
    assert -127 <= c <= 127
    assert int(clip8(np.int64(c))) == c
    if -127 <= x <= 127:
        assert c == x
    else:
        assert c == (127 if x > 0 else -127)


@FEW
@given(ints, ints)
def test_clip8_monotonic(x, y):
    """x <= y implies clip8(x) <= clip8(y)."""
    if x > y:
        x, y = y, x
    assert clip8(np.int64(x)) <= clip8(np.int64(y))


def test_clip8_never_makes_minus_128():
    """The int8 value -128 is never produced, even from -128 itself."""
    a = np.arange(-300, 300)
    assert clip8(a).min() == -127
    assert clip8(np.array([-128], dtype=np.int64))[0] == -127


# --- rshift_round --------------------------------------------------------------------------------

@FEW
@given(ints, st.integers(min_value=0, max_value=30))
def test_rshift_round_is_round_half_up(x, s):
    """rshift_round(x, s) == floor(x / 2**s + 1/2) exactly, on Python ints and on int64 arrays."""
    exact = math.floor(Fraction(x, 1 << s) + Fraction(1, 2))
    assert rshift_round(x, s) == exact
    assert int(rshift_round(np.array([x], dtype=np.int64), s)[0]) == exact


@FEW
@given(ints, ints, st.integers(min_value=0, max_value=20))
def test_rshift_round_monotonic(x, y, s):
    """Rounding shifts keep order."""
    if x > y:
        x, y = y, x
    assert rshift_round(x, s) <= rshift_round(y, s)


def test_rshift_round_ties_go_up():
    """Exact halves round towards +infinity on both signs (the documented rule)."""
    assert rshift_round(8, 4) == 1 and rshift_round(-8, 4) == 0
    assert rshift_round(24, 4) == 2 and rshift_round(-24, 4) == -1


# --- div_round -----------------------------------------------------------------------------------

@FEW
@given(ints, st.integers(min_value=1, max_value=1 << 30))
def test_div_round_half_away_from_zero(num, den):
    """div_round(num, den) is num/den rounded to nearest, halves away from zero (den > 0)."""
    q = Fraction(num, den)
    mag = math.floor(abs(q) + Fraction(1, 2))
    exact = -mag if q < 0 else mag
    assert int(div_round(np.int64(num), den)) == exact
    assert abs(Fraction(int(div_round(np.int64(num), den))) - q) <= Fraction(1, 2)


@FEW
@given(ints, st.integers(min_value=1, max_value=1 << 30))
def test_div_round_odd_symmetric(num, den):
    """div_round(-num, den) == -div_round(num, den)."""
    assert int(div_round(np.int64(-num), den)) == -int(div_round(np.int64(num), den))


def test_div_round_ties():
    """Exact halves go away from zero on both signs; below-half rounds to 0."""
    assert list(div_round(np.array([5, -5, 15, -15, 4, -4]), 10)) == [1, -1, 2, -2, 0, 0]


@FEW
@given(st.integers(-(1 << 40), 1 << 40), st.integers(-(1 << 40), 1 << 40), st.integers(1, 1 << 20),
       st.integers(1, 16))
def test_graded_is_the_clipped_rounded_ratio(x, y, scale, levels):
    """graded(x, scale, levels) = sign(x) min(levels, round(levels |x| / scale)), halves up on the
    magnitude: odd, within [-levels, levels], 0 only below half a level, monotonic; int64 sums of the
    largest training differences (2**40 here) do not overflow it."""
    exact = min(levels, math.floor(Fraction(levels * abs(x), scale) + Fraction(1, 2)))
    g = int(graded(x, scale, levels))
    assert g == (exact if x >= 0 else -exact)
    assert int(graded(-x, scale, levels)) == -g
    assert (g == 0) == (2 * levels * abs(x) < scale)
    if x <= y:
        assert g <= int(graded(y, scale, levels))


# --- matmul_shift --------------------------------------------------------------------------------

@FEW
@given(st.integers(min_value=1, max_value=1 << 20))
def test_matmul_shift_brackets_16_sqrt_n(n):
    """2**(shift - 1/2) < 16 sqrt(n) <= 2**(shift + 1/2): the shift is log2(16 sqrt n) rounded, in integers."""
    s = matmul_shift(n)
    assert (1 << (2 * s - 1)) < 256 * n <= (1 << (2 * s + 1))


@pytest.mark.parametrize("k", range(0, 21))
def test_matmul_shift_within_sqrt2_for_powers_of_two(k):
    """For n a power of two, |shift - log2(16 sqrt n)| <= 1/2 (a factor sqrt(2)); exact for powers of 4."""
    n = 1 << k
    s = matmul_shift(n)
    target = 4 + k / 2
    assert abs(s - target) <= 0.5
    if k % 2 == 0:
        assert s == target


VALID_MATMUL_N = sorted({w * r for w in range(16, 1025, 16) for r in range(1, 9)})


def test_matmul_shift_within_sqrt2_for_every_valid_width():
    """The docstring / design claim: within a factor sqrt(2) of 16 sqrt(n) for every width or hidden size."""
    bad = [n for n in VALID_MATMUL_N if abs(matmul_shift(n) - math.log2(16 * math.sqrt(n))) > 0.5]
    assert not bad, f"{len(bad)} valid sizes, first {bad[:5]}"


# --- iroot ---------------------------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=1 << 600), st.integers(min_value=1, max_value=20))
def test_iroot_exact(x, k):
    """r = iroot(x, k) satisfies r**k <= x < (r+1)**k, over big ints."""
    r = iroot(x, k)
    assert r ** k <= x < (r + 1) ** k


@FEW
@given(st.integers(min_value=0, max_value=1 << 200), st.integers(min_value=1, max_value=12))
def test_iroot_of_perfect_powers(r, k):
    """iroot(r**k, k) == r and iroot(r**k - 1, k) == r - 1 (no off-by-one at exact powers)."""
    assert iroot(r ** k, k) == r
    if r > 0:
        assert iroot(r ** k - 1, k) == r - 1


# --- tables --------------------------------------------------------------------------------------

def test_exp2_table_exact():
    """EXP2[u] == floor(2**(6 + u/16)), checked by integer powers: E**16 <= 2**(96+u) < (E+1)**16."""
    assert EXP2_BITS == 6 and EXP2.shape == (256,)
    for u in range(256):
        e = int(EXP2[u])
        assert e ** 16 <= 2 ** (96 + u) < (e + 1) ** 16, u


def test_exp2_vocab_sum_fits_int32():
    """256 * EXP2[255] < 2**31, so the sum over the whole vocabulary fits int32."""
    assert 256 * int(EXP2[255]) < 2 ** 31
    assert np.all(np.diff(EXP2.astype(np.int64)) > 0)


def test_exp2_neg_table_exact():
    """EXP2_NEG[k] == floor(2**16 * 2**(-k/16)) == floor(2**((256-k)/16)), by integer powers."""
    assert EXP2_NEG.shape == (256,) and EXP2_NEG[0] == 1 << 16
    for k in range(256):
        e = int(EXP2_NEG[k])
        assert e ** 16 <= 2 ** (256 - k) < (e + 1) ** 16, k


def test_log2_frac_table():
    """LOG2_FRAC[m] is within 0.5 of 256*log2(1 + m/1024) (it is the rounded value)."""
    ref = 256 * np.log2(1 + np.arange(1024) / 1024)
    assert LOG2_FRAC.shape == (1024,)
    assert np.max(np.abs(LOG2_FRAC - ref)) <= 0.5 + 1e-9
    assert np.all(np.diff(LOG2_FRAC) >= 0)


def test_tail_table_matches_erfc():
    """TAIL_Q31[z] is within 2 units of 2**31 * P(|N(0,1)| > z/16) = 2**31 erfc(z / (16 sqrt 2))."""
    assert TAIL_Q31.shape == (128,)
    for z in range(128):
        ref = 2 ** 31 * math.erfc(z / 16 / math.sqrt(2))
        assert abs(int(TAIL_Q31[z]) - ref) <= 2, (z, int(TAIL_Q31[z]), ref)
    assert TAIL_Q31[0] == 2 ** 31


def test_tail_table_decreasing():
    """Strictly decreasing wherever the true tail still falls by more than one unit per 1/16,
    and never increasing (the last entries round to the same tiny values, then 0)."""
    t = TAIL_Q31.astype(np.int64)
    assert np.all(np.diff(t) <= 0)
    ref = np.array([2 ** 31 * math.erfc(z / 16 / math.sqrt(2)) for z in range(128)])
    steep = np.nonzero(-np.diff(ref) > 4)[0]  # steps well above the rounding error
    assert len(steep) > 90
    assert np.all(np.diff(t)[steep] < 0)


# --- int_log2_q8 ---------------------------------------------------------------------------------

def test_int_log2_q8_accuracy_dense():
    """|int_log2_q8(s) - 256 log2 s| <= 1.5 over edges, powers of two and a dense random sample."""
    rng = np.random.default_rng(0)
    s = np.concatenate([np.arange(2 ** 14, 2 ** 14 + 4096), rng.integers(2 ** 14, 2 ** 31, 100_000),
                        2 ** np.arange(14, 31), 2 ** np.arange(15, 32) - 1, [2 ** 31 - 1]])
    err = np.abs(int_log2_q8(s) - 256 * np.log2(s.astype(np.float64)))
    assert err.max() <= 1.5


@FEW
@given(st.integers(min_value=2 ** 14, max_value=2 ** 31 - 1))
def test_int_log2_q8_property(s):
    """Hypothesis-drawn s in [2**14, 2**31): within 1.5/256 bit of 256*log2(s)."""
    exact = 256 * math.log2(s)
    assert abs(int(int_log2_q8(np.array([s]))[0]) - exact) <= 1.5


# --- log_likelihood ------------------------------------------------------------------------------

def float_ll_bits(logits, target):
    """Float log2 softmax of logits in 1/16-bit units: p(v) proportional to 2**(z_v / 16)."""
    z = np.asarray(logits, dtype=np.float64) / 16
    m = z.max(axis=-1, keepdims=True)
    lse = m[..., 0] + np.log2(np.exp2(z - m).sum(axis=-1))
    return np.take_along_axis(z, np.asarray(target)[..., None], axis=-1)[..., 0] - lse


logit_rows = st.tuples(st.integers(-127, 127), st.integers(0, 254), st.integers(0, 2 ** 32 - 1),
                       st.integers(0, 255))


def _logits(lo, span, seed, target):
    rng = np.random.default_rng(seed)
    hi = min(127, lo + span)
    z = rng.integers(lo, hi + 1, (4, 256))
    z[0, :] = hi  # a flat row
    z[1, :] = lo
    z[1, target] = hi  # a peaked row
    return z, np.full(4, target)


@settings(max_examples=200, deadline=None)
@given(logit_rows)
def test_log_likelihood_close_to_float_above_minus_96(row):
    """Within 0.01 bits of the float log-softmax, and never above it by more than 0.01 bits, whenever
    every logit is >= -96 (there each EXP2 weight is >= 256, so its floor costs < 1/256 relative)."""
    lo, span, seed, target = row
    z, t = _logits(lo, span, seed, target)
    keep = z.min(axis=1) >= -96
    assume(keep.any())
    d = log_likelihood(z, t)[keep] / 256 - float_ll_bits(z, t)[keep]
    assert np.all(np.abs(d) <= 0.01), d
    assert np.all(d <= 0.01)


def test_log_likelihood_within_001_bits_everywhere():
    """The brief's bound over the whole logit range, including all logits at -127."""
    worst = -1.0
    for c in range(-127, 128):
        z = np.full((1, 256), c)
        worst = max(worst, float(log_likelihood(z, np.array([0]))[0] / 256 - float_ll_bits(z, np.array([0]))[0]))
    assert worst <= 0.01, worst


def test_log_likelihood_error_bounded_by_002_bits():
    """Over the whole range (all flat levels and random rows) the error is within 0.02 bits."""
    rng = np.random.default_rng(7)
    for c in range(-127, 128):
        z = np.full((1, 256), c)
        d = log_likelihood(z, np.array([5]))[0] / 256 - float_ll_bits(z, np.array([5]))[0]
        assert abs(d) <= 0.02
    z = rng.integers(-127, 128, (2000, 256))
    t = rng.integers(0, 256, 2000)
    assert np.max(np.abs(log_likelihood(z, t) / 256 - float_ll_bits(z, t))) <= 0.02


def test_log_likelihood_worst_case_fits_int32_and_is_right():
    """One logit 127, all others -127, target a -127 one: about -15.9 bits, far inside int32 and
    inside the config's per-byte allowance (64 bits)."""
    z = np.full((1, 256), -127)
    z[0, 3] = 127
    ll = log_likelihood(z, np.array([200]))
    assert ll.dtype == np.int32
    ref = float_ll_bits(z, np.array([200]))[0]
    assert abs(ll[0] / 256 - ref) <= 0.01
    assert -64 * 256 < ll[0] < 0
    # the certain prediction is ~0 bits (never positive by more than rounding)
    ll_best = log_likelihood(z, np.array([3]))
    assert -0.01 * 256 <= ll_best[0] <= 0.01 * 256


def test_log_likelihood_broadcasts_over_leading_axes():
    """Leading axes are batch axes: a (3, 5, 256) call equals the flattened (15, 256) one."""
    rng = np.random.default_rng(1)
    z = rng.integers(-127, 128, (3, 5, 256))
    t = rng.integers(0, 256, (3, 5))
    ll = log_likelihood(z, t)
    assert ll.shape == (3, 5)
    assert np.array_equal(ll.reshape(-1), log_likelihood(z.reshape(15, 256), t.reshape(15)))


# --- layer norm ----------------------------------------------------------------------------------

rows16 = st.lists(st.integers(-127, 127), min_size=16, max_size=16)
gains16 = st.lists(st.integers(-127, 127), min_size=16, max_size=16)


def test_layer_norm_zero_row():
    """An all-zero row gives zeros (the divisor is clamped to 1, never 0)."""
    with np.errstate(all="raise"):
        out = model.layer_norm(np.zeros((2, 16), dtype=np.int64), np.full(16, 16))
    assert np.array_equal(out, np.zeros((2, 16)))


@settings(max_examples=200, deadline=None)
@given(rows16, gains16)
def test_layer_norm_range_symmetry_and_float_agreement(x, g):
    """Output in [-127, 127]; odd in x; equals clip(round(x / mean|x| * g)) of the float formula
    within rounding (<= 1/2 unit, so certainly within 1)."""
    x = np.array([x], dtype=np.int64)
    g = np.array(g, dtype=np.int64)
    out = model.layer_norm(x, g)
    assert out.min() >= -127 and out.max() <= 127
    assert np.array_equal(model.layer_norm(-x, g), -out)
    mean_abs = max(np.abs(x).sum(), 1) / 16
    ref = np.clip(x[0] / mean_abs * g, -127, 127)
    assert np.max(np.abs(out[0] - ref)) <= 0.5 + 1e-9


def test_layer_norm_unit_gain_normalises_mean_abs_to_16():
    """With gain 16 (= 1.0) and no clipping, mean |output| is 16 (1.0) up to rounding."""
    x = np.array([[3, -5, 7, 1, 0, -2, 4, 6, -8, 9, -1, 2, 3, -4, 5, 1]], dtype=np.int64)
    out = model.layer_norm(x, np.full(16, 16))
    assert abs(np.abs(out).mean() - 16) <= 0.5


# --- worst-case bounds and Config.check ----------------------------------------------------------

valid_configs = st.builds(
    Config,
    width=st.sampled_from([16, 32, 48, 64, 128, 256, 512, 1024]),
    layers=st.integers(1, 64),
    mlp_ratio=st.integers(1, 8),
    population=st.integers(1, 1 << 23).map(lambda p: 2 * p),
    rank=st.integers(1, 16),
    window=st.integers(1, 100_000),
    sigma_shift=st.integers(0, 8),
    fitness=st.sampled_from(FITNESS_MODES),
    alpha_q16=st.integers(1, 65536),
    alpha_halflife=st.integers(1, 10 ** 6),
    seed=st.integers(0, (1 << 63) - 1),
    step_shift=st.integers(0, 16),
)


def independent_bounds(cfg):
    """The same worst cases derived directly: max |noise| from the Irwin-Hall extreme c = +-1020."""
    def max_noise(mult):
        return (1020 * mult + 512) >> 10

    a = max_noise(rank_mult(cfg.rank))
    n = max(cfg.width, cfg.mlp_width)
    f = 1 if cfg.fitness == "sign" else RANK_LEVELS
    xb = n * 127 * a
    low = cfg.rank * rshift_round(xb, 4) * a
    return {"x.B": xb, "low-rank term": low, "matmul accumulator": n * 127 * 127 + low,
            "layer norm": 127 * 127 * cfg.width, "update sum Z": cfg.pairs * cfg.rank * f * a * a,
            "update partial sum": min(cfg.pairs * cfg.rank, 1 << 15) * f * a * a,
            "update sum Z (vectors)": cfg.pairs * f * max_noise(NOISE_MULT),
            "momentum M": (cfg.pairs * cfg.rank * f * a * a + 1) << cfg.momentum_shift,
            "window log-likelihood": cfg.window * 4066,
            **optimizer_bounds(cfg, max_noise(NOISE_MULT))}


def optimizer_bounds(cfg, noise_max):
    """sepcma's and cem's sums (optimizers/units.py) and spsa's carried step, from the extremes of
    their inputs."""
    from intlm.optimizers.units import PATH_MAX, RANK_WEIGHT_ONE, SCALE_MAX

    offset = -(-noise_max * SCALE_MAX // 16)  # |z| * scale / 16, rounded away from 0 at worst
    weights = sum(math.prod(t.shape) for t in model.tensors(cfg))
    return {"member offset": offset, "sepcma weighted sums": RANK_WEIGHT_ONE * max(offset, noise_max ** 2),
            "cem elite sums": (cfg.population >> cfg.elite_shift) * offset ** 2,
            "sepcma path norm": PATH_MAX ** 2 * weights,
            # a residual below half a unit of 2**step_shift, plus the largest f times the largest noise
            "spsa carried step": 2 ** cfg.step_shift // 2 + (1 if cfg.fitness == "sign" else RANK_LEVELS) * noise_max}


@settings(max_examples=300, deadline=None)
@given(valid_configs)
def test_check_passes_iff_bounds_fit(cfg):
    """check() passes exactly when every bound fits int32 (the update's sum Z and momentum M: int64),
    and the bounds are never below the true worst cases derived independently (so passing check()
    really means no overflow)."""
    bounds = worst_case_bounds(cfg)
    mine = independent_bounds(cfg)
    for k in bounds:
        assert bounds[k] >= mine[k], k
    assert bounds["update sum Z"] >= mine["update sum Z (vectors)"]
    assert bounds["window log-likelihood"] >= mine["window log-likelihood"]
    limit = {k: INT64_MAX if k in INT64_ACCUMULATORS else INT32_MAX for k in bounds}
    if all(v <= limit[k] for k, v in bounds.items()):
        assert cfg.check() is cfg
        assert all(v <= limit[k] for k, v in mine.items() if k in limit)
    else:
        with pytest.raises(IntlmError, match="overflow int32"):
            cfg.check()


@pytest.mark.parametrize("fitness", FITNESS_MODES)
def test_check_accepts_every_population_to_2_30(fitness):
    """Every update setting takes populations up to 2**20 and beyond: the largest allowed population
    passes at every rank and momentum shift with room to spare in int64; one pair more is refused with
    one line."""
    for rank in (1, 4, 16):
        for k in (0, 3, 8):
            cfg = Config(width=1024, population=POPULATION_MAX, rank=rank, fitness=fitness,
                         momentum_shift=k).check()
            assert worst_case_bounds(cfg)["momentum M"] <= INT64_MAX >> 8
            Config(width=16, population=1 << 20, rank=rank, fitness=fitness, momentum_shift=k).check()
    with pytest.raises(IntlmError) as e:
        Config(width=16, population=POPULATION_MAX + 2, fitness=fitness).check()
    assert "population" in str(e.value) and "\n" not in str(e.value)


def test_momentum_is_int32_exactly_where_it_fits():
    """The momentum is stored in int32 up to the largest population whose worst case fits int32
    (so checkpoints of those settings keep their bytes), in int64 from one pair more."""
    for fitness, f in (("sign", 1), ("rank", RANK_LEVELS)):
        for rank in (1, 4, 16):
            a = rank_mult(rank)
            for k in (1, 3, 8):
                pairs = ((INT32_MAX >> k) - 1) // (rank * f * a * a)
                fits = Config(width=16, population=2 * pairs, rank=rank, fitness=fitness, momentum_shift=k)
                wider = Config(width=16, population=2 * pairs + 2, rank=rank, fitness=fitness, momentum_shift=k)
                assert es.momentum_dtype(fits.check()) == np.int32
                assert es.momentum_dtype(wider.check()) == np.int64


def test_max_noise_is_what_the_bounds_assume():
    """NOISE_MAX and the rank-scaled maxima are attained at c = +-1020 and never exceeded."""
    from intlm.noise import gaussian_from_hash

    extremes = np.array([0, (1 << 64) - 1], dtype=np.uint64)  # all bytes 0 / all bytes 255
    for r in range(1, 17):
        m = rank_mult(r)
        v = gaussian_from_hash(extremes, m)
        assert list(v) == [-((1020 * m + 512) >> 10), (1020 * m + 512) >> 10]
        assert abs(int(v[0])) <= (NOISE_MAX * m + NOISE_MULT - 1) // NOISE_MULT
    assert NOISE_MAX == 78


@pytest.mark.parametrize("rank,mlp_ratio", [(1, 1), (3, 4), (16, 2)])
def test_matmul_accumulator_bound_is_attained(monkeypatch, rank, mlp_ratio):
    """Brute force: x = 127, W = 127, noise factors at their max and sigma shift 0 make the reference's
    pre-shift accumulator of the widest matmul exactly the 'matmul accumulator' bound; the negated
    member with x = -127 reaches exactly minus it, and no matrix of the model exceeds the bound."""
    cfg = tiny_config(rank=rank, mlp_ratio=mlp_ratio, sigma_shift=0, population=2)
    bounds = worst_case_bounds(cfg)
    a_max = (1020 * rank_mult(rank) + 512) >> 10
    monkeypatch.setattr(model, "matmul_shift", lambda n: 0)  # read the raw accumulator
    for t in model.tensors(cfg):
        if t.kind != "matrix" or t.name == "embed":
            continue
        m, n = t.shape[-2:]
        lead = t.shape[:-2]
        w = np.full(t.shape, 127, dtype=np.int8)
        noise = {t.name: (np.full((1,) + lead + (m, rank), a_max, dtype=np.int8),
                          np.full((1,) + lead + (n, rank), a_max, dtype=np.int8))}
        members = model.Members(noise, cfg, 2)
        x = np.full((2, n), 127, dtype=np.int64)
        idx = (0,) * len(lead)
        acc = members.linear(t.name, w, x, *idx)
        expected = n * 127 * 127 + rank * rshift_round(n * 127 * a_max, 4) * a_max
        assert np.all(acc[0] == expected)
        assert np.all(np.abs(acc) <= bounds["matmul accumulator"])
        assert np.all(np.abs(acc) <= INT32_MAX)
        if n == max(cfg.width, cfg.mlp_width):
            assert np.all(acc[0] == bounds["matmul accumulator"]), t.name
        # also x = -127 with W = 127 and the perturbation of the minus member: the negative extreme
        acc_neg = members.linear(t.name, w, -x, *idx)
        assert np.all(acc_neg[0] == -expected)


def test_layer_norm_bound_is_attained():
    """|x * g * d| for x = g = 127 equals the 'layer norm' bound and the norm handles it."""
    cfg = tiny_config()
    x = np.full((1, cfg.width), 127, dtype=np.int64)
    assert int(np.max(np.abs(x * 127 * cfg.width))) == worst_case_bounds(cfg)["layer norm"]
    assert np.all(model.layer_norm(x, np.full(cfg.width, 127)) == 127)


@settings(max_examples=200, deadline=None)
@given(x=st.integers(0, 2 ** 200))
def test_isqrt_is_iroot_2(x):
    """isqrt (the standard library's) equals the integer Newton root of this module, over big ints."""
    assert isqrt(x) == iroot(x, 2)
