"""The context tables (intlm/context.py): the row a history reads, the rows a window reads, zero
tables changing nothing, the sparse update sums and the update (reference properties, and the Numba
kernels against them at worst-case values), the settings they refuse."""

import dataclasses
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from intlm import context, es, model
from intlm.backends.numba import context as numba_context
from intlm.config import CONTEXT_BITS, CONTEXT_DECAY, CONTEXT_ORDERS, INT32_MAX, LINEAR_SPAN, RANK_LEVELS, worst_case_bounds
from intlm.errors import IntlmError
from intlm.noise import NOISE_MAX, rank_mult

from conftest import random_params, random_state, random_tokens, tiny_config


@given(bits=st.integers(*CONTEXT_BITS), order=st.integers(*CONTEXT_ORDERS), seed=st.integers(0, 2 ** 32 - 1))
@settings(max_examples=20, deadline=None)
def test_row_index_range_and_numba(bits, order, seed):
    """Every history maps into the table, the same in Numba; only the last ``order`` bytes count; the
    map spreads (65536 histories reach at least half of min(rows, 65536) rows); orders hash apart."""
    rng = np.random.default_rng(seed)
    hist = rng.integers(0, 256, (1 << 16, 8))
    hist[:, :2] = np.stack(np.divmod(np.arange(1 << 16), 256), axis=1)  # every last two bytes
    rows = context.row_index(hist, order, bits)
    assert rows.min() >= 0 and rows.max() < 1 << bits
    assert len(np.unique(rows)) >= min(1 << bits, 1 << 16) // 2
    changed = hist.copy()
    changed[:, order:] = rng.integers(0, 256, changed[:, order:].shape)
    assert np.array_equal(context.row_index(changed, order, bits), rows)
    salt = np.uint64(context.order_salt(order))
    assert [numba_context.row_index(h, order, salt, bits) for h in hist[::4099]] == rows[::4099].tolist()
    if order < 8 and bits >= 12:  # the same bytes in two orders' tables land on unrelated rows
        assert np.mean(context.row_index(hist, order + 1, bits) == rows) < 0.01


def test_stored_bytes_round_trip():
    b = np.arange(256)
    s = context.stored_byte(b)
    assert s.min() >= -128 and s.max() <= 127 and s[0] == 0
    assert np.array_equal(context.read_bytes(s.astype(np.int8)), b)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), layers=st.integers(1, 2), order=st.integers(2, 4))
