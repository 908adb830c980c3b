"""Each Numba kernel against the reference it names, directly (the end-to-end identity is in
test_backends.py): the noise fill vs noise.stream, the layer norm vs model.layer_norm, the
log-likelihood vs arith.log_likelihood, and the fused perturbed linear vs model.Members.linear, on
random inputs with saturated +-127 values and at the worst cases the config allows."""

import numpy as np
import pytest
from numba import njit
from hypothesis import given, settings
from hypothesis import strategies as st

from intlm import arith, model
from intlm.arith import EXP2, EXP2_BITS, LOG2_FRAC, LOG2_MANTISSA_BITS, matmul_shift
from intlm.config import worst_case_bounds
from intlm.noise import NOISE_MULT, rank_mult, stream, stream_key
from intlm.backends.numba import arith as nb_arith
from intlm.backends.numba.forward import BLOCK_ROWS, _as_rows, _corrections, _layer_norm, _linear
from intlm.backends.numba.gemm import OFFSET, _host_has_avx2, pack
from intlm.backends.numba.noise import fill_streams

from conftest import tiny_config

FEW = settings(max_examples=30, deadline=None)


def saturated(rng, shape, limit=127):
    """Random integers in [-limit, limit], about 20% of them at +-limit."""
    v = rng.integers(-limit, limit + 1, shape)
    sat = rng.random(shape) < 0.2
    v[sat] = rng.choice([-limit, limit], int(sat.sum()))
    return v


# --- noise: fill_streams vs noise.stream -----------------------------------------------------------

@FEW
@given(seed=st.integers(0, 2 ** 63 - 1), step=st.integers(0, 2 ** 40), p0=st.integers(0, 2 ** 30),
       pairs=st.integers(1, 3), count=st.integers(1, 300), rank=st.integers(1, 16),
       ids=st.lists(st.integers(0, (9 << 20) | 4095), min_size=1, max_size=3))
def test_fill_streams_is_noise_stream(seed, step, p0, pairs, count, rank, ids):
    """out[q, b] is stream(stream_key(seed, ids[b], step, p0 + q), count, mult), for the vector and
    the rank-scaled matrix multipliers."""
    for mult in (NOISE_MULT, rank_mult(rank)):
        out = np.empty((pairs, len(ids), count), np.int8)
        fill_streams(seed, np.array(ids, np.int64), step, p0, count, mult, out)
        for q in range(pairs):
            for b, tid in enumerate(ids):
                assert np.array_equal(out[q, b], stream(stream_key(seed, tid, step, p0 + q), count, mult))


# --- layer norm: _layer_norm vs model.layer_norm ---------------------------------------------------

def numba_layer_norm(x, gain):
    """_layer_norm of each row, as the int8 values it stores (it writes value + OFFSET as uint8)."""
    out = np.empty(x.shape, np.uint8)
    for i in range(x.shape[0]):
        _layer_norm(x[i].astype(np.int32), gain[i].astype(np.int32), out[i])
    return out.astype(np.int64) - OFFSET


@FEW
@given(width=st.sampled_from([16, 48, 256, 1024]), seed=st.integers(0, 2 ** 32 - 1))
def test_layer_norm_matches_reference(width, seed):
    """Random rows with saturated entries, rows with one nonzero entry and all-zero rows (divisor
    clamped to 1)."""
    rng = np.random.default_rng(seed)
    x, gain = saturated(rng, (8, width)), saturated(rng, (8, width))
    x[1] = 0
    x[2] = 0
    x[2, rng.integers(width)] = rng.choice([-127, 1, 127])
    assert np.array_equal(numba_layer_norm(x, gain), model.layer_norm(x, gain))


