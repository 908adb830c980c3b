"""Context tables: embeddings indexed by the last 2, 3, .. N bytes, with a sparse EGGROLL update.

With ``context_bits`` K > 0 and ``context_order`` N the model's input vector for a byte is

    x = clip8(embed[byte] + sum over n = 2..N of context[n - 2, row_n])

where row_n hashes the last n bytes (this one and the n - 1 before it) to one of 2**K rows of table
n - 2. With ``context_logits`` a row is 256 entries longer, and those entries, summed over the
tables, are added to the logits of the next byte (before their clip): an n-gram model's direct
say on the prediction, where the first width entries must pass through the GRU. The bytes before are carried in the recurrent state (one more row, ``model.state_shape``), and
a 0 byte, which starts a document, forgets them like the rest of the state (they read as 0). The
tables start at zero, so a run with them starts as the model without them.

Why: an ES estimate of a weight is drowned by the fitness noise of every other perturbed weight that
the member's window depends on. A window reads at most ``window`` rows of each table, so its fitness
difference depends on those rows alone: the tables add capacity (N - 1 tables of 2**K x width
weights) while adding to each window only the noise of the rows it reads. The update uses that: a
row's sum counts only the pairs whose window read it (the other pairs' fitness differences are
independent of the row's noise, so they would add only noise to its estimate),

    Z_j = sum over pairs p that read row j of f_p A_pj B_p^T,    S_j = sum of f_p^2 over the same pairs,

and its z-test threshold is the dense matrices' with S_j in place of sum f_p^2. A row no pair read
keeps its weights and its momentum: momentum decays at each read, so a rare row averages its
evidence over its last ~2**k reads rather than its last 2**k steps.

Mirrors (``context_mirror``): a row's logit entries change no state, only the prediction of the byte
that read it, so a member scored again with its rows' logit perturbation negated (its mirror) costs
one more log-likelihood per byte, not a forward. A pair and its two mirrors are a 2 x 2 design,
(e, d), (-e, -d), (e, -d), (-e, d), with e the perturbation of everything else and d the logit
entries': member minus mirror is d's effect alone, with none of e's noise, and member plus mirror
is e's with none of d's. So the logit entries are credited by the first, the input entries and the
dense tensors by the second (``byte_differences``).

Decay (``context_decay`` K): each step a 64th of every table's rows (the step's slice, in turn) is
pulled toward zero by 64 steps' worth of decay at rate 2**-K, in random unit steps from the counter
hash, so every entry decays at 2**-K a step in expectation whether or not a window reads it. A row
read often is pushed back by its updates faster than it decays; a row read for a context that a few
training bytes hold is not, so what those few bytes say is held near zero instead of memorised (the
mirrors' clean estimates overfit without it: scripts/learning/README.md, "Mirrors and decay").

A pair's perturbation of a table is rank r like a matrix's (A: rows x r, B: row width x r, laid out as one
counter-hash stream, A row-major first), but A is never made whole: a row's factors are hashed when a
window reads the row (``factor_a``), so the noise of a step costs the same at any K.
"""

import dataclasses

import numpy as np

from .arith import clip8, graded, isqrt, rshift_round
from .config import LINEAR_SPAN, RANK_LEVELS, Config
from .noise import GOLDEN, MASK64, NOISE_STD_PRODUCT, hashes, mix_array, rank_mult, stream, stream_at, stream_key
from .params import TABLE as NAME, tensors


@dataclasses.dataclass(frozen=True)
class Tables:
    """The tables as one parameter (N - 1, rows, width) and their place in the noise keys (after every
    dense tensor; table i is block i)."""
    shape: tuple
    index: int

    @property
    def count(self) -> int:
        return self.shape[0]

    @property
    def rows(self) -> int:
        return self.shape[1]

    def tensor_id(self, table: int) -> int:
        return (self.index << 20) | table


def tables(cfg: Config):
    """The context tables of this config, or None."""
    table = [t for t in tensors(cfg) if t.kind == "table"]
    return Tables(table[0].shape, table[0].index) if table else None


