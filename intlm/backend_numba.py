"""Numba CPU backend: the model, noise and update of the NumPy reference, bit for bit, in parallel.

The population is split into blocks of BLOCK_ROWS members that run their whole window together,
the blocks in parallel across cores. Each byte's matrix products are then small int8 GEMMs
(cpu_gemm: one weight load serves the block's rows, on the u8 x s8 dot-product instruction); the
low-rank term adds x.B for two pairs per call (cpu_gemm.dot4) and one vector pass per pair and rank
component. Elementwise work is plain loops over contiguous int32 rows, which LLVM vectorises.
"""

import numpy as np
from numba import njit, prange

from .arith import EXP2, EXP2_BITS, LOG2_FRAC, LOG2_MANTISSA_BITS, matmul_shift
from . import es
from .config import UPDATE_CHUNK, Config
from .cpu_gemm import DOT_ROWS, GROUP, OFFSET, TILE_ROWS, correction, dot4, gemm, gemm16, pack, padded, sar32
from .model import GATE_BIAS, noise_layout, split_streams, tensors
from .noise import GOLDEN, SEED_SALT

U64 = np.uint64


@njit(inline="always")
def _mix(z):
    z = (z ^ (z >> U64(30))) * U64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> U64(27))) * U64(0x94D049BB133111EB)
    return z ^ (z >> U64(31))


@njit(inline="always")
def _rshift(x, s):
    """x / 2**s rounded half up, as ``arith.rshift_round`` (s = 0 leaves x), in 32 bits: the checked
    worst cases (config.worst_case_bounds) keep x and the rounding within int32."""
    return sar32(x + ((1 << s) >> 1), s)


@njit(inline="always")
def _clip8(x):
    """x clipped to [-127, 127], in 32 bits (int32 operands keep Numba from widening to int64)."""
    return min(max(np.int32(x), np.int32(-127)), np.int32(127))


@njit(parallel=True, cache=True)
def _fill_streams(seed, tensor_ids, step, pairs, count, mult, out):
    """out[p, b, :] = the first `count` values of stream (seed, tensor_ids[b], step, p)."""
    index_hash = np.empty(count, np.uint64)  # the hash of each index, the same in every stream
    for i in range(count):
        index_hash[i] = _mix(U64(i) + U64(GOLDEN))
    for pp in prange(pairs):
        p = np.int64(pp)
        for b in range(tensor_ids.shape[0]):
            k = _mix(U64(seed) ^ U64(SEED_SALT))
            k = _mix(k ^ U64(tensor_ids[b]))
            k = _mix(k ^ U64(step))
            k = _mix(k ^ U64(p))
            for i in range(count):
                h = _mix(k ^ index_hash[i])
                # the sum of h's eight bytes: pairs of bytes into 16-bit fields (<= 510), then one
                # multiply sums the four fields into the top 16 bits (<= 2040: nothing carries out)
                fields = (h & U64(0x00FF00FF00FF00FF)) + ((h >> U64(8)) & U64(0x00FF00FF00FF00FF))
                c = np.int64((fields * U64(0x0001000100010001)) >> U64(48)) - 1020
                mag = (abs(c) * mult + 512) >> 10
                out[p, b, i] = -mag if c < 0 else mag


def make_noise(cfg: Config, step: int) -> dict:
    """Same layout and values as ``model.make_noise``, generated in parallel."""
    out = {}
    for t in tensors(cfg):
        ids = np.array([t.tensor_id(b) for b in range(t.blocks)], dtype=np.int64)
        count, mult = noise_layout(cfg, t)
        block = np.empty((cfg.pairs, t.blocks, count), dtype=np.int8)
        _fill_streams(cfg.seed, ids, step, cfg.pairs, count, mult, block)
        out[t.name] = split_streams(cfg, t, block)
    return out


# --- forward --------------------------------------------------------------------------------------
# Members are processed in blocks: every weight tile loaded from cache serves a block's rows at once
# (cpu_gemm), and the blocks run in parallel. A block's buffers are allocated once per call, never
# in the per-byte loop.
BLOCK_ROWS = 32
assert BLOCK_ROWS % DOT_ROWS == 0  # _linear computes x.B for DOT_ROWS rows at a time


@njit(inline="always")
def _vector(v, e, sign, sigma, j):
    if sign == 0:
        return np.int32(v[j])
    return _clip8(np.int32(v[j]) + sign * _rshift(np.int32(e[j]), sigma))