@pytest.mark.parametrize("width", [16, 1024])
def test_layer_norm_worst_cases(width):
    """Every |x| and |gain| at 127 (the largest x * gain * d, config's "layer norm" bound) with
    mixed signs, a row of one 127 among -1s, and gains of 0."""
    cfg = tiny_config(width=width)
    assert 127 * 127 * width == worst_case_bounds(cfg)["layer norm"]
    signs = np.where(np.arange(width) % 3 == 0, -1, 1)
    x = np.stack([np.full(width, 127), 127 * signs, np.r_[127, -np.ones(width - 1, np.int64)], 127 * signs])
    gain = np.stack([np.full(width, 127), -127 * signs, np.full(width, 127), np.zeros(width, np.int64)])
    assert np.array_equal(numba_layer_norm(x, gain), model.layer_norm(x, gain))


# --- log-likelihood: arith kernel vs arith.log_likelihood ------------------------------------------

def numba_log_likelihood(logits, targets):
    return np.array([nb_arith.log_likelihood(row.astype(np.int32), t, EXP2, LOG2_FRAC, EXP2_BITS, LOG2_MANTISSA_BITS)
                     for row, t in zip(logits, targets)])


@FEW
@given(seed=st.integers(0, 2 ** 32 - 1), spread=st.sampled_from([1, 8, 127]))
def test_log_likelihood_matches_reference(seed, spread):
    """Random logits (narrow to full range, saturated entries) and targets."""
    rng = np.random.default_rng(seed)
    logits = saturated(rng, (16, 256), spread)
    targets = rng.integers(0, 256, 16)
    assert np.array_equal(numba_log_likelihood(logits, targets), arith.log_likelihood(logits, targets))


def test_log_likelihood_worst_cases():
    """All logits equal (at -127, 0 and 127), one at 127 among -127s with the target on it or off it
    (the smallest and largest log-likelihoods), and every target of one row."""
    rows = [np.full(256, v) for v in (-127, 0, 127)]
    one_top = np.full(256, -127)
    one_top[17] = 127
    rows += [one_top, one_top]
    targets = [0, 100, 255, 17, 18]
    ramp = np.arange(256) - 128
    ramp[0] = -127
    rows += [ramp] * 256
    targets += list(range(256))
    logits = np.stack(rows)
    assert np.array_equal(numba_log_likelihood(logits, targets), arith.log_likelihood(logits, np.array(targets)))


def _exp2_sum_rows(kernel):
    @njit
    def rows(logits):
        out = np.empty(logits.shape[0], np.int64)
        for i in range(logits.shape[0]):
            row = logits[i]
            out[i] = kernel(row, row.max(), EXP2)
        return out

    return rows


EXP2_SUMS = {"generic": _exp2_sum_rows(nb_arith._exp2_sum_generic), "avx2": _exp2_sum_rows(nb_arith._exp2_sum_avx2)}


@pytest.mark.parametrize("kind", sorted(EXP2_SUMS))
@FEW
@given(seed=st.integers(0, 2 ** 32 - 1), spread=st.sampled_from([1, 8, 127]))
def test_exp2_sum_is_the_table_sum(kind, seed, spread):
    """The softmax denominator, both kernels, against the table's sum, on random rows (narrow to the
    full range, saturated) and the extremes: one logit 254 above the others, all equal at -127 and 127."""
    if kind == "avx2" and not _host_has_avx2():
        pytest.skip("AVX2 kernel not tested: this CPU has no AVX2")
    rng = np.random.default_rng(seed)
    rows = [saturated(rng, (16, 256), spread), np.full((2, 256), -127), np.full((1, 256), 127)]
    rows[1][0, rng.integers(256)] = 127
    logits = np.concatenate(rows).astype(np.int32)
    want = EXP2[logits - logits.max(axis=1, keepdims=True) + 255].astype(np.int64).sum(axis=1)
    assert np.array_equal(EXP2_SUMS[kind](logits), want)


# --- the fused perturbed linear: _linear vs model.Members.linear -----------------------------------