def test_zero_tables_change_nothing(seed, layers, order, numba_backend):
    """Zero tables (how a run starts) give the log-likelihoods and GRU states of the model without them."""
    rng = np.random.default_rng(seed)
    plain = tiny_config(layers=layers, window=9)
    with_tables = tiny_config(layers=layers, window=9, context_bits=8, context_order=order)
    params = random_params(plain, rng)
    tokens = random_tokens(3, 12, rng)
    state = random_state(with_tables, 3, rng)
    a, b = state[:, :layers].copy(), state.copy()
    ll_plain = numba_backend.forward(params, plain, tokens, a)
    zero = np.zeros((order - 1, 256, 16), np.int8)
    ll_tables = numba_backend.forward({**params, context.NAME: zero}, with_tables, tokens, b)
    assert np.array_equal(ll_plain, ll_tables)
    assert np.array_equal(a, b[:, :layers])


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), order=st.integers(2, 4))
def test_rows_read_are_the_rows_the_forward_reads(seed, order, numpy_backend, numba_backend):
    """A row changes a stream's log-likelihoods exactly when rows_read says the stream read it:
    rows_read (which the update uses) and the forward agree, the bytes before from the state included."""
    rng = np.random.default_rng(seed)
    cfg = tiny_config(window=6, context_bits=8, context_order=order)
    params = random_params(cfg, rng)
    params[context.NAME][...] = 0
    tokens = random_tokens(4, 7, rng, zero_rate=0.2)
    state = random_state(cfg, 4, rng)
    reads, after = context.rows_read(cfg, tokens, state[:, cfg.layers])
    assert reads.shape == (4, 6, order - 1)
    moved_on = state.copy()
    base = numpy_backend.forward(params, cfg, tokens, moved_on)
    assert np.array_equal(moved_on[:, cfg.layers, :order - 1], after)  # the bytes before, as the forward leaves them
    reset = (tokens[:, :-1] == 0).any(axis=1)  # a 0 byte zeroes the whole state, the slots past the bytes too
    rest = moved_on[:, cfg.layers, order - 1:]
    assert not rest[reset].any() and np.array_equal(rest[~reset], state[~reset, cfg.layers, order - 1:])
    fast = numba_backend.rows_read(cfg, tokens, state[:, cfg.layers])
    assert np.array_equal(fast[0], reads) and np.array_equal(fast[1], after)
    for table in range(order - 1):
        for row in np.unique(np.concatenate([reads[:, 0, table], rng.integers(0, 256, 2)])):
            changed = {k: v.copy() for k, v in params.items()}
            changed[context.NAME][table, row] = 100
            ll = numpy_backend.forward(changed, cfg, tokens, state.copy())
            # a read row changes the prediction of the byte after it (a row of 100 moves x far)
            for s in range(4):
                first = np.nonzero(reads[s, :, table] == row)[0]
                if first.size:
                    assert not np.array_equal(ll[s, first[0]:], base[s, first[0]:])
                    assert np.array_equal(ll[s, :first[0]], base[s, :first[0]])
                else:
                    assert np.array_equal(ll[s], base[s])


def dense(cfg, sums):
    """The sums of the rows read as whole tables: (Z (tables, rows, width), S (tables, rows, parts)),
    zero where no pair read; and checks the list is ascending, without repeats, of rows with a part's
    S > 0."""
    read, z, s = sums
    shape = context.tables(cfg).shape
    assert read.dtype == z.dtype == s.dtype == np.int64 and z.shape == (len(read), shape[2])
    assert s.shape == (len(read), context.parts(cfg)) and (s >= 0).all() and (s > 0).any(axis=1).all()
    flat = read[:, 0] * shape[1] + read[:, 1]
    assert (np.diff(flat) > 0).all()
    Z, S = np.zeros(shape, np.int64), np.zeros(shape[:2] + (context.parts(cfg),), np.int64)
    Z[read[:, 0], read[:, 1]], S[read[:, 0], read[:, 1]] = z, s
    return Z, S


def assert_sums_equal(a, b):
    assert all(np.array_equal(u, v) for u, v in zip(a, b))


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), rank=st.integers(1, 3), pop=st.sampled_from([2, 8, 40]),
       window=st.integers(1, 9), order=st.integers(2, 3))
def test_sparse_sums(seed, rank, pop, window, order, numpy_backend):
    """Z and S count each pair once for each row its window read, and nothing else: S_j is the sum of
    f_p^2 over those pairs; a row no pair read has Z = S = 0; a pair's sums do not change when its
    window reads a row again; Numba equals the reference."""
    rng = np.random.default_rng(seed)
    cfg = tiny_config(rank=rank, population=pop, window=window, context_bits=8, context_order=order, fitness="rank")
    noise = numpy_backend.make_noise(cfg, int(rng.integers(0, 1 << 40)))[context.NAME]
    f = rng.integers(-8, 9, cfg.pairs).astype(np.int32)
    reads = rng.integers(0, 12, (cfg.pairs, window, order - 1))  # few rows: many repeats
    sums = context.update_sums(cfg, noise, f, reads)
    assert_sums_equal(sums, numba_context.update_sums(cfg, noise, f, reads))
    Z, S = dense(cfg, sums)
    for table in range(order - 1):
        want = np.zeros(256, np.int64)
        for p in range(cfg.pairs):
            for row in set(reads[p, :, table].tolist()):
                want[row] += int(f[p]) ** 2
        assert np.array_equal(S[table, :, 0], want)
        unread = np.setdiff1d(np.arange(256), reads[:, :, table])
        assert not Z[table, unread].any() and not S[table, unread].any()
    doubled = np.concatenate([reads, reads], axis=1)
    assert_sums_equal(sums, context.update_sums(cfg, noise, f, doubled))
    assert np.abs(Z).max(initial=0) <= worst_case_bounds(cfg)["update sum Z"]