def row_index(history, order: int, bits: int):
    """The row of the order-``order`` table read for ``history`` (..., >= order) of bytes, the byte
    being read first, then the bytes before it: the top bits of the splitmix hash of the last
    ``order`` bytes packed into 64 bits, the order added so that the tables hash apart."""
    h = np.asarray(history, np.uint64)
    key = np.zeros(h.shape[:-1], np.uint64)
    for i in range(order):
        key |= h[..., i] << np.uint64(8 * i)
    return (mix_array(key + np.uint64(order_salt(order))) >> np.uint64(64 - bits)).astype(np.int64)


def order_salt(order: int) -> int:
    """What the hash key of an order adds: order * GOLDEN, wrapped to 64 bits."""
    return (order * GOLDEN) & MASK64


def stored_byte(byte):
    """A byte as the signed int8 the state stores it as (0 stays 0, so a reset state reads bytes 0)."""
    b = np.asarray(byte, np.int64)
    return np.where(b < 128, b, b - 256)


def read_bytes(stored):
    return np.asarray(stored, np.int64) & 255


def describe(cfg: Config) -> str:
    """The tables in a few words, for a run's header ("" without them)."""
    if not cfg.context_bits:
        return ""
    logits = ", rows into the logits too" if cfg.context_logits else ""
    credit = ", reads credit" if cfg.context_credit == "reads" else ""
    mirror = ", mirrored" if cfg.context_mirror else ""
    decay = f", decay 2^-{cfg.context_decay}" if cfg.context_decay else ""
    return f"{cfg.context_order - 1} context tables of 2^{cfg.context_bits} rows{logits}{credit}{mirror}{decay}"


def without(cfg: Config):
    """The same model without tables (what they cost is measured against it), or None without them."""
    return dataclasses.replace(cfg, context_bits=0, context_order=2, context_logits=0,
                               context_mirror=0, context_decay=0) if cfg.context_bits else None


def may_add(base: Config, field: str) -> bool:
    """Whether a run started from a checkpoint of ``base`` may change ``field``: tables may be added
    to a model without them (they start at zero, so its function stays the checkpoint's)."""
    return field in ("context_bits", "context_order", "context_logits") and not base.context_bits


def state_rows(cfg: Config) -> int:
    """Rows the tables add to the recurrent state (model.state_shape): one, for the bytes before."""
    return 1 if cfg.context_bits else 0


def add_rows(params, cfg: Config, x, byte, state, members) -> tuple:
    """(the input vector x (rows, width) of ``byte`` plus each member's perturbed rows of the tables
    (``member_rows``' first width entries), what the rows add to the logits (rows, 256): their last
    256 entries with context logits, else 0, and what they add to the mirrors' logits (the same with
    each member's perturbation negated) when ``members.mirror``, else None); the bytes before are read
    from and moved on in the state's extra row (row cfg.layers of ``state``, in place). Without
    tables: (x, 0, None). ``members``: model.Members."""
    if not cfg.context_bits:
        return x, 0, None
    extra = state[:, cfg.layers]  # a view: the bytes before move on in place
    noise = None if members.noise is None else members.noise[NAME]
    hist = history(cfg, byte, extra)
    rows = member_rows(cfg, params[NAME], noise, members.pair, members.sign, hist)
    mirror = member_rows(cfg, params[NAME], noise, members.pair, -members.sign, hist)[:, cfg.width:] if members.mirror else None
    push_history(cfg, extra, byte)
    return clip8(x + rows[:, :cfg.width]), rows[:, cfg.width:] if cfg.context_logits else 0, mirror


DECAY_PERIOD = 64  # steps in which the decay passes every row once: a 64th of the rows a step
DECAY_TENSOR = (1 << 32) - 5  # the noise-key tensor id of the decay's draws (no parameter uses it)


