"""The context tables of ``intlm.context`` in Numba, bit for bit: their noise (``context.make_noise``),
the factor of a row (``context.factor_a``), the row a history reads (``context.row_index``), the
sparse sums (``context.update_sums``) and the update (``context.update``). The forward's use of the
tables is forward.py's _add_context, beside the embedding."""

import numba
import numpy as np
from numba import njit, prange

from ... import context
from ...config import LINEAR_SPAN, RANK_LEVELS, Config
from ...noise import GOLDEN, rank_mult, stream_key
from .arith import clip8, graded as _graded
from .noise import U64, _key, mix, stream_value


@njit(inline="always")
def row_index(hist, order, salt, bits):
    """``context.row_index`` of one history (hist[0] the byte being read, then the bytes before);
    salt = context.order_salt(order)."""
    key = U64(0)
    for i in range(order):
        key |= U64(hist[i]) << U64(8 * i)
    return np.int64(mix(key + U64(salt)) >> U64(64 - bits))


@njit(inline="always")
def load_history(hist, slots, byte, n_tables):
    """hist = the byte being read, then the bytes before it from the state's ``slots``
    (``context.history``)."""
    hist[0] = byte
    for i in range(n_tables):
        hist[i + 1] = np.int64(slots[i]) & 255


@njit(inline="always")
def push_byte(slots, byte, n_tables):
    """After reading ``byte``: the bytes before move back one slot, the byte enters first
    (``context.push_history``)."""
    for i in range(n_tables - 1, 0, -1):
        slots[i] = slots[i - 1]
    slots[0] = byte if byte < 128 else byte - 256


@njit(inline="always")
def factor_a(key, row, k, r, mult):
    """Component k of ``context.factor_a`` at one row for one pair's stream key."""
    return np.int32(stream_value(key, row * r + k, mult))


@njit(parallel=True, cache=True)
def _rows_read(tokens, before, salts, bits, reads, after):
    """``context.rows_read``, the streams in parallel; before/after (rows, N - 1) stored bytes."""
    n_tables = reads.shape[2]
    for q in prange(tokens.shape[0]):
        hist = np.zeros(n_tables + 1, np.int64)
        slots = after[q]
        for i in range(n_tables):
            slots[i] = before[q, i]
        for t in range(reads.shape[1]):
            byte = np.int64(tokens[q, t])
            if byte == 0:
                slots[:] = 0
            load_history(hist, slots, byte, n_tables)
            for i in range(n_tables):
                reads[q, t, i] = row_index(hist, i + 2, salts[i], bits)
            push_byte(slots, byte, n_tables)


def rows_read(cfg: Config, tokens, state_row) -> tuple:
    """``context.rows_read``."""
    n = cfg.context_order - 1
    reads = np.empty((tokens.shape[0], tokens.shape[1] - 1, n), np.int64)
    after = np.empty((tokens.shape[0], n), np.int64)
    before = np.ascontiguousarray(state_row[:, context.history_slots(cfg)], dtype=np.int64)
    _rows_read(np.ascontiguousarray(tokens), before, salts(cfg), cfg.context_bits, reads, after)
    return reads, after


def salts(cfg: Config):
    """Each table's ``context.order_salt``, as the kernels read them."""
    return np.array([context.order_salt(i + 2) for i in range(cfg.context_order - 1)], np.uint64)


@njit(parallel=True, cache=True)
def _fill(seed, tensor_id0, step, p0, start, mult, keys, b):
    """keys[q, i] = the stream key of table i (tensor id tensor_id0 + i) for pair p0 + q; b[q, i] =
    its values start .. start + b[q, i].size, as (d, r)."""
    d, r = b.shape[2], b.shape[3]
    for q in prange(keys.shape[0]):
        for i in range(keys.shape[1]):
            k = _key(seed, tensor_id0 + i, step, np.int64(p0) + q)
            keys[q, i] = k
            for j in range(d):
                for c in range(r):
                    b[q, i, j, c] = stream_value(k, start + j * r + c, mult)


def make_noise(cfg: Config, t, step: int, p0: int, p1: int) -> tuple:
    """``context.make_noise`` of pairs [p0, p1) (t: the table parameter)."""
    count, rows = t.shape[:2]
    keys = np.empty((p1 - p0, count), np.uint64)
    b = np.empty((p1 - p0, count, t.shape[2], cfg.rank), np.int8)
    _fill(cfg.seed, t.tensor_id(0), step, p0, rows * cfg.rank, rank_mult(cfg.rank), keys, b)
    return keys, b