def credit_by_hand(cfg, f, reads, local):
    """context.credit, one read at a time; graded credit in exact fractions."""
    pairs, T, n = reads.shape
    out = np.zeros((pairs, T, n, context.parts(cfg)), np.int64)
    for p in range(pairs):
        mean = max(1, int(np.abs(local[p]).sum()) // T) if local is not None else 1

        def grade(x, count):  # x, a sum over ``count`` bytes: sign(x) * min(8, round(8 |x| / (3 mean isqrt(count))))
            if cfg.context_credit == "reads":
                return np.sign(x)
            level = min(RANK_LEVELS, math.floor(Fraction(RANK_LEVELS * abs(int(x)), LINEAR_SPAN * mean * math.isqrt(count))
                                                + Fraction(1, 2)))
            return int(np.sign(x)) * level
        for i in range(n):
            for t in range(T):
                row = reads[p, t, i]
                if row in reads[p, :t, i]:
                    continue
                if local is None:
                    out[p, t, i] = f[p]
                    continue
                out[p, t, i, 0] = grade(local[p, t:].sum(), T - t)
                if cfg.context_logits:
                    out[p, t, i, 1] = grade(local[p][reads[p, :, i] == row].sum(), 1)
    return out


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), pop=st.sampled_from([2, 8, 40]), window=st.integers(1, 12),
       order=st.integers(2, 4), logits=st.integers(0, 1), rank=st.integers(1, 2),
       credit=st.sampled_from(["reads", "graded"]), spread=st.sampled_from([3, 1 << 20]))