def decay_rows(cfg: Config, step: int) -> slice:
    """The rows of every table that ``decay`` pulls at ``step``: slice step mod DECAY_PERIOD of
    DECAY_PERIOD equal slices."""
    rows, k = 1 << cfg.context_bits, step % DECAY_PERIOD
    return slice(k * rows // DECAY_PERIOD, (k + 1) * rows // DECAY_PERIOD)


def decay(param, cfg: Config, step: int) -> int:
    """Pull ``param`` (the tables, (N - 1, rows, row width) int8) toward zero in place, the rows of
    ``decay_rows`` only: each entry w steps to sign(w) * max(0, |w| - ((|w| * DECAY_PERIOD + u) >> K)),
    K = cfg.context_decay, u a uniform K-bit integer hashed from (seed, step, the entry's place in the
    slice), so its mean pull is |w| * DECAY_PERIOD / 2**K exactly: decay at 2**-K a step. Never past
    zero. Returns the entries moved."""
    k, rows = cfg.context_decay, decay_rows(cfg, step)
    key, n, width = stream_key(cfg.seed, DECAY_TENSOR, step, 0), rows.stop - rows.start, param.shape[2]
    moved = 0
    for i in range(param.shape[0]):  # 256 rows at a time: the whole slice's int64 copies would be 100s of MB
        for r in range(0, n, 256):
            part = slice(rows.start + r, rows.start + min(r + 256, n))
            w = param[i, part].astype(np.int64)
            u = hashes(key, w.size, start=(i * n + r) * width) >> np.uint64(64 - k)
            pull = np.minimum((np.abs(w) * DECAY_PERIOD + u.astype(np.int64).reshape(w.shape)) >> k, np.abs(w))
            param[i, part] = (w - np.sign(w) * pull).astype(np.int8)
            moved += int(np.count_nonzero(pull))
    return moved


def mirrors(cfg: Config) -> bool:
    """Whether a population's members are scored with their mirrors too (cfg.context_mirror)."""
    return bool(cfg.context_bits and cfg.context_mirror)


def history_slots(cfg: Config) -> slice:
    """Where the state's extra row (index cfg.layers) keeps the bytes before: most recent first."""
    return slice(0, cfg.context_order - 1)


def push_history(cfg: Config, state_row, byte):
    """After reading ``byte`` (rows,): the bytes before move back one slot (the oldest leaves), the
    byte enters first. ``state_row``, the state's extra row, is changed in place (its slots past
    history_slots are never written)."""
    n = cfg.context_order - 1
    state_row[:, 1:n] = state_row[:, 0:n - 1].copy()
    state_row[:, 0] = stored_byte(byte)


def history(cfg: Config, byte, state_row):
    """(rows, N): the byte being read, then the bytes before it from the state's extra row."""
    before = read_bytes(state_row[:, history_slots(cfg)])
    return np.concatenate([np.asarray(byte, np.int64)[:, None], before], axis=1)


def rows_read(cfg: Config, tokens, state_row) -> tuple:
    """(reads, after): the row of each table read at each input position, (rows, T, N - 1) int64, for
    ``tokens`` (rows, T + 1), each row of tokens starting from the extra state row ``state_row``
    (rows, width) of its stream; and the bytes before as the state then holds them (rows, N - 1),
    stored as ``stored_byte``. The forward's own sequence of resets and shifts (model.read_byte), on
    a copy of the bytes."""
    hist = np.zeros((tokens.shape[0], cfg.context_order - 1), np.int64)
    hist[...] = state_row[:, history_slots(cfg)]
    T = tokens.shape[1] - 1
    out = np.zeros((tokens.shape[0], T, cfg.context_order - 1), np.int64)
    for t in range(T):
        byte = np.asarray(tokens[:, t], np.int64)
        hist[byte == 0] = 0
        full = history(cfg, byte, hist)
        for n in range(2, cfg.context_order + 1):
            out[:, t, n - 2] = row_index(full, n, cfg.context_bits)
        push_history(cfg, hist, byte)
    return out, hist


def window_reads(backend, cfg: Config, tokens, state) -> tuple:
    """(reads, after) of ``rows_read`` (by ``backend``) for every pair's window of ``tokens``, from
    the population's state (pair p's bytes before in member 2p's extra row), before the forward
    moves them on; (None, None) without tables."""
    if not cfg.context_bits:
        return None, None
    return backend.rows_read(cfg, tokens, state[0::2, cfg.layers])


def pair_reads(backend, cfg: Config, text):
    """The rows each pair read when its two members read different bytes, ``text`` (population,
    T + 1) (each member's bytes from a document start; the last is never read): (pairs, 2T, tables),
    member 2p's rows then member 2p + 1's; None without tables."""
    if not cfg.context_bits:
        return None
    reads, _ = backend.rows_read(cfg, text, np.zeros((len(text), cfg.width), np.int8))
    return reads.reshape(cfg.pairs, 2 * reads.shape[1], reads.shape[2])


def keep_history(cfg: Config, state, after):
    """Set every member's bytes before to its pair's ``after`` (window_reads'): under MPI a process
    runs only its own pairs, and the next step's reads need every pair's. No-op without tables."""
    if cfg.context_bits:
        state[:, cfg.layers, history_slots(cfg)] = np.repeat(after, 2, axis=0)


def make_noise(cfg: Config, step: int, pairs) -> tuple:
    """Each pair's (stream keys (pairs, tables) uint64, B (pairs, tables, row width, r) int8): B is each
    table's stream values after A's rows * r."""
    t = tables(cfg)
    keys = np.array([[stream_key(cfg.seed, t.tensor_id(i), step, p) for i in range(t.count)] for p in pairs],
                    dtype=np.uint64).reshape(len(pairs), t.count)
    r, d = cfg.rank, t.shape[2]
    b = [stream(int(k), d * r, rank_mult(r), start=t.rows * r).reshape(d, r) for k in keys.reshape(-1)]
    return keys, (np.stack(b) if b else np.zeros((0, d, r), np.int8)).reshape(len(pairs), t.count, d, r)


def factor_a(cfg: Config, keys, rows):
    """A's values (..., r) int32 at ``rows`` for the streams of ``keys`` (same shape as rows):
    element row * r + k of each stream, as ``noise.stream`` makes it."""
    r = cfg.rank
    idx = np.asarray(rows, np.uint64)[..., None] * np.uint64(r) + np.arange(r, dtype=np.uint64)
    return stream_at(np.asarray(keys, np.uint64)[..., None], idx, rank_mult(r))


def member_rows(cfg: Config, weight, noise, pair, sign, hist):
    """Each member's sum over the tables of its perturbed row (members, row width) int64, each row
    clip8(row + s * (A_row . B^T >> 4 + sigma)) as ``model.Members.embed`` perturbs an embedding row;
    ``hist`` (members, N) from ``history``; noise None: the rows as they are."""
    total = np.zeros((len(hist), weight.shape[2]), np.int64)
    for i in range(cfg.context_order - 1):
        rows = row_index(hist, i + 2, cfg.context_bits)
        x = weight[i, rows].astype(np.int64)
        if noise is not None:
            keys, b = noise
            a = factor_a(cfg, keys[pair, i], rows).astype(np.int64)  # (members, r)
            pert = rshift_round(np.einsum("pr,pdr->pd", a, b[pair, i].astype(np.int64)), 4 + cfg.sigma_shift)
            x = clip8(x + sign[:, None] * pert)
        total += x
    return total


def parts(cfg: Config) -> int:
    """The parts of a row whose sums and thresholds are kept apart: its input entries, and with context
    logits its logit entries (``update_sums``' S has one column each)."""
    return 1 + cfg.context_logits


def part_of(cfg: Config, width: int):
    """Each entry's part (width,) int64: 0 for the first cfg.width (the input), 1 after (the logits)."""
    return (np.arange(width) >= cfg.width).astype(np.int64)


def by_reads(cfg: Config) -> bool:
    """Whether a step credits the tables' rows by the bytes they can change (cfg.context_credit
    "reads" or "graded"), which needs each byte's log-likelihood rather than the window's sum."""
    return bool(cfg.context_bits) and cfg.context_credit in ("reads", "graded")


def credits_reads(cfg: Config, local) -> bool:
    """Whether ``credit`` gives reads credit: the config asks for it and the per-byte differences are
    there (evolve's whole-sample scores have none, so they give window credit)."""
    return local is not None and by_reads(cfg)


def byte_differences(ll):
    """Each pair's per-byte fitness differences (pairs, T) int64 from the members' log-likelihoods
    (members, T), + member first; None for None. With mirrors, ll (members, 2, T) holds each member's
    own and its mirror's, and the differences are (pairs, 2, T): of member plus mirror (for the input
    entries: none of the logit entries' noise) and of member minus mirror (for the logit entries: none
    of the other weights' noise)."""
    if ll is None:
        return None
    ll = np.asarray(ll, np.int64)
    if ll.ndim == 3:
        ll = np.stack([ll[:, 0] + ll[:, 1], ll[:, 0] - ll[:, 1]], axis=1)
    return ll[0::2] - ll[1::2]


def credit_parts(local) -> tuple:
    """(the differences the input entries are credited by, the logit entries') (pairs, T) int64 from
    ``byte_differences``' (pairs, T), the same for both, or (pairs, 2, T) with mirrors."""
    d = np.asarray(local, np.int64)
    return (d[:, 0], d[:, 1]) if d.ndim == 3 else (d, d)


def credit(cfg: Config, f, reads, local=None):
    """What each pair's read of a row adds to the row's sums, (pairs, T, tables, parts) int64: nonzero
    only at a pair's first read of the row in its window (a pair counts a row once).

    window credit (``local`` None, or cfg.context_credit "window"): every part gets the pair's shaped
    fitness f_p. reads credit (``local``, the pair's per-byte fitness differences (pairs, T), given):
    a row's perturbation can change only the bytes at and after its first read, and its logit entries
    only the bytes it was read for, so the input entries get sign(sum of local from the first read on)
    and the logit entries sign(sum of local at the bytes that read the row) (with mirrors, each part
    its own differences, ``credit_parts``). The other bytes'
    differences are independent of the row's noise: leaving them out leaves the estimate's mean and
    removes their noise. graded credit (cfg.context_credit "graded"): the same sums, each graded by its
    size instead of taking its sign (``graded_scales``), so a read whose bytes moved a lot counts more."""
    reads = np.asarray(reads, np.int64)
    pairs, T, n = reads.shape
    same = reads[:, :, None, :] == reads[:, None, :, :]  # (pairs, T, T, tables): bytes t and u read the same row
    first = ~np.any(same & np.tril(np.ones((T, T), bool), -1)[None, :, :, None], axis=2)
    out = np.zeros((pairs, T, n, parts(cfg)), np.int64)
    if not credits_reads(cfg, local):
        out[...] = np.asarray(f, np.int64)[:, None, None, None]
    else:
        d, d_logits = credit_parts(local)
        after = np.cumsum(d[:, ::-1], axis=1)[:, ::-1]  # sum of d from byte t on
        signed = cfg.context_credit == "reads"
        input_scale, logit_scale = (None, None) if signed else (graded_scales(d)[0], graded_scales(d_logits)[1])
        out[..., 0] = (np.sign(after) if signed else graded(after, input_scale, RANK_LEVELS))[:, :, None]
        if cfg.context_logits:
            at = np.einsum("ptui,pu->pti", same, d_logits)  # sum of d at the bytes that read byte t's row
            out[..., 1] = np.sign(at) if signed else graded(at, logit_scale[:, :, None], RANK_LEVELS)
    return out * first[..., None]


def graded_scales(d) -> tuple:
    """The scales graded credit divides its sums by, for a pair's per-byte differences d (pairs, T):
    a sum reaches RANK_LEVELS at LINEAR_SPAN times the pair's mean |d| per byte (at least 1) for a byte's
    difference, times isqrt(T - t) for the input entries' sum over the T - t bytes from t on (whose
    spread grows as its square root). Returns (input (pairs, T), logits (pairs, 1)), int64; per pair,
    so a process of an MPI run needs only its own pairs' bytes."""
    T = d.shape[1]
    unit = LINEAR_SPAN * np.maximum(1, np.abs(d).sum(axis=1) // T)[:, None]
    roots = np.array([isqrt(T - t) for t in range(T)], np.int64)
    return unit * roots[None, :], unit


def update_sums(cfg: Config, noise, f, reads, local=None) -> tuple:
    """The sums of the rows read, (read (n, 2), Z (n, row width), S (n, parts)), int64: ``read`` lists
    each (table, row) with a nonzero ``credit`` c (``reads`` (pairs, T, tables): rows_read of each
    pair's window), in ascending order; Z is its sum of c_p A_pj B_p^T (each entry with its part's c),
    S of c_p^2 per part. Only read rows are listed, so a step's sums cost what the windows read, not
    the tables' size."""
    t = tables(cfg)
    keys, b = noise
    c = credit(cfg, f, reads, local)
    entry_part = part_of(cfg, t.shape[2])
    Z = np.zeros(t.shape, np.int64)
    S = np.zeros(t.shape[:2] + (parts(cfg),), np.int64)
    for p, u, i in zip(*np.nonzero(np.any(c != 0, axis=3))):
        row = reads[p, u, i]
        a = factor_a(cfg, keys[p, i], row).astype(np.int64)  # (r,)
        Z[i, row] += c[p, u, i][entry_part] * (b[p, i].astype(np.int64) @ a)
        S[i, row] += c[p, u, i] ** 2
    table, row = np.nonzero(np.any(S != 0, axis=2))
    return np.stack([table, row], axis=1).astype(np.int64), Z[table, row], S[table, row]


def merge_sums(sums) -> tuple:
    """The sums of several disjoint sets of pairs (each ``update_sums``' (read, Z, S)) as one:
    rows read by any set, in ascending order, their Z and S added (exact, int64)."""
    read = np.concatenate([p[0] for p in sums]).reshape(-1, 2)
    keys, where = np.unique(read[:, 0] * (1 << 32) + read[:, 1], return_inverse=True)
    width, count = sums[0][1].shape[1], sums[0][2].shape[1]
    Z = np.zeros((len(keys), width), np.int64)
    S = np.zeros((len(keys), count), np.int64)
    np.add.at(Z, where.reshape(-1), np.concatenate([p[1] for p in sums]).reshape(-1, width))
    np.add.at(S, where.reshape(-1), np.concatenate([p[2] for p in sums]).reshape(-1, count))
    return np.stack([keys >> 32, keys & 0xFFFFFFFF], axis=1).astype(np.int64), Z, S


def dense_sums(cfg: Config, z, f) -> tuple:
    """The sums of a table every pair perturbed whole (OpenES's full-rank noise; z (tables, rows,
    width) int64) in ``update_sums``' layout: every row listed, each part with S = sum of f_p^2 over
    all pairs, so that each row's threshold and momentum are the dense matrices' (decayed every step)."""
    count, rows, width = z.shape
    read = np.stack(np.meshgrid(np.arange(count), np.arange(rows), indexing="ij"), axis=-1).reshape(-1, 2)
    S = np.full((count * rows, parts(cfg)), int(np.sum(np.asarray(f, np.int64) ** 2)), np.int64)
    return read.astype(np.int64), z.reshape(-1, width), S


def thresholds(z_q4: int, momentum_shift: int, S):
    """Each row part's threshold (int64, S's shape) for its S: es.thresholds' matrix threshold with S
    in place of sum f^2, in exact Python integers."""
    k = momentum_shift
    S = np.asarray(S)
    return np.array([isqrt(z_q4 * z_q4 * int(s) * 4 ** k // (2 ** (k + 1) - 1) * NOISE_STD_PRODUCT ** 2) // 16
                     for s in S.reshape(-1)], dtype=np.int64).reshape(S.shape)


def update(param, cfg: Config, z_q4: int, read, Z, S, momentum=None) -> int:
    """The rows read (``update_sums``), in every table: momentum (decayed once per read),
    thresholded +-1 steps, the threshold spent; returns the weights moved. A part of a row with S 0
    (no credit this step: its pairs' differences summed to 0) is left as it is, momentum too."""
    if read.shape[0] == 0:
        return 0
    table, read = read[:, 0], read[:, 1]
    entry_part = part_of(cfg, param.shape[2])
    thr = thresholds(z_q4, cfg.momentum_shift, S)[:, entry_part]
    live = (S != 0)[:, entry_part]
    z = Z
    k = cfg.momentum_shift
    if k:
        m = momentum[table, read].astype(np.int64)
        z = np.where(live, m - np.sign(m) * (np.abs(m) >> k) + z, m)
    move = np.where(live & (np.abs(z) > thr), np.sign(z), 0)
    param[table, read] = clip8(param[table, read].astype(np.int64) + move).astype(np.int8)
    if k:
        momentum[table, read] = z - move * thr
    return int(np.count_nonzero(move))
