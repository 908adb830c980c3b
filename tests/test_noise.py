"""Tests of the counter-based noise: the hash, stream determinism, the value distribution, the rank
scaling and the independence of streams (no shared table, no shifted overlaps)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from intlm import noise
from intlm.noise import (GOLDEN, MASK64, NOISE_MAX, NOISE_MULT, gaussian_from_hash, mix, mix_array, rank_mult,
                         stream, stream_key, uniform32)

N = 100_000
u64 = st.integers(min_value=0, max_value=MASK64)


def unmix(z: int) -> int:
    """Inverse of the splitmix64 finaliser (xorshift inverses and modular inverses of the multipliers)."""
    def unxorshift(y, s):
        x = y
        for _ in range(64 // s + 1):
            x = y ^ (x >> s)
        return x & MASK64

    z = unxorshift(z, 31)
    z = (z * pow(0x94D049BB133111EB, -1, 1 << 64)) & MASK64
    z = unxorshift(z, 27)
    z = (z * pow(0xBF58476D1CE4E5B9, -1, 1 << 64)) & MASK64
    return unxorshift(z, 30)


@settings(max_examples=300, deadline=None)
@given(u64)
def test_mix_is_invertible(z):
    """mix is a bijection of 64-bit integers: an explicit inverse undoes it."""
    assert 0 <= mix(z) <= MASK64
    assert unmix(mix(z)) == z


def test_mix_no_collisions_on_a_sample():
    """10**5 distinct inputs (consecutive and scattered) give 10**5 distinct outputs."""
    rng = np.random.default_rng(0)
    inputs = np.concatenate([np.arange(N // 2, dtype=np.uint64),
                             rng.integers(0, 2 ** 63, N // 2, dtype=np.uint64) * np.uint64(2) + np.uint64(1)])
    assert len(np.unique(inputs)) == N
    assert len(np.unique(mix_array(inputs))) == N


@settings(max_examples=50, deadline=None)
@given(st.lists(u64, min_size=1, max_size=50))
def test_mix_array_equals_mix(values):
    """The vectorised uint64 finaliser equals the Python-int spec element by element."""
    got = mix_array(np.array(values, dtype=np.uint64))
    assert [int(v) for v in got] == [mix(v) for v in values]


def test_mix_avalanche():
    """Flipping one input bit flips about half of the output bits (full avalanche)."""
    rng = np.random.default_rng(1)
    x = rng.integers(0, 2 ** 63, 2000, dtype=np.uint64)
    for bit in (0, 17, 63):
        d = mix_array(x) ^ mix_array(x ^ np.uint64(1 << bit))
        flips = np.unpackbits(d.view(np.uint8)).mean() * 64
        assert 30 < flips < 34


def test_stream_deterministic_and_key_sensitive():
    """Same key, same values; keys differing in any counter give different streams."""
    k = stream_key(1, 2, 3, 4)
    assert k == stream_key(1, 2, 3, 4)
    a = stream(k, 1000)
    assert np.array_equal(a, stream(k, 1000))
    assert a.dtype == np.int8
    for other in (stream_key(2, 2, 3, 4), stream_key(1, 3, 3, 4), stream_key(1, 2, 4, 4), stream_key(1, 2, 3, 5)):
        assert other != k
        assert not np.array_equal(stream(other, 1000), a)


@settings(max_examples=40, deadline=None)
@given(u64, st.integers(0, 2 ** 40), st.integers(0, 300), st.integers(1, 300))
def test_stream_start_equals_slicing(key, start, skip, count):
    """stream(k, n, start=s) == stream(k, s + n)[s:], i.e. elements are a function of their index."""
    longer = stream(key, skip + count, start=start)
    assert np.array_equal(stream(key, count, start=start + skip), longer[skip:])


def test_stream_start_near_counter_wrap():
    """Indices are taken mod 2**64 together with GOLDEN, so a start near the top still works."""
    k = stream_key(0, 1, 2, 3)
    s = (1 << 63) + 5
    assert np.array_equal(stream(k, 4, start=s)[1:], stream(k, 3, start=s + 1))
    assert int(stream(k, 1, start=7)[0]) == int(gaussian_from_hash(np.array([mix(k ^ mix(7 + GOLDEN))],
                                                                             dtype=np.uint64), NOISE_MULT)[0])


@pytest.fixture(scope="module")
def big_stream():
    return stream(stream_key(0, 5, 7, 11), N).astype(np.int64)


def test_values_within_noise_max(big_stream):
    """Every value is within +-NOISE_MAX (78) and the extremes are reachable by the spec."""
    assert np.abs(big_stream).max() <= NOISE_MAX
    assert NOISE_MAX == (1020 * NOISE_MULT + 512) >> 10


def test_mean_and_std(big_stream):
    """Mean 0 and std 16 over 10**5 samples: |mean| < 0.25 (5 standard errors) and std in [15.5, 16.5]."""
    assert abs(big_stream.mean()) < 0.25
    assert 15.5 <= big_stream.std() <= 16.5


def test_roughly_gaussian(big_stream):
    """About 68% within one std and 95% within two (Irwin-Hall of 8 bytes is close to normal)."""
    assert 0.66 < np.mean(np.abs(big_stream) <= 16) < 0.72
    assert 0.94 < np.mean(np.abs(big_stream) <= 32) < 0.97


@settings(max_examples=100, deadline=None)
@given(st.lists(u64, min_size=1, max_size=20), st.integers(1, 200))
def test_distribution_exactly_symmetric(hashes, mult):
    """The complement ~h of a hash (a measure-preserving involution on uniform hashes) gives exactly
    the negated value, so the distribution of noise values is exactly symmetric about 0."""
    h = np.array(hashes, dtype=np.uint64)
    assert np.array_equal(gaussian_from_hash(~h, mult), -gaussian_from_hash(h, mult))


def hash_with_byte_sum(total: int) -> int:
    """A 64-bit hash whose 8 bytes sum to ``total`` (0..2040)."""
    out = 0
    for b in range(8):
        byte = min(255, total)
        total -= byte
        out |= byte << (8 * b)
    return out


@pytest.mark.parametrize("mult", [NOISE_MULT] + [rank_mult(r) for r in (2, 3, 4, 16)] + [1, 64, 77, 200])
def test_value_map_exactly_odd_for_every_centred_sum(mult):
    """Exhaustively over every byte sum c + 1020 (c in -1020..1020): the value of -c is minus the
    value of c, so ties in the scaling (e.g. c = +-256 at mult 78) cannot skew the distribution."""
    h = np.array([hash_with_byte_sum(t) for t in range(2041)], dtype=np.uint64)
    v = gaussian_from_hash(h, mult).astype(np.int64)
    assert np.array_equal(v, -v[::-1])
    assert np.all(np.diff(v) >= 0)  # and non-decreasing in c
    # the largest value, 1020 * mult / 1024 rounded, worked out by hand: mult itself up to 200, where
    # 203,999.99 / 1024 falls to 199
    assert v[-1] == {200: 199}.get(mult, mult) and v[-1] == -v[0]


def test_sample_counts_symmetric(big_stream):
    """Counts of v and -v agree within 5 binomial standard deviations for every v."""
    counts = np.bincount(big_stream + NOISE_MAX, minlength=2 * NOISE_MAX + 1)
    for v in range(1, NOISE_MAX + 1):
        a, b = counts[NOISE_MAX + v], counts[NOISE_MAX - v]
        assert abs(int(a) - int(b)) <= 5 * np.sqrt(a + b) + 3, v


@pytest.mark.parametrize("rank", [1, 2, 4, 16])
def test_rank_mult_keeps_product_std(rank):
    """With factors scaled by rank_mult(r), sum_k a_k b_k over rank r has std ~256 (= 16 * 16), like
    a rank-1 product: within 5% (measured on 50000 sums)."""
    n = 50_000
    m = rank_mult(rank)
    a = stream(stream_key(1, 1, 0, 0), n * rank, m).astype(np.int64).reshape(n, rank)
    b = stream(stream_key(1, 2, 0, 0), n * rank, m).astype(np.int64).reshape(n, rank)
    s = (a * b).sum(axis=1)
    assert abs(s.std() / 256 - 1) < 0.05
    assert abs(s.mean()) < 5 * 256 / np.sqrt(n)


def test_rank_mult_values():
    """rank_mult(r) = floor(78 / r**(1/4)) exactly."""
    for r in range(1, 17):
        m = rank_mult(r)
        assert m ** 4 * r <= NOISE_MULT ** 4 < (m + 1) ** 4 * r


def corr(x, y):
    return float(np.corrcoef(x.astype(np.float64), y.astype(np.float64))[0, 1])


KEY_PAIRS = {
    "tensor": (stream_key(0, 1, 0, 0), stream_key(0, 2, 0, 0)),
    "tensor block": (stream_key(0, (3 << 20) | 0, 0, 0), stream_key(0, (3 << 20) | 1, 0, 0)),
    "step": (stream_key(0, 1, 0, 0), stream_key(0, 1, 1, 0)),
    "pair": (stream_key(0, 1, 5, 0), stream_key(0, 1, 5, 1)),
    "seed": (stream_key(0, 1, 5, 3), stream_key(1, 1, 5, 3)),
    "init vs step": (stream_key(0, 1, noise.INIT_STEP, 0), stream_key(0, 1, 0, 0)),
}


@pytest.mark.parametrize("what", sorted(KEY_PAIRS))
def test_streams_uncorrelated(what):
    """Streams differing in one counter are uncorrelated: |corr| < 0.02 at 10**5 samples, also at
    small lags (std error ~0.003)."""
    k1, k2 = KEY_PAIRS[what]
    x, y = stream(k1, N), stream(k2, N)
    assert abs(corr(x, y)) < 0.02
    for lag in (1, 2, 3, 16):
        assert abs(corr(x[lag:], y[:-lag])) < 0.02
        assert abs(corr(x[lag:], x[:-lag])) < 0.02  # no serial correlation within a stream


def windows(v, n):
    """The set of all length-n windows of v, as bytes."""
    v = np.ascontiguousarray(v, dtype=np.int8)
    return {v[i:i + n].tobytes() for i in range(len(v) - n + 1)}


def test_no_shifted_overlap_between_streams():
    """No window of 12 values of one stream appears anywhere in another (any offsets i, j): streams are
    not windows into one shared sequence. Checked across tensors, steps, pairs and seeds."""
    n, length = 12, 3000
    keys = [stream_key(s, t, st_, p) for s in (0, 1) for t in (1, 2) for st_ in (0, 1) for p in (0, 1, 2)]
    seen = {}
    for k in keys:
        for w in windows(stream(k, length), n):
            assert seen.setdefault(w, k) == k, "two streams share a shifted window"


def test_overlap_detector_catches_a_shared_table():
    """Sanity check of the detector above: windows into one shared sequence at different offsets
    (the defect the hash design avoids) are caught."""
    base = stream(stream_key(0, 0, 0, 0), 10_000)
    a, b = base[100:3100], base[2500:5500]  # like additive seeding: key -> offset into one table
    assert windows(a, 12) & windows(b, 12)


def test_uniform32_range_and_spread():
    """uniform32 gives 32-bit values, deterministic, with a roughly uniform top bit and byte; each
    key's value is the top half of the hash of (key, index), whatever the other keys."""
    k = stream_key(9, 9, 9, 9)
    u = np.array([uniform32([k], i)[0] for i in range(20_000)], dtype=np.int64)
    assert u.min() >= 0 and u.max() < 2 ** 32
    keys = [stream_key(1, 2, 3, p) for p in range(5)]
    assert list(uniform32(keys, 7)) == [mix(key ^ mix(7 + GOLDEN)) >> 32 for key in keys]
    assert list(uniform32(keys[2:3], 7)) == list(uniform32(keys, 7)[2:3])
    assert abs((u >> 31).mean() - 0.5) < 0.02
    counts = np.bincount(u & 255, minlength=256)
    assert counts.min() > 20_000 / 256 * 0.6