def test_reads_credit(seed, pop, window, order, logits, rank, credit, spread, numpy_backend):
    """Reads credit counts a pair once per row, at its first read: the input entries get the sign of
    the pair's differences from that byte on, the logit entries the sign of the differences at the
    bytes that read the row (graded credit: each sum graded by its size against the pair's mean
    difference); the sums built on it equal Numba's. Changing a difference at a byte before a row's
    first read, or (logit entries) at a byte that does not read it, leaves its reads credit alone
    (graded credit's scale is the pair's, so only the other pairs' credit stays); window credit
    ignores the differences."""
    rng = np.random.default_rng(seed)
    cfg = tiny_config(rank=rank, population=pop, window=window, context_bits=8, context_order=order,
                      context_logits=logits, context_credit=credit)
    f = rng.integers(-8, 9, cfg.pairs).astype(np.int32)
    reads = rng.integers(0, 6, (cfg.pairs, window, order - 1))  # few rows: many repeats
    local = rng.integers(-spread, spread + 1, (cfg.pairs, window))  # small: sums of 0 happen; large: levels clip
    c = context.credit(cfg, f, reads, local)
    assert np.array_equal(c, credit_by_hand(cfg, f, reads, local))
    window_cfg = dataclasses.replace(cfg, context_credit="window")
    assert np.array_equal(context.credit(window_cfg, f, reads, local), credit_by_hand(cfg, f, reads, None))
    noise = numpy_backend.make_noise(cfg, int(rng.integers(0, 1 << 40)))[context.NAME]
    sums = context.update_sums(cfg, noise, f, reads, local)
    assert_sums_equal(sums, numba_context.update_sums(cfg, noise, f, reads, local))
    dense(cfg, sums)  # the list's checks
    p, t = int(rng.integers(0, cfg.pairs)), int(rng.integers(0, window))
    moved = local.copy()
    moved[p, t] += 5
    c2 = context.credit(cfg, f, reads, moved)
    for i in range(order - 1 if credit == "reads" else 0):
        for u in range(window):
            if u > t:  # a first read after the changed byte: its input credit does not see it
                assert np.array_equal(c2[p, u, i, 0], c[p, u, i, 0])
            if logits and reads[p, u, i] != reads[p, t, i]:
                assert c2[p, u, i, 1] == c[p, u, i, 1]
    others = np.arange(cfg.pairs) != p
    assert np.array_equal(c2[others], c[others])


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), credit=st.sampled_from(["reads", "graded"]), order=st.integers(2, 4))
def test_mirrored_credit_takes_each_part_from_its_own_differences(seed, credit, order, numpy_backend):
    """With mirrors, the input entries are credited as reads credit credits them for the first
    differences (member plus mirror) and the logit entries for the second (member minus mirror),
    each graded against its own mean; Numba's sums equal the reference's."""
    rng = np.random.default_rng(seed)
    cfg = tiny_config(population=8, window=7, context_bits=8, context_order=order, context_logits=1,
                      context_credit=credit, context_mirror=1)
    f = rng.integers(-8, 9, cfg.pairs).astype(np.int32)
    reads = rng.integers(0, 5, (cfg.pairs, cfg.window, order - 1))
    ll = rng.integers(-4000, 1, (cfg.population, 2, cfg.window)).astype(np.int32)
    local = context.byte_differences(ll)
    assert local.shape == (cfg.pairs, 2, cfg.window)
    assert np.array_equal(local[:, 0], context.byte_differences(ll[:, 0].astype(np.int64) + ll[:, 1]))
    c = context.credit(cfg, f, reads, local)
    assert np.array_equal(c[..., 0], context.credit(cfg, f, reads, local[:, 0])[..., 0])
    assert np.array_equal(c[..., 1], context.credit(cfg, f, reads, local[:, 1])[..., 1])
    noise = numpy_backend.make_noise(cfg, int(rng.integers(0, 1 << 40)))[context.NAME]
    assert_sums_equal(context.update_sums(cfg, noise, f, reads, local),
                      numba_context.update_sums(cfg, noise, f, reads, local))


@pytest.mark.parametrize("seed", [0, 1])
def test_a_mirror_is_its_member_with_the_logit_perturbation_negated(seed, numpy_backend, numba_backend):
    """Perturbing only the tables' logit entries, a member's mirror is exactly its antithetic partner
    (the mirror of 2p scores as 2p + 1, and the other way round), on NumPy and Numba alike; with the
    other weights perturbed too, a mirror keeps its member's input and state (its scores differ from
    the partner's) and its window fitness is added to its member's."""
    cfg = tiny_config(population=8, window=5, rank=2, context_bits=8, context_order=3, context_logits=1,
                      context_credit="graded", context_mirror=1)
    rng = np.random.default_rng(seed)
    params = random_params(cfg, rng)
    tokens = random_tokens(cfg.pairs, cfg.window + 1, rng)
    state = random_state(cfg, cfg.population, rng)
    state[1::2] = state[0::2]  # a pair's members from one state, as training's mean pair state has them
    noise = numpy_backend.make_noise(cfg, 3)
    logits_only = {k: (v if k == context.NAME else tuple(np.zeros_like(a) for a in v) if isinstance(v, tuple)
                       else np.zeros_like(v)) for k, v in noise.items()}
    keys, b = logits_only[context.NAME]
    b = b.copy()
    b[:, :, :cfg.width] = 0  # the input entries unperturbed
    logits_only[context.NAME] = (keys, b)
    for be in (numpy_backend, numba_backend):
        ll = be.population_fitness(params, cfg, logits_only, tokens, state.copy(), positions=True)
        assert ll.shape == (cfg.population, 2, cfg.window)
        assert np.array_equal(ll[0::2, 1], ll[1::2, 0]) and np.array_equal(ll[1::2, 1], ll[0::2, 0])
        assert not np.array_equal(ll[:, 0], ll[:, 1])
        both = be.population_fitness(params, cfg, noise, tokens, state.copy(), positions=True)
        assert not np.array_equal(both[0::2, 1], both[1::2, 0])
        assert np.array_equal(be.population_fitness(params, cfg, noise, tokens, state.copy()),
                              both.sum(axis=(1, 2)))
        plain = dataclasses.replace(cfg, context_mirror=0)
        assert np.array_equal(both[:, 0], be.population_fitness(params, plain, noise, tokens, state.copy(), positions=True))