def run_linear(weight, blk, x, noise, sigma, perturbed):
    """_linear on rows x (rows <= BLOCK_ROWS, int8 values) of block ``blk`` of ``weight`` (blocks, m, n),
    row b as member b of the population (pair b // 2, + for even b), as _run_block calls it."""
    rows, n = x.shape
    m = weight.shape[1]
    r = noise[0].shape[-1]
    offset = np.zeros((BLOCK_ROWS, n), np.uint8)
    offset[:rows] = x + OFFSET
    pairs, signs = np.zeros(BLOCK_ROWS, np.int64), np.zeros(BLOCK_ROWS, np.int64)
    if perturbed:
        pairs[:rows], signs[:rows] = np.arange(rows) // 2, 1 - 2 * (np.arange(rows) % 2)
    (a, _), (b, b_corr) = _as_rows(noise[0]), _as_rows(noise[1])
    corr = _corrections({"w": weight}, ["w"])["w"]
    y = np.zeros((BLOCK_ROWS, corr.shape[1]), np.int32)
    _linear(offset, rows, pack(weight).reshape(-1), corr, blk, (a, b, b_corr), pairs, signs, sigma,
            matmul_shift(n), np.zeros((BLOCK_ROWS, r), np.int32), np.zeros((2, max(m, 256)), np.int32), y)
    return y[:rows, :m]


def reference_linear(weight, blk, x, noise, sigma, perturbed):
    cfg = tiny_config(sigma_shift=sigma)
    members = model.Members({"w": noise} if perturbed else None, cfg, x.shape[0])
    return members.linear("w", weight, x.astype(np.int64), blk)


def noise_max(rank):
    return (1020 * rank_mult(rank) + 512) >> 10


SHAPES = [(16, 16), (48, 32), (256, 16), (32, 128), (16, 1024)]


@FEW
@given(shape=st.sampled_from(SHAPES), rank=st.integers(1, 4), sigma=st.integers(0, 8), rows=st.integers(1, BLOCK_ROWS),
       perturbed=st.booleans(), seed=st.integers(0, 2 ** 32 - 1))
def test_linear_matches_members_linear(shape, rank, sigma, rows, perturbed, seed):
    """Random saturated weights, inputs and noise, any row count (even where perturbed: members come in
    pairs), perturbed or not, on the second block of a stacked weight."""
    rows += rows % 2 if perturbed else 0
    rng = np.random.default_rng(seed)
    m, n = shape
    weight = saturated(rng, (2, m, n)).astype(np.int8)
    x = saturated(rng, (rows, n))
    pairs = -(-rows // 2)
    nm = noise_max(rank)
    noise = (saturated(rng, (pairs, 2, m, rank), nm).astype(np.int8),
             saturated(rng, (pairs, 2, n, rank), nm).astype(np.int8))
    got = run_linear(weight, 1, x, noise, sigma, perturbed)
    assert np.array_equal(got, reference_linear(weight, 1, x, noise, sigma, perturbed))


@pytest.mark.parametrize("rank", [1, 3, 16])
@pytest.mark.parametrize("shape", [(16, 1024), (256, 8192)], ids=["n1024", "n8192"])
def test_linear_worst_cases(shape, rank):
    """Every input, weight and noise factor at its largest magnitude, signs aligned so that x . W^T,
    x . B and the low-rank term are as large as the config allows (up to the widest input, the MLP's
    1024 * 8), and with signs flipped; sigma 0 (the largest low-rank term) and 8."""
    m, n = shape
    nm = noise_max(rank)
    for sign in (1, -1):
        x = np.full((4, n), 127 * sign)
        x[2:] *= -1
        weight = np.full((1, m, n), 127, np.int8)
        noise = (np.full((2, 1, m, rank), nm, np.int8), np.full((2, 1, n, rank), nm * sign, np.int8))
        for sigma in (0, 8):
            for perturbed in (True, False):
                got = run_linear(weight, 0, x, noise, sigma, perturbed)
                assert np.array_equal(got, reference_linear(weight, 0, x, noise, sigma, perturbed)), (sign, sigma)