@njit(parallel=True, cache=True)
def _credit(f, reads, local, local_logits, by_reads, graded, logits, c):
    """``context.credit`` into zeroed c (pairs, T, tables, parts) int8, the pairs in parallel; local
    and local_logits (pairs, T), the input and the logit entries' differences (``context.credit_parts``),
    are read only when by_reads; graded: graded credit (``context.graded_scales``)."""
    T, n_tables = reads.shape[1], reads.shape[2]
    for p in prange(reads.shape[0]):
        after = np.zeros(T + 1, np.int64)
        root = np.zeros(T, np.int64)  # isqrt(T - t), graded credit's only
        unit, unit_logits = np.int64(0), np.int64(0)
        if by_reads:
            q = np.int64(0)
            for t in range(T - 1, -1, -1):
                after[t] = after[t + 1] + np.int64(local[p, t])
                if graded:
                    unit += abs(np.int64(local[p, t]))
                    unit_logits += abs(np.int64(local_logits[p, t]))
                    while (q + 1) * (q + 1) <= T - t:
                        q += 1
                    root[t] = q
            unit = LINEAR_SPAN * max(np.int64(1), unit // T)
            unit_logits = LINEAR_SPAN * max(np.int64(1), unit_logits // T)
        for i in range(n_tables):
            for t in range(T):
                row = reads[p, t, i]
                first = True
                for u in range(t):
                    if reads[p, u, i] == row:
                        first = False
                        break
                if not first:
                    continue
                if not by_reads:
                    for part in range(c.shape[3]):
                        c[p, t, i, part] = f[p]
                    continue
                c[p, t, i, 0] = _graded(after[t], unit * root[t], RANK_LEVELS) if graded else np.sign(after[t])
                if logits:
                    at = np.int64(0)
                    for u in range(t, T):
                        if reads[p, u, i] == row:
                            at += np.int64(local_logits[p, u])
                    c[p, t, i, 1] = _graded(at, unit_logits, RANK_LEVELS) if graded else np.sign(at)


@njit(cache=True)
def _list_reads(c, reads, slot):
    """slot[i, row] = the place of (table i, row) in the ascending list of the rows with a nonzero credit
    (-1 if none; slot comes in as -1s); returns that list (n, 2)."""
    n_tables, rows = slot.shape
    for p in range(c.shape[0]):
        for t in range(reads.shape[1]):
            for i in range(n_tables):
                for part in range(c.shape[3]):
                    if c[p, t, i, part] != 0:
                        slot[i, reads[p, t, i]] = 0
    n = 0
    for i in range(n_tables):
        for row in range(rows):
            if slot[i, row] == 0:
                n += 1
    read = np.empty((n, 2), np.int64)
    n = 0
    for i in range(n_tables):
        for row in range(rows):
            if slot[i, row] == 0:
                slot[i, row] = n
                read[n, 0], read[n, 1] = i, row
                n += 1
    return read


@njit(parallel=True, cache=True)
def _sums(c, keys, b, reads, mult, slot, lanes, width, Z, S):
    """``context.update_sums`` into zeroed Z, S (n, d), (n, parts) at the places ``slot`` gives, from
    the credit c (nonzero only at a pair's first read of a row). Lane q of a table takes the places
    with place % lanes == q, so lanes and tables run in parallel without racing."""
    d, r, parts = b.shape[2], b.shape[3], c.shape[3]
    for job in prange(slot.shape[0] * lanes):
        i, lane = job // lanes, job % lanes
        ab = np.zeros(d, np.int64)
        for p in range(c.shape[0]):
            for t in range(reads.shape[1]):
                live = False
                for part in range(parts):
                    live |= c[p, t, i, part] != 0
                if not live:
                    continue
                place = slot[i, reads[p, t, i]]
                if place % lanes != lane:
                    continue
                for j in range(d):
                    ab[j] = 0
                for k in range(r):
                    a = np.int64(factor_a(keys[p, i], reads[p, t, i], k, r, mult))
                    for j in range(d):
                        ab[j] += a * np.int64(b[p, i, j, k])
                z = Z[place]
                c_input, c_logits = np.int64(c[p, t, i, 0]), np.int64(c[p, t, i, parts - 1])
                for j in range(width):
                    z[j] += c_input * ab[j]
                for j in range(width, d):
                    z[j] += c_logits * ab[j]
                for part in range(parts):
                    S[place, part] += np.int64(c[p, t, i, part]) ** 2


def update_sums(cfg: Config, noise, f, reads, local=None) -> tuple:
    """``context.update_sums``: (read, Z, S) int64."""
    t = context.tables(cfg)
    keys, b = noise
    reads = np.ascontiguousarray(reads, dtype=np.int64)
    by_reads = context.credits_reads(cfg, local)
    c = np.zeros(reads.shape + (context.parts(cfg),), np.int8)  # |f|, a graded credit <= RANK_LEVELS: int8 holds it
    local, local_logits = context.credit_parts(local if by_reads else np.zeros((1, 1)))
    _credit(np.asarray(f, np.int64), reads, np.ascontiguousarray(local), np.ascontiguousarray(local_logits),
            by_reads, cfg.context_credit == "graded", bool(cfg.context_logits), c)
    slot = np.full(t.shape[:2], -1, np.int64)
    read = _list_reads(c, reads, slot)
    Z = np.zeros((read.shape[0], t.shape[2]), np.int64)  # the row width
    S = np.zeros((read.shape[0], c.shape[3]), np.int64)
    _sums(c, keys, b, reads, rank_mult(cfg.rank), slot, numba.get_num_threads(), cfg.width, Z, S)
    return read, Z, S


@njit(parallel=True, cache=True)
def _decay(w, key, k, period):
    """``context.decay`` of the slice w (tables, rows, width) in place; returns the entries moved per row."""
    tables, rows, width = w.shape
    moved = np.zeros(tables * rows, np.int64)
    for tr in prange(tables * rows):
        i, row = tr // rows, tr % rows
        for j in range(width):
            v = np.int64(w[i, row, j])
            u = np.int64(mix(key ^ mix(U64(tr * width + j) + U64(GOLDEN))) >> U64(64 - k))
            pull = min((abs(v) * period + u) >> k, abs(v))
            if pull:
                w[i, row, j] = v - pull if v > 0 else v + pull
                moved[tr] += 1
    return moved


def decay(param, cfg: Config, step: int) -> int:
    """``context.decay``: the step's slice pulled in parallel, in place."""
    rows = context.decay_rows(cfg, step)
    w = np.ascontiguousarray(param[:, rows])
    moved = _decay(w, U64(stream_key(cfg.seed, context.DECAY_TENSOR, step, 0)), cfg.context_decay, context.DECAY_PERIOD)
    param[:, rows] = w
    return int(moved.sum())


@njit(parallel=True, cache=True)
def _apply(param, Z, S, momentum, k, read, thr, width):
    """``context.update`` on the read rows: momentum, thresholded steps, the threshold spent; a part
    with S 0 left alone."""
    moved = 0
    parts = S.shape[1]
    for i in prange(read.shape[0]):
        tb, row = read[i, 0], read[i, 1]
        for j in range(param.shape[2]):
            part = 0 if j < width else parts - 1
            if S[i, part] == 0:
                continue
            t = thr[i, part]
            v = Z[i, j]
            if k:
                mo = np.int64(momentum[tb, row, j])
                decay = abs(mo) >> k
                v = (mo - decay if mo > 0 else mo + decay) + v
            move = 0
            if abs(v) > t:
                move = 1 if v > 0 else -1
            param[tb, row, j] = clip8(np.int64(param[tb, row, j]) + move)
            if k:
                momentum[tb, row, j] = v - move * t
            moved += abs(move)
    return moved


def thresholds(z_q4: int, momentum_shift: int, S):
    """``context.thresholds`` (exact Python integers), once per distinct S: many rows share a sum."""
    values, which = np.unique(S, return_inverse=True)
    return context.thresholds(z_q4, momentum_shift, values)[which].reshape(np.shape(S))


def update(param, cfg: Config, z_q4: int, read, Z, S, momentum=None) -> int:
    """``context.update``."""
    if read.shape[0] == 0:
        return 0
    thr = thresholds(z_q4, cfg.momentum_shift, S)
    k = cfg.momentum_shift
    return int(_apply(param, Z, S, momentum if k else np.zeros((1, 1, 1), np.int32), k, read, thr, cfg.width))


def operands(params, cfg: Config, noise, perturbed: bool) -> dict:
    """The context tables, each order's hash salt, and their perturbation (keys, B as rows (pairs,
    tables, r, d)); without tables (or without noise) stand-ins of the same types, never read."""
    d, r, n = cfg.width, cfg.rank, cfg.context_order - 1
    table = params[context.NAME] if cfg.context_bits else np.zeros((0, 1, d), np.int8)
    d = table.shape[2]  # the row width: width, plus 256 with context logits
    if cfg.context_bits and perturbed:
        keys, b = noise[context.NAME]
        b = np.ascontiguousarray(b.transpose(0, 1, 3, 2))
    else:
        keys, b = np.zeros((1, n), np.uint64), np.zeros((1, n, r, d), np.int8)
    return {"context_bits": cfg.context_bits, "context_salts": salts(cfg), "context_mult": rank_mult(r),
            "context": table, "n_context_keys": keys, "n_context_b": b}