def test_mirrored_fitness_is_the_same_on_numpy_and_numba(numpy_backend, numba_backend):
    """Every weight perturbed, a population past one Numba block (32 rows) so its blocks run in
    parallel: the members' and mirrors' log-likelihoods and the carried state are NumPy's."""
    rng = np.random.default_rng(5)
    cfg = tiny_config(population=72, window=4, context_bits=8, context_order=4, context_logits=1,
                      context_credit="graded", context_mirror=1)
    params = random_params(cfg, rng)
    tokens = random_tokens(cfg.pairs, cfg.window + 1, rng)
    state = random_state(cfg, cfg.population, rng)
    noise = numpy_backend.make_noise(cfg, 11)
    out = []
    for be in (numpy_backend, numba_backend):
        s = state.copy()
        out.append((be.population_fitness(params, cfg, noise, tokens, s, positions=True), s))
    assert out[0][0].shape == (cfg.population, 2, cfg.window)
    assert np.array_equal(out[0][0], out[1][0]) and np.array_equal(out[0][1], out[1][1])


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), k=st.integers(*CONTEXT_DECAY), step=st.integers(0, 1 << 20), bits=st.integers(8, 10))
def test_decay_pulls_the_step_slice_toward_zero(seed, k, step, bits):
    """The decay moves only the step's slice of rows, each entry toward zero and never past it, by its
    DECAY_PERIOD steps' worth rounded down or up; Numba's equals the reference's; over DECAY_PERIOD
    steps the slices cover every row once."""
    rng = np.random.default_rng(seed)
    cfg = tiny_config(context_bits=bits, context_order=3, context_logits=1, context_decay=k)
    before = random_params(cfg, rng)[context.NAME]
    after, fast = before.copy(), before.copy()
    moved = context.decay(after, cfg, step)
    assert numba_context.decay(fast, cfg, step) == moved and np.array_equal(fast, after)
    rows = context.decay_rows(cfg, step)
    outside = np.ones(before.shape[1], bool)
    outside[rows] = False
    assert np.array_equal(after[:, outside], before[:, outside])
    w, v = before[:, rows].astype(np.int64), after[:, rows].astype(np.int64)
    assert np.all(np.abs(v) <= np.abs(w)) and np.all(v * w >= 0)
    pull = np.abs(w) - np.abs(v)
    assert np.all(pull <= -(-np.abs(w) * context.DECAY_PERIOD // 2 ** k))  # at most the mean rounded up
    assert np.all(pull >= np.minimum(np.abs(w) * context.DECAY_PERIOD >> k, np.abs(w)))  # at least it rounded down
    assert moved == np.count_nonzero(pull)
    covered = np.zeros(before.shape[1], int)
    for s in range(step, step + context.DECAY_PERIOD):
        covered[context.decay_rows(cfg, s)] += 1
    assert np.all(covered == 1)


def test_decay_is_unbiased():
    """Over every one of its 2**K draws, an entry's pull averages |w| * DECAY_PERIOD / 2**K exactly
    (capped at |w|): the decay's rate is 2**-K a step. Checked by hashing enough entries of one value
    that the mean is within 2% of the exact one."""
    cfg = tiny_config(context_bits=16, context_order=2, context_decay=9)
    table = np.full((1, 1 << 16, 16), 3, np.int8)
    context.decay(table, cfg, 7)
    pulled = 3 - table[0, context.decay_rows(cfg, 7)].astype(np.int64)
    assert abs(pulled.mean() - 3 * context.DECAY_PERIOD / 2 ** 9) < 0.02 * 3 * context.DECAY_PERIOD / 2 ** 9


@pytest.mark.parametrize("rank", [1, 2, 16])
def test_sums_at_extreme_noise(rank, numpy_backend):
    """B at its largest magnitude, f at 8 for every pair and every window reading one row: Numba, which
    sums in int64, equals the reference at rank 1, 2 and the largest, 16, and the sums stay within the
    config's "update sum Z" bound (a table's terms are bounded like a matrix's)."""
    cfg = tiny_config(rank=rank, population=16, context_bits=8, context_order=3, fitness="rank")
    keys, b = numpy_backend.make_noise(cfg, 0)[context.NAME]
    a = context.factor_a(cfg, keys, np.zeros(keys.shape, np.int64))
    assert np.max(np.abs(a)) <= (NOISE_MAX * rank_mult(cfg.rank) + 77) // 78
    f = np.full(cfg.pairs, 8, np.int32)
    big = (NOISE_MAX * rank_mult(cfg.rank) + 77) // 78
    b_ext = np.where(b >= 0, big, -big).astype(np.int8)
    reads = np.zeros((cfg.pairs, cfg.window, 2), np.int64)
    sums = context.update_sums(cfg, (keys, b_ext), f, reads)
    assert_sums_equal(sums, numba_context.update_sums(cfg, (keys, b_ext), f, reads))
    Z, S = dense(cfg, sums)
    assert 0 < np.abs(Z).max() <= worst_case_bounds(cfg)["update sum Z"]
    assert (S[:, 0, 0] == 64 * cfg.pairs).all() and not S[:, 1:].any()


@settings(max_examples=25, deadline=None)
@given(momentum_shift=st.integers(0, 8), seed=st.integers(0, 2 ** 32 - 1), z_q4=st.integers(1, 127),
       logits=st.integers(0, 1))
def test_update_matches_numba_and_leaves_unread_rows(momentum_shift, seed, z_q4, logits):
    """From saturated weights, momentum at its bound and Z at the sum bound: the Numba update equals
    the reference (weights, momentum, moves); a row part with S = 0 (unread, or with context logits
    its input or logit entries alone) keeps its weights and momentum; a read part moves by at most
    one, towards the sign of its evidence, only past its own threshold."""
    cfg = tiny_config(momentum_shift=momentum_shift, population=16, rank=2, context_bits=8, context_order=3,
                      context_logits=logits, fitness="rank")
    rng = np.random.default_rng(seed)
    bounds = worst_case_bounds(cfg)
    zmax, mmax = bounds["update sum Z"], min(bounds["momentum M"], INT32_MAX)
    shape = context.tables(cfg).shape
    param = rng.choice([-127, -1, 0, 1, 127], shape).astype(np.int8)
    Z = rng.integers(-zmax, zmax + 1, shape)
    parts = context.parts(cfg)
    S = np.where(rng.random(shape[:2] + (parts,)) < 0.5, 0, rng.integers(1, 64 * cfg.pairs + 1, shape[:2] + (parts,)))
    mom = rng.integers(-mmax, mmax + 1, shape).astype(es.momentum_dtype(cfg)) if momentum_shift else None
    p_ref, p_nb = param.copy(), param.copy()
    m_ref = None if mom is None else mom.copy()
    m_nb = None if mom is None else mom.copy()
    table, row = np.nonzero(S.any(axis=2))
    sums = np.stack([table, row], axis=1), Z[table, row], S[table, row]
    moved = context.update(p_ref, cfg, z_q4, *sums, m_ref)
    assert numba_context.update(p_nb, cfg, z_q4, *sums, m_nb) == moved
    assert np.array_equal(p_ref, p_nb)
    S_entry = S[:, :, context.part_of(cfg, shape[2])]  # each entry's part's S
    unread = S_entry == 0
    assert np.array_equal(p_ref[unread], param[unread])
    evidence = Z if mom is None else mom.astype(np.int64) - np.sign(mom) * (np.abs(mom.astype(np.int64)) >> momentum_shift) + Z
    thr = context.thresholds(z_q4, momentum_shift, S_entry)
    assert (thr[~unread] > 0).all()
    want = np.where(unread, 0, np.where(np.abs(evidence) > thr, np.sign(evidence), 0))
    assert np.array_equal(p_ref.astype(np.int64), np.clip(param.astype(np.int64) + want, -127, 127))
    assert moved == np.count_nonzero(want)
    if mom is not None:
        assert np.array_equal(m_ref, m_nb)
        assert np.array_equal(m_ref[unread], mom[unread])
        assert np.abs(m_ref.astype(np.int64)).max() <= bounds["momentum M"]


def test_thresholds_grow_with_the_read_pairs():
    """The threshold is the dense z-test's with S in place of sum f^2: proportional to sqrt(S)."""
    t = context.thresholds(32, 3, np.array([1, 4, 16, 64]))
    assert t[1] in (2 * t[0], 2 * t[0] + 1) and t[3] in range(8 * t[0], 8 * t[0] + 8)
    dense_thr, _ = es.thresholds(tiny_config(momentum_shift=3, population=2, alpha_q16=32768), 0,
                                 np.array([8], np.int32))
    assert context.thresholds(es.z_threshold_q4(tiny_config(momentum_shift=3, population=2), 0), 3,
                              np.array([64]))[0] == dense_thr


@pytest.mark.parametrize("changes, message", [
    (dict(context_bits=7), "context bits"),
    (dict(context_bits=21), "context bits"),
    (dict(context_bits=8, context_order=9), "context order"),
    (dict(context_bits=8, context_order=1), "context order"),
    (dict(context_order=3), "needs --context-bits"),
    (dict(context_logits=1), "--context-logits needs --context-bits"),
    (dict(context_bits=8, context_logits=2), "context logits must be 0 or 1"),
    (dict(context_credit="reads"), "--context-credit needs --context-bits"),
    (dict(context_bits=8, context_credit="bytes"), "context credit must be one of"),
    (dict(context_bits=8, context_credit="reads", optimizer="openes"), "EGGROLL's sparse update"),
    (dict(context_bits=8, context_mirror=2), "context mirror must be 0 or 1"),
    (dict(context_bits=8, context_decay=17), "context decay must be 0"),
    (dict(context_bits=8, context_decay=6), "context decay must be 0"),
    (dict(context_decay=9), "--context-decay needs --context-bits"),
    (dict(context_bits=8, context_decay=9, optimizer="spsa", population=2), "EGGROLL's update"),
    (dict(context_bits=8, context_credit="graded", context_mirror=1), "needs --context-logits 1"),
    (dict(context_bits=8, context_logits=1, context_mirror=1), "--context-credit reads or graded"),
    (dict(context_bits=8, context_logits=1, context_credit="graded", context_mirror=1, window=70_000),
     "window log-likelihood.*--context-mirror 0"),
])
def test_refused_settings(changes, message):
    with pytest.raises(IntlmError, match=message):
        tiny_config(**changes)


def test_state_shape_has_the_bytes_before():
    assert model.state_shape(tiny_config(layers=2), 5) == (5, 2, 16)
    assert model.state_shape(tiny_config(layers=2, context_bits=8, context_order=8), 5) == (5, 3, 16)


@settings(max_examples=30, deadline=None)
@given(S=st.lists(st.integers(1, 2 ** 40), min_size=1, max_size=20), z_q4=st.integers(1, 127),
       k=st.integers(0, 8))
def test_numba_thresholds_are_exact(S, z_q4, k):
    """The Numba backend's thresholds (the exact ones once per distinct S, mapped back to every row)
    equal the exact Python ones, for S far past what an int64 product would hold."""
    S = np.array(S, np.int64)
    assert np.array_equal(numba_context.thresholds(z_q4, k, S), context.thresholds(z_q4, k, S))


def test_training_with_tables_is_bit_exact_across_backends_and_resume(corpus, tmp_path):
    """A run with tables of orders 2 and 3 writes the same checkpoint bytes on NumPy and Numba, and
    resumed half way; the tables learn (rows move) and the state carries the bytes before."""
    from intlm import train
    from intlm.run import load_run

    from conftest import same_bytes_three_ways

    cfg = tiny_config(population=16, window=6, rank=2, fitness="rank", momentum_shift=3, mlp_ratio=2,
                      alpha_q16=65536, context_bits=8, context_order=3)

    run, _ = load_run(same_bytes_three_ways(tmp_path, lambda out, steps, backend, resume: train.pretrain(
        corpus, cfg, out, steps=steps, progress=False, save_seconds=1e9, backend=backend, resume=resume), 4))
    assert np.count_nonzero(run.params[context.NAME]) > 0 and np.count_nonzero(run.momentum[context.NAME]) > 0
    assert run.recurrent.shape == (16, 2, 16) and run.recurrent[:, 1, :2].any()


def test_pretrain_trains_tables_whatever_the_optimizer(monkeypatch, capsys, tmp_path):
    """`intlm pretrain` trains with PRETRAIN_CONTEXT's tables by default, with every optimiser and with
    Anchored Weight Decay alike (no setting silently changes the model); the credit, mirrors and decay
    are EGGROLL's, so the full-rank optimisers take the tables with window credit, no mirrors or decay; --context-bits 0 alone is the
    model without them (no order, logits or credit)."""
    from intlm.config import PRETRAIN_CONTEXT
    from intlm.run import load_run

    from conftest import run_main, text_bytes

    monkeypatch.setenv("INTLM_CACHE", str(tmp_path / "cache"))
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(text_bytes(400, 1))
    tiny = ["--population", "8", "--width", "16", "--window", "4", "--steps", "1", "--backend", "numba"]
    for name, extra in (("egg", []), ("spsa", ["--optimizer", "spsa"]), ("awd", ["--anchor-decay", "4"])):
        assert run_main(monkeypatch, capsys, "pretrain", corpus, "--out", tmp_path / name, *tiny, *extra)[0] == 0
        cfg = load_run(tmp_path / name)[0].cfg
        want = dict(PRETRAIN_CONTEXT, **({"context_credit": "window", "context_mirror": 0, "context_decay": 0} if name == "spsa" else {}))
        assert {k: getattr(cfg, k) for k in want} == want, name
    assert run_main(monkeypatch, capsys, "pretrain", corpus, "--out", tmp_path / "none", *tiny,
                    "--context-bits", "0")[0] == 0
    none = load_run(tmp_path / "none")[0].cfg
    assert (none.context_bits, none.context_order, none.context_logits, none.context_credit) == (0, 2, 0, "window")
    assert not {"context_order", "context_logits", "context_credit"} & set(none.to_json())


def test_the_logged_training_figure_counts_a_member_and_its_mirror_once(corpus):
    """With mirrors a member's fitness holds two scorings of its bytes; the step's fitness_sum (the
    log's training bits/byte) is their mean, so an untrained model logs about 8 bits/byte, not 16."""
    from intlm.arith import LL_ONE_BIT
    from intlm.backends import get
    from intlm.run import Run
    from intlm.step import train_step

    for mirror in (0, 1):
        cfg = tiny_config(population=8, window=6, context_bits=8, context_order=3, context_logits=1,
                          context_credit="graded", context_mirror=mirror)
        stats = train_step(Run.fresh(cfg), corpus.train, get("numba"))
        bpb = -stats["fitness_sum"] / LL_ONE_BIT / (cfg.population * cfg.window)
        assert 7 < bpb < 9, (mirror, bpb)