@njit(inline="always")
def _perturbed_vector(v, e, sign, sigma, out):
    """A member's copy of a vector parameter, made once per window instead of once per byte."""
    for j in range(v.shape[0]):
        out[j] = _vector(v, e, sign, sigma, j)


@njit(inline="always")
def div_round_reciprocal(num, den, inv):
    """``arith.div_round(num, den)`` for 0 < den, |num| + den < 2**31, given inv = 2**32 // den:
    u * inv >> 32 is floor(u / den) or one less (u < 2**32), and one comparison fixes it. Saves an
    integer division per element of a row that shares the denominator."""
    u = abs(num) + den // 2
    q = (u * inv) >> 32
    if u - q * den >= den:
        q += 1
    return -q if num < 0 else q


@njit(inline="always")
def _layer_norm(x, gain, offset):
    """layer_norm of one row, stored as a matmul input (+ OFFSET); |x * gain * d| < 2**31 (config)."""
    d = x.shape[0]
    total = 0
    for j in range(d):
        total += abs(x[j])
    total = max(total, 1)
    inv = (1 << 32) // total
    for j in range(d):
        q = div_round_reciprocal(np.int64(x[j] * gain[j] * d), total, inv)
        offset[j] = _clip8(q) + OFFSET


@njit(cache=True)  # a call, not inlined: seven inlined copies made the first compile 20 s longer
def _linear(offset, rows, w, corr, blk, noise, pairs, signs, sigma, shift, xb, low_rank, y):
    """y[b, :m] = rshift(x_b . W^T + s_b * ((x_b . B_b >> 4) . A_b^T >> sigma), shift) for each row b
    of the block, x_b = offset[b] - OFFSET; W is block ``blk`` of a packed tensor (cpu_gemm.pack),
    corr its offset correction plus the final shift's rounding (_corrections), noise = (A rows (r, m),
    B rows (r, n), -OFFSET * sum(B) per rank component), see _matrix_noise. The block's buffers have
    BLOCK_ROWS rows (a multiple of DOT_ROWS: x.B is computed four rows at a time, past `rows` too).
    xb (BLOCK_ROWS, r) and low_rank (2, m) are scratch: from rank 2, low_rank holds the sums of the
    rank components past the first plus the sigma shift's rounding (at rank 1 the last pass adds
    that rounding itself; the final shift's rounding is in corr)."""
    noise_a, noise_b, noise_corr = noise
    n = offset.shape[1]
    m, m_pad = noise_a.shape[3], corr.shape[1]
    groups = n // GROUP
    x_flat, b_flat = offset.reshape(offset.size), noise_b.reshape(noise_b.size)
    gemm(x_flat, -(-rows // TILE_ROWS) * TILE_ROWS, n, GROUP, w, blk * groups * m_pad * GROUP, groups, m_pad,
         y.reshape(y.size), y.shape[1])
    c = corr[blk]
    if signs[0] == 0:
        for b in range(rows):
            yr = y[b]
            for j in range(m):
                yr[j] = sar32(yr[j] + c[j], shift)
        return
    # perturbed: rows come in pairs (+ member, - member; blocks start at even rows) sharing (A, B).
    # Every row's x.B first, two pairs (DOT_ROWS rows) at a time (rows past `rows` are in the
    # buffers, and ignored).
    r = noise_a.shape[2]
    xb_flat = xb.reshape(xb.size)
    for b in range(0, rows, DOT_ROWS):
        p0, p1 = pairs[b], pairs[b + 2]
        for k in range(r):
            dot4(x_flat, b * n, n, b_flat, ((p0 * noise_b.shape[1] + blk) * r + k) * n,
                 ((p1 * noise_b.shape[1] + blk) * r + k) * n, n, xb_flat, b * r + k, r)
            # each pair's offset correction read once, the four rows written straight (a loop over
            # rows looking up each row's pair took as long as the dot products)
            c0, c1 = noise_corr[p0, blk, k], noise_corr[p1, blk, k]
            xb[b, k] = _rshift(xb[b, k] + c0, 4)
            xb[b + 1, k] = _rshift(xb[b + 1, k] + c0, 4)
            xb[b + 2, k] = _rshift(xb[b + 2, k] + c1, 4)
            xb[b + 3, k] = _rshift(xb[b + 3, k] + c1, 4)
    lr_plus, lr_minus = low_rank[0, :m], low_rank[1, :m]  # used from rank 2
    rounding = np.int32((1 << sigma) >> 1)
    for b in range(0, rows, 2):
        p = pairs[b]
        for k in range(1, r):  # rank components past the first are summed ahead of the last pass
            ak, xp, xm = noise_a[p, blk, k], xb[b, k], xb[b + 1, k]
            for j in range(m):
                a = np.int32(ak[j])
                lr_plus[j] = np.int32((lr_plus[j] if k > 1 else rounding) + xp * a)
                lr_minus[j] = np.int32((lr_minus[j] if k > 1 else rounding) + xm * a)
        a0, xp, xm = noise_a[p, blk, 0], xb[b, 0], xb[b + 1, 0]
        yp, ym = y[b], y[b + 1]
        # c[j] is read once (the store to yp could alias it); rank 1 adds the rounding as a constant
        # instead of reading the sums: that loop takes about two thirds of the time
        if r == 1:
            for j in range(m):
                a, cj = np.int32(a0[j]), c[j]
                yp[j] = sar32(yp[j] + cj + sar32(np.int32(xp * a) + rounding, sigma), shift)
                ym[j] = sar32(ym[j] + cj - sar32(np.int32(xm * a) + rounding, sigma), shift)
        else:
            for j in range(m):
                a, cj = np.int32(a0[j]), c[j]
                yp[j] = sar32(yp[j] + cj + sar32(np.int32(xp * a) + lr_plus[j], sigma), shift)
                ym[j] = sar32(ym[j] + cj - sar32(np.int32(xm * a) + lr_minus[j], sigma), shift)


@njit(inline="always")
def _log_likelihood(logits, target, exp2, log2_frac, exp2_bits, mant_bits):
    top = logits[0]
    for v in range(256):
        top = max(top, logits[v])
    s = 0
    for v in range(256):
        s += exp2[logits[v] - top + 255]
    e = 0  # floor(log2 s) by halving the search range
    for half in (16, 8, 4, 2, 1):
        if (s >> (e + half)) != 0:
            e += half
    m = (s >> (e - mant_bits)) & ((1 << mant_bits) - 1)
    return 16 * (logits[target] - top + 255) - ((e << 8) + log2_frac[m]) + (exp2_bits << 8)


@njit(cache=True)
def _run_block(first, rows, tokens, token_div, state, ll, perturbed, sigma, shift_d, shift_h,
               embed, gru_w, gru_c, gru_bias, norm, up_w, up_c, down_w, down_c, out_norm, head_w, head_c,
               head_bias, ne, ng, nu, nd, nh,
               n_gru_bias, n_norm, n_out_norm, n_head_bias, exp2, log2_frac, exp2_bits, mant_bits):
    """Rows first .. first+rows of the batch through the whole window (the spec: ``model.forward``)."""
    nb = BLOCK_ROWS
    L, d = state.shape[1], state.shape[2]
    hdim = nu[0].shape[3]
    pairs = np.zeros(nb, np.int64)
    signs = np.zeros(nb, np.int64)
    for b in range(rows):
        if perturbed:
            pairs[b], signs[b] = (first + b) // 2, 1 - 2 * ((first + b) % 2)
    # each member's perturbed vectors, once per window
    gains = np.zeros((L, 2, nb, d), np.int32)
    biases = np.zeros((L, 2, nb, d), np.int32)
    out_gain = np.zeros((nb, d), np.int32)
    out_bias = np.zeros((nb, 256), np.int32)
    for b in range(rows):
        p, s = pairs[b], signs[b]
        for l in range(L):
            for k in range(2):
                _perturbed_vector(norm[l, k], n_norm[p, l, k], s, sigma, gains[l, k, b])
                _perturbed_vector(gru_bias[l, k], n_gru_bias[p, l, k], s, sigma, biases[l, k, b])
        _perturbed_vector(out_norm, n_out_norm[p], s, sigma, out_gain[b])
        _perturbed_vector(head_bias, n_head_bias[p], s, sigma, out_bias[b])
    h = np.zeros((nb, L, d), np.int32)
    for b in range(rows):
        h[b] = state[first + b]
    x = np.zeros((nb, d), np.int32)
    gate = np.zeros((nb, d), np.int32)
    # matmul inputs, stored as uint8 = value + OFFSET
    a_u, h_u, r_u = np.zeros((nb, d), np.uint8), np.zeros((nb, d), np.uint8), np.zeros((nb, d), np.uint8)
    hid_u = np.zeros((nb, hdim), np.uint8)
    y1, y2 = np.zeros((nb, gru_c.shape[1]), np.int32), np.zeros((nb, gru_c.shape[1]), np.int32)
    y_up, y_head = np.zeros((nb, up_c.shape[1]), np.int32), np.zeros((nb, head_c.shape[1]), np.int32)
    # sums of the rank components past the first: _linear's (read from rank 2), and the embedding's
    # (zero at rank 1, where nothing writes it, so the embedding adds it without a branch)
    low_rank = np.zeros((2, max(hdim, 256)), np.int32)
    pert = np.zeros(d, np.int32)
    xb = np.zeros((nb, ne[0].shape[2]), np.int32)  # every row's x.B >> 4, per rank component
    logits = np.zeros(256, np.int32)
    emb_shift = 4 + sigma
    for t in range(tokens.shape[1] - 1):
        for b in range(rows):  # embedding row plus its low-rank perturbation
            byte = tokens[(first + b) // token_div, t]
            if byte == 0:  # a document starts: forget the previous one
                h[b] = 0
            xr, e = x[b], embed[byte]
            if signs[b] == 0:
                for j in range(d):
                    xr[j] = e[j]
            elif signs[b] > 0:  # the pair's members read the same byte: one perturbation, both signs
                p, xm = pairs[b], x[b + 1]
                r = ne[0].shape[2]
                for k in range(1, r):  # rank components past the first are summed ahead of the last pass
                    ak, bk = np.int32(ne[0][p, 0, k, byte]), ne[1][p, 0, k]
                    for j in range(d):
                        pert[j] = np.int32((pert[j] if k > 1 else 0) + ak * np.int32(bk[j]))
                a0, b0 = np.int32(ne[0][p, 0, 0, byte]), ne[1][p, 0, 0]
                for j in range(d):
                    q = _rshift(np.int32(pert[j] + a0 * np.int32(b0[j])), emb_shift)
                    xr[j] = _clip8(np.int32(e[j]) + q)
                    xm[j] = _clip8(np.int32(e[j]) - q)
        for l in range(L):
            for b in range(rows):
                _layer_norm(x[b], gains[l, 0, b], a_u[b])
                hr, hu = h[b, l], h_u[b]
                for j in range(d):
                    hu[j] = hr[j] + OFFSET
            _linear(a_u, rows, gru_w, gru_c, 4 * l, ng, pairs, signs, sigma, shift_d, xb, low_rank, y1)
            _linear(h_u, rows, gru_w, gru_c, 4 * l + 1, ng, pairs, signs, sigma, shift_d, xb, low_rank, y2)
            for b in range(rows):  # update gate, and the reset state fed to U_h
                y1r, y2r, bias, g, hr, ru = y1[b], y2[b], biases[l, 0, b], gate[b], h[b, l], r_u[b]
                for j in range(d):
                    gamma = np.int32(_clip8(y1r[j] + y2r[j] + bias[j]) + GATE_BIAS)
                    g[j] = gamma
                    ru[j] = _rshift(gamma * hr[j], 8) + OFFSET
            _linear(a_u, rows, gru_w, gru_c, 4 * l + 2, ng, pairs, signs, sigma, shift_d, xb, low_rank, y1)
            _linear(r_u, rows, gru_w, gru_c, 4 * l + 3, ng, pairs, signs, sigma, shift_d, xb, low_rank, y2)
            for b in range(rows):  # candidate, new state, residual; then the MLP's norm
                y1r, y2r, bias, g, hr, xr = y1[b], y2[b], biases[l, 1, b], gate[b], h[b, l], x[b]
                for j in range(d):
                    cand = _clip8(y1r[j] + y2r[j] + bias[j])
                    hn = _clip8(hr[j] + _rshift(g[j] * (cand - hr[j]), 8))
                    hr[j] = hn
                    xr[j] = _clip8(xr[j] + hn)
                _layer_norm(xr, gains[l, 1, b], a_u[b])
            _linear(a_u, rows, up_w, up_c, l, nu, pairs, signs, sigma, shift_d, xb, low_rank, y_up)
            for b in range(rows):
                yr, hu = y_up[b], hid_u[b]
                for j in range(hdim):
                    hu[j] = max(_clip8(yr[j]), 0) + OFFSET
            _linear(hid_u, rows, down_w, down_c, l, nd, pairs, signs, sigma, shift_h, xb, low_rank, y1)
            for b in range(rows):
                xr, yr = x[b], y1[b]
                for j in range(d):
                    xr[j] = _clip8(xr[j] + _clip8(yr[j]))
        for b in range(rows):
            _layer_norm(x[b], out_gain[b], a_u[b])
        _linear(a_u, rows, head_w, head_c, 0, nh, pairs, signs, sigma, shift_d, xb, low_rank, y_head)
        for b in range(rows):
            yr, bias = y_head[b], out_bias[b]
            for v in range(256):
                logits[v] = _clip8(yr[v] + bias[v])
            target = tokens[(first + b) // token_div, t + 1]
            ll[first + b, t] = _log_likelihood(logits, target, exp2, log2_frac, exp2_bits, mant_bits)
    for b in range(rows):
        state[first + b] = h[b]


@njit(parallel=True, cache=True)
def _run_blocks(tokens, token_div, state, ll, perturbed, sigma, shift_d, shift_h,
                embed, gru_w, gru_c, gru_bias, norm, up_w, up_c, down_w, down_c, out_norm, head_w, head_c,
                head_bias, ne, ng, nu, nd, nh,
                n_gru_bias, n_norm, n_out_norm, n_head_bias, exp2, log2_frac, exp2_bits, mant_bits):
    total = state.shape[0]
    for blk in prange(-(-total // BLOCK_ROWS)):
        first = np.int64(blk) * BLOCK_ROWS
        _run_block(first, min(BLOCK_ROWS, total - first), tokens, token_div, state, ll, perturbed, sigma,
                   shift_d, shift_h, embed, gru_w, gru_c, gru_bias, norm, up_w, up_c, down_w, down_c, out_norm,
                   head_w, head_c, head_bias, ne, ng, nu, nd, nh,
                   n_gru_bias, n_norm, n_out_norm, n_head_bias, exp2, log2_frac, exp2_bits, mant_bits)


def _factors(cfg: Config, t, noise):
    """A matrix tensor's noise (A, B) as (pairs, blocks, m, r) and (pairs, blocks, n, r) views."""
    m, n = t.shape[-2:]
    return tuple(v.reshape(v.shape[0], t.blocks, size, cfg.rank) for v, size in zip(noise[t.name], (m, n)))


@njit(parallel=True, cache=True)
def _as_rows(v):
    """A factor (pairs, blocks, n, r) as contiguous rows (pairs, blocks, r, n), and each row's offset
    correction -OFFSET * sum(row) int32 (one pass; NumPy's widening sum took longer than the copy)."""
    pairs, blocks, n, r = v.shape
    rows = np.empty((pairs, blocks, r, n), np.int8)
    sums = np.empty((pairs, blocks, r), np.int32)
    for p in prange(pairs):
        for blk in range(blocks):
            for k in range(r):
                row, total = rows[p, blk, k], np.int32(0)
                for j in range(n):
                    row[j] = v[p, blk, j, k]
                    total += np.int32(row[j])
                sums[p, blk, k] = -OFFSET * total
    return rows, sums


def _matrix_noise(cfg: Config, noise) -> dict:
    """Matrix noise as contiguous rows A (pairs, blocks, r, m) and B (pairs, blocks, r, n), with
    B's offset correction -OFFSET * sum(B) (pairs, blocks, r) int32; vectors as they are."""
    out = {}
    for t in tensors(cfg):
        if t.kind == "matrix":
            (a, _), (b, b_corr) = (_as_rows(v) for v in _factors(cfg, t, noise))
            out[t.name] = (a, b, b_corr)
        else:
            out[t.name] = noise[t.name]
    return out


def _no_noise(cfg: Config) -> dict:
    """A zero perturbation with one pair, for the unperturbed forward (never read: sign 0)."""
    return {t.name: split_streams(cfg, t, np.zeros((1, t.blocks, noise_layout(cfg, t)[0]), np.int8))
            for t in tensors(cfg)}


def _corrections(params, names) -> dict:
    """Each matrix's offset correction (cpu_gemm.correction) plus the rounding of its final shift
    (matmul_shift of its input width, as model.Members.linear), added once here instead of once per
    output of every row."""
    return {name: correction(params[name]) + np.int32((1 << matmul_shift(params[name].shape[-1])) >> 1)
            for name in names}


def _run(params, cfg: Config, tokens, token_div, state, noise, perturbed):
    # perturbed rows come in antithetic pairs reading one token row (the embedding's perturbation
    # is computed once per pair)
    assert token_div == 2 or not perturbed
    rows = state.shape[0]
    ll = np.zeros((rows, tokens.shape[1] - 1), dtype=np.int32)
    matrices = ("gru", "up", "down", "head")
    w = {name: pack(params[name]).reshape(-1) for name in matrices}
    c = _corrections(params, matrices)
    work = state.astype(np.int32)
    nz = _matrix_noise(cfg, noise)
    _run_blocks(tokens, token_div, work, ll, perturbed, cfg.sigma_shift, matmul_shift(cfg.width),
                matmul_shift(cfg.hidden), params["embed"], w["gru"], c["gru"], params["gru_bias"], params["norm"],
                w["up"], c["up"], w["down"], c["down"], params["out_norm"], w["head"], c["head"], params["head_bias"],
                nz["embed"], nz["gru"], nz["up"], nz["down"], nz["head"],
                nz["gru_bias"], nz["norm"], nz["out_norm"], nz["head_bias"],
                EXP2, LOG2_FRAC, EXP2_BITS, LOG2_MANTISSA_BITS)
    state[...] = work
    return ll


def population_fitness(params, cfg: Config, noise, pair_tokens, state):
    """As ``model.population_fitness``: member i reads pair_tokens[i // 2]; state updated in place."""
    ll = _run(params, cfg, np.ascontiguousarray(pair_tokens), 2, state, noise, True)
    return ll.sum(axis=1, dtype=np.int64).astype(np.int32)


def forward(params, cfg: Config, tokens, state):
    """As ``model.forward`` without noise: log-likelihoods (rows, T); state updated in place."""
    return _run(params, cfg, np.ascontiguousarray(tokens), 1, state, _no_noise(cfg), False)


@njit(parallel=True, cache=True)
def _matrix_sums(fa, b, out):
    """out[blk] = sum_q fa[blk, q] B[blk, q]^T: the update as one (m x Q) . (Q x n) int16 product per
    block, both operands with pairs of q side by side (_interleave_pairs); parallel over 16-row chunks."""
    blocks, groups, m = fa.shape[:3]
    n_pad = out.shape[2]
    x, y = fa.reshape(fa.size), out.reshape(out.size)
    chunk = 4 * TILE_ROWS
    per_block = m // chunk
    for c in prange(blocks * per_block):
        blk, i = c // per_block, (c % per_block) * chunk
        gemm16(x[(blk * groups * m + i) * 2:], chunk, 2, 2 * m, b, blk * groups * n_pad * 2, groups, n_pad,
               y[(blk * m + i) * n_pad:], n_pad)


_SCRATCH = {}


def _scratch(name, shape, dtype):
    """A buffer kept from call to call for the same name and shape, so a step allocates nothing.
    It holds the previous call's values: callers overwrite every element that reaches a result.
    Not thread-safe (the training loop is one thread)."""
    key = (name, shape, np.dtype(dtype).str)
    if key not in _SCRATCH:
        _SCRATCH[key] = np.zeros(shape, dtype)
    return _SCRATCH[key]


@njit(parallel=True, cache=True)
def _interleave_pairs(f, v, q_start, out):
    """out[blk, g, j, e] = f[p] * v[p, blk, j, k] (int16) with q_start + 2g + e = p * r + k: each pair
    of (pair, rank component) side by side, the operand layout of gemm16, read and written in order;
    a last q past the pairs is written as zeros. Columns of out past v's stay as they are."""
    pairs, blocks, n, r = v.shape
    groups = out.shape[1]
    for row in prange(blocks * groups):
        blk, g = row // groups, row % groups
        q0, q1 = q_start + 2 * g, q_start + 2 * g + 1
        p0, k0, p1, k1 = q0 // r, q0 % r, q1 // r, q1 % r
        f0, f1 = np.int16(f[p0]), np.int16(f[p1] if p1 < pairs else 0)
        v1 = v[min(p1, pairs - 1), blk]
        v0, o = v[p0, blk], out[blk, g]
        for j in range(n):
            o[j, 0] = f0 * np.int16(v0[j, k0])
            o[j, 1] = f1 * np.int16(v1[j, k1])


@njit(cache=True)
def _vector_sums(f, e):
    """f . e over the pairs, int64 (NumPy's integer matmul has no fast path)."""
    out = np.zeros(e.shape[1], np.int64)
    for p in range(e.shape[0]):
        fp, ep = np.int64(f[p]), e[p]
        for i in range(e.shape[1]):
            out[i] += fp * np.int64(ep[i])
    return out


def _matrix_update_sum(cfg: Config, t, a, b, f, ones):
    """Z of one matrix, (blocks, m, padded n): the int16 product over (pair, rank component) terms in
    chunks of UPDATE_CHUNK terms, each summed in int32 (gemm16's accumulator, within config's "update
    partial sum" bound), the chunks added in int64. A single chunk is Z as it is, in int32."""
    m, n = t.shape[-2:]
    total_groups = -(-cfg.pairs * cfg.rank // 2)  # products are summed in pairs of (pair, rank component)
    starts = range(0, total_groups, UPDATE_CHUNK // 2)
    z = np.zeros((t.blocks, m, padded(n)), np.int64) if len(starts) > 1 else None
    for g0 in starts:
        groups = min(UPDATE_CHUNK // 2, total_groups - g0)
        fa = _scratch(t.name + ".fa", (t.blocks, groups, m, 2), np.int16)
        packed_b = _scratch(t.name + ".b", (t.blocks, groups, padded(n), 2), np.int16)  # padding stays 0
        _interleave_pairs(f, a, 2 * g0, fa)
        _interleave_pairs(ones, b, 2 * g0, packed_b)
        part = np.empty((t.blocks, m, padded(n)), dtype=np.int32)
        _matrix_sums(fa, packed_b.reshape(-1), part)
        if z is None:
            return part
        z += part
    return z


def update_sums(cfg: Config, noise, f) -> dict:
    """As ``es.update_sums``: Z per parameter, exact (int32 where one chunk holds every term of a
    matrix, else int64). |f * a| <= 8 * 78 fits int16."""
    Z = {}
    ones = np.ones(cfg.pairs, np.int16)
    for t in tensors(cfg):
        if t.kind == "matrix":
            z = _matrix_update_sum(cfg, t, *_factors(cfg, t, noise), f, ones)
            Z[t.name] = np.ascontiguousarray(z[:, :, :t.shape[-1]]).reshape(t.shape)
        else:
            Z[t.name] = _vector_sums(f, noise[t.name].reshape(cfg.pairs, -1)).reshape(t.shape)
    return Z


@njit(parallel=True, cache=True)
def _apply_steps(param, z, momentum, k, thr, moving):
    """``es.update`` for one tensor (flat views), fused into one pass; returns the attempted moves."""
    moved = 0
    for i in prange(param.shape[0]):
        v = np.int64(z[i])
        if k:
            mo = np.int64(momentum[i])
            decay = abs(mo) >> k
            v = (mo - decay if mo > 0 else mo + decay) + v
        move = 0
        if moving and abs(v) > thr:
            move = 1 if v > 0 else -1
        param[i] = _clip8(np.int64(param[i]) + move)
        if k:
            momentum[i] = v - move * thr  # spend the evidence that moved the weight
        moved += abs(move)
    return moved


def update(params, cfg: Config, step: int, f, Z, momentum=None) -> int:
    """As ``es.update``: thresholded +-1 steps (and momentum) in place; returns weights moved."""
    moving = bool(np.any(f))
    thr_matrix, thr_vector = es.thresholds(cfg, step, f) if moving else (0, 0)
    none = np.zeros(1, np.int32)
    moved = 0
    for t in tensors(cfg):
        arrays = [params[t.name], Z[t.name]] + ([momentum[t.name]] if cfg.momentum_shift else [])
        if not all(a.flags.c_contiguous for a in arrays):
            raise ValueError(f"{t.name}: update arrays must be C-contiguous (updated through flat views)")
        flat = [a.reshape(-1) for a in arrays]
        moved += _apply_steps(flat[0], flat[1], flat[2] if cfg.momentum_shift else none, cfg.momentum_shift,
                              thr_matrix if t.kind == "matrix" else thr_vector, moving)
    return int(moved)
