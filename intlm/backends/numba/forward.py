"""The model of ``model.forward`` / ``model.population_fitness`` in Numba, bit for bit, in parallel.

The population is split into blocks of BLOCK_ROWS members that run their whole window together,
the blocks in parallel across cores. Each byte's matrix products are then small int8 GEMMs
(gemm: one weight load serves the block's rows, on the u8 x s8 dot-product instruction); the
low-rank term adds x.B for two pairs per call (gemm.dot4) and one vector pass per pair and rank
component. Elementwise work is plain loops over contiguous int32 rows, which LLVM vectorises.
Each kernel names the reference it equals: _layer_norm (model.layer_norm), _linear
(model.Members.linear), _run_block (model.forward); the log-likelihood is in numba/arith.py
(arith.log_likelihood).
"""

import functools
from collections import namedtuple

import numpy as np
from numba import njit, prange

from ... import context
from ...arith import EXP2, EXP2_BITS, LOG2_FRAC, LOG2_MANTISSA_BITS, matmul_shift
from ...config import Config
from ...model import GATE_BIAS, noise_layout, split_streams, window_fitness
from ...params import tensors
from . import context as _ctx
from .arith import clip8, div_round_reciprocal, log_likelihood, rshift_round, sar32
from .gemm import DOT_ROWS, GROUP, OFFSET, TILE_ROWS, correction, dot4, gemm, pack
from .noise import factors

# Members are processed in blocks: every weight tile loaded from cache serves a block's rows at once
# (gemm), and the blocks run in parallel. A block's buffers are allocated once per call, never
# in the per-byte loop.
BLOCK_ROWS = 32
assert BLOCK_ROWS % DOT_ROWS == 0  # _linear computes x.B for DOT_ROWS rows at a time


@njit(inline="always")
def _vector(v, e, sign, sigma, j):
    if sign == 0:
        return np.int32(v[j])
    return clip8(np.int32(v[j]) + sign * rshift_round(np.int32(e[j]), sigma))


@njit(inline="always")
def _perturbed_vector(v, e, sign, sigma, out):
    """A member's copy of a vector parameter, made once per window instead of once per byte."""
    for j in range(v.shape[0]):
        out[j] = _vector(v, e, sign, sigma, j)


@njit(inline="always")
def _layer_norm(x, gain, offset):
    """``model.layer_norm`` of one row, stored as a matmul input (+ OFFSET); |x * gain * d| < 2**31 (config)."""
    d = x.shape[0]
    total = 0
    for j in range(d):
        total += abs(x[j])
    total = max(total, 1)
    inv = (1 << 32) // total
    for j in range(d):
        q = div_round_reciprocal(np.int64(x[j] * gain[j] * d), total, inv)
        offset[j] = clip8(q) + OFFSET


@njit(cache=True)  # a call, not inlined: seven inlined copies made the first compile 20 s longer
def _linear(offset, rows, w, corr, blk, noise, pairs, signs, sigma, shift, xb, low_rank, y):
    """y[b, :m] = rshift(x_b . W^T + s_b * ((x_b . B_b >> 4) . A_b^T >> sigma), shift) for each row b
    of the block, x_b = offset[b] - OFFSET; W is block ``blk`` of a packed tensor (gemm.pack),
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
            xb[b, k] = rshift_round(xb[b, k] + c0, 4)
            xb[b + 1, k] = rshift_round(xb[b + 1, k] + c0, 4)
            xb[b + 2, k] = rshift_round(xb[b + 2, k] + c1, 4)
            xb[b + 3, k] = rshift_round(xb[b + 3, k] + c1, 4)
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
def _add_context(first, rows, tokens, token_div, t, h, x, out, mirror, pairs, signs, hist, acc, acc_m, pert, emb_shift,
                 L, m):
    """x += the sum of the context tables' rows (``context.member_rows``) for byte t of each row, and
    the bytes before move on in the state's extra row (after the embedding, which reset the state at
    a 0 byte); with context logits, out[b] = the sum of the rows' last 256 entries, and with m.mirror
    mirror[b] = the same with the member's perturbation negated (``context.add_rows``)."""
    d, w, r, n_tables = x.shape[1], m.context.shape[2], m.n_context_b.shape[2], m.context.shape[0]
    for b in range(rows):
        byte = tokens[(first + b) // token_div, t]
        hp, xr = h[b, L], x[b]
        _ctx.load_history(hist, hp, byte, n_tables)
        for j in range(w):
            acc[j] = 0
            acc_m[j] = 0
        # each member hashes its own rows: a pair's members read the same bytes, but a state given
        # from outside may hold different bytes before
        p, s = pairs[b], np.int32(signs[b])
        for i in range(n_tables):
            row = _ctx.row_index(hist, i + 2, m.context_salts[i], m.context_bits)
            cr = m.context[i, row]
            if s == 0:
                for j in range(w):
                    acc[j] += np.int32(cr[j])
                continue
            key = m.n_context_keys[p, i]
            for c in range(r):
                a, bc = _ctx.factor_a(key, row, c, r, m.context_mult), m.n_context_b[p, i, c]
                for j in range(w):
                    pert[j] = np.int32((pert[j] if c > 0 else 0) + a * np.int32(bc[j]))
            # the mirror's entries too, read only with m.mirror: in the same loop they cost next to
            # nothing, where a loop of their own behind a branch slowed the forward by half
            for j in range(w):
                q = s * rshift_round(pert[j], emb_shift)
                acc[j] += clip8(np.int32(cr[j]) + q)
                acc_m[j] += clip8(np.int32(cr[j]) - q)
        for j in range(d):
            xr[j] = clip8(xr[j] + acc[j])
        for j in range(w - d):
            out[b, j] = acc[d + j]
            mirror[b, j] = acc_m[d + j]
        _ctx.push_byte(hp, byte, n_tables)


@njit(cache=True)
def _run_block(first, rows, tokens, token_div, state, ll, m):
    """Rows first .. first+rows of the batch through the whole window (the spec: ``model.forward``),
    ll (rows, 1, T), or (rows, 2, T) with m.mirror (each member's, then its mirror's); m: the model as
    the kernels read it (Operands)."""
    nb = BLOCK_ROWS
    L, d = m.norm.shape[0], state.shape[2]  # state.shape[1] is L + 1 with context tables (the bytes before)
    hdim = m.n_up_a.shape[3]
    sigma, shift_d, shift_h = m.sigma, m.shift_d, m.shift_h
    ne = m.n_embed_a, m.n_embed_b  # each matrix's perturbation as _linear reads it (_matrix_noise)
    ng, nu = (m.n_gru_a, m.n_gru_b, m.n_gru_bc), (m.n_up_a, m.n_up_b, m.n_up_bc)
    nd, nh = (m.n_down_a, m.n_down_b, m.n_down_bc), (m.n_head_a, m.n_head_b, m.n_head_bc)
    pairs = np.zeros(nb, np.int64)
    signs = np.zeros(nb, np.int64)
    for b in range(rows):
        if m.perturbed:
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
                _perturbed_vector(m.norm[l, k], m.n_norm[p, l, k], s, sigma, gains[l, k, b])
                _perturbed_vector(m.gru_bias[l, k], m.n_gru_bias[p, l, k], s, sigma, biases[l, k, b])
        _perturbed_vector(m.out_norm, m.n_out_norm[p], s, sigma, out_gain[b])
        _perturbed_vector(m.head_bias, m.n_head_bias[p], s, sigma, out_bias[b])
    h = np.zeros((nb, state.shape[1], d), np.int32)
    for b in range(rows):
        h[b] = state[first + b]
    x = np.zeros((nb, d), np.int32)
    gate = np.zeros((nb, d), np.int32)
    # matmul inputs, stored as uint8 = value + OFFSET
    a_u, h_u, r_u = np.zeros((nb, d), np.uint8), np.zeros((nb, d), np.uint8), np.zeros((nb, d), np.uint8)
    hid_u = np.zeros((nb, hdim), np.uint8)
    y1, y2 = np.zeros((nb, m.gru_c.shape[1]), np.int32), np.zeros((nb, m.gru_c.shape[1]), np.int32)
    y_up, y_head = np.zeros((nb, m.up_c.shape[1]), np.int32), np.zeros((nb, m.head_c.shape[1]), np.int32)
    # sums of the rank components past the first: _linear's (read from rank 2), and the embedding's
    # (zero at rank 1, where nothing writes it, so the embedding adds it without a branch)
    low_rank = np.zeros((2, max(hdim, 256)), np.int32)
    pert = np.zeros(d, np.int32)
    # the context tables' scratch: a history, the sum of rows, a row's perturbation (not pert, which
    # must stay 0 at rank 1)
    w = m.context.shape[2]
    ctx_hist, ctx_acc, ctx_pert = np.zeros(8, np.int64), np.zeros(w, np.int32), np.zeros(w, np.int32)
    ctx_acc_m = np.zeros(w, np.int32)
    ctx_logits = np.zeros((nb, 256), np.int32)  # the rows' logit entries (zero without context logits)
    ctx_mirror = np.zeros((nb, 256), np.int32)  # the mirrors' (context.mirrors)
    xb = np.zeros((nb, ne[0].shape[2]), np.int32)  # every row's x.B >> 4, per rank component
    logits = np.zeros(256, np.int32)
    emb_shift = 4 + sigma
    for t in range(tokens.shape[1] - 1):
        for b in range(rows):  # embedding row plus its low-rank perturbation
            byte = tokens[(first + b) // token_div, t]
            if byte == 0:  # a document starts: forget the previous one
                h[b] = 0
            xr, e = x[b], m.embed[byte]
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
                    q = rshift_round(np.int32(pert[j] + a0 * np.int32(b0[j])), emb_shift)
                    xr[j] = clip8(np.int32(e[j]) + q)
                    xm[j] = clip8(np.int32(e[j]) - q)
        if m.context_bits:
            _add_context(first, rows, tokens, token_div, t, h, x, ctx_logits, ctx_mirror, pairs, signs, ctx_hist,
                         ctx_acc, ctx_acc_m, ctx_pert, emb_shift, L, m)
        for l in range(L):
            for b in range(rows):
                _layer_norm(x[b], gains[l, 0, b], a_u[b])
                hr, hu = h[b, l], h_u[b]
                for j in range(d):
                    hu[j] = hr[j] + OFFSET
            _linear(a_u, rows, m.gru_w, m.gru_c, 4 * l, ng, pairs, signs, sigma, shift_d, xb, low_rank, y1)
            _linear(h_u, rows, m.gru_w, m.gru_c, 4 * l + 1, ng, pairs, signs, sigma, shift_d, xb, low_rank, y2)
            for b in range(rows):  # update gate, and the reset state fed to U_h
                y1r, y2r, bias, g, hr, ru = y1[b], y2[b], biases[l, 0, b], gate[b], h[b, l], r_u[b]
                for j in range(d):
                    gamma = np.int32(clip8(y1r[j] + y2r[j] + bias[j]) + GATE_BIAS)
                    g[j] = gamma
                    ru[j] = rshift_round(gamma * hr[j], 8) + OFFSET
            _linear(a_u, rows, m.gru_w, m.gru_c, 4 * l + 2, ng, pairs, signs, sigma, shift_d, xb, low_rank, y1)
            _linear(r_u, rows, m.gru_w, m.gru_c, 4 * l + 3, ng, pairs, signs, sigma, shift_d, xb, low_rank, y2)
            for b in range(rows):  # candidate, new state, residual; then the MLP's norm
                y1r, y2r, bias, g, hr, xr = y1[b], y2[b], biases[l, 1, b], gate[b], h[b, l], x[b]
                for j in range(d):
                    cand = clip8(y1r[j] + y2r[j] + bias[j])
                    hn = clip8(hr[j] + rshift_round(g[j] * (cand - hr[j]), 8))
                    hr[j] = hn
                    xr[j] = clip8(xr[j] + hn)
                _layer_norm(xr, gains[l, 1, b], a_u[b])
            _linear(a_u, rows, m.up_w, m.up_c, l, nu, pairs, signs, sigma, shift_d, xb, low_rank, y_up)
            for b in range(rows):
                yr, hu = y_up[b], hid_u[b]
                for j in range(hdim):
                    hu[j] = max(clip8(yr[j]), 0) + OFFSET
            _linear(hid_u, rows, m.down_w, m.down_c, l, nd, pairs, signs, sigma, shift_h, xb, low_rank, y1)
            for b in range(rows):
                xr, yr = x[b], y1[b]
                for j in range(d):
                    xr[j] = clip8(xr[j] + clip8(yr[j]))
        for b in range(rows):
            _layer_norm(x[b], out_gain[b], a_u[b])
        _linear(a_u, rows, m.head_w, m.head_c, 0, nh, pairs, signs, sigma, shift_d, xb, low_rank, y_head)
        for b in range(rows):
            yr, bias, extra = y_head[b], out_bias[b], ctx_logits[b]
            for v in range(256):
                logits[v] = clip8(yr[v] + bias[v] + extra[v])
            target = tokens[(first + b) // token_div, t + 1]
            ll[first + b, 0, t] = log_likelihood(logits, target, m.exp2, m.log2_frac, m.exp2_bits, m.mant_bits)
            if m.mirror:  # the same head, the mirror's rows
                extra = ctx_mirror[b]
                for v in range(256):
                    logits[v] = clip8(yr[v] + bias[v] + extra[v])
                ll[first + b, 1, t] = log_likelihood(logits, target, m.exp2, m.log2_frac, m.exp2_bits, m.mant_bits)
    for b in range(rows):
        state[first + b] = h[b]


@njit(parallel=True, cache=True)
def _run_blocks(tokens, token_div, state, ll, m):
    total = state.shape[0]
    for blk in prange(-(-total // BLOCK_ROWS)):
        first = np.int64(blk) * BLOCK_ROWS
        _run_block(first, min(BLOCK_ROWS, total - first), tokens, token_div, state, ll, m)


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
            (a, _), (b, b_corr) = (_as_rows(v) for v in factors(cfg, t, noise))
            out[t.name] = (a, b, b_corr)
        elif t.kind == "vector":
            out[t.name] = noise[t.name]
    return out


@functools.lru_cache(maxsize=8)
def _no_noise(cfg: Config) -> dict:
    """A zero perturbation with one pair, for the unperturbed forward (never read: sign 0), in the
    layout _operands makes of noise; made once per config, since the optimisers other than EGGROLL
    call the unperturbed forward once per member."""
    return _matrix_noise(cfg, {t.name: split_streams(cfg, t, np.zeros((1, t.blocks, noise_layout(cfg, t)[0]), np.int8))
                               for t in tensors(cfg) if t.kind != "table"})


def _corrections(params, names) -> dict:
    """Each matrix's offset correction (gemm.correction) plus the rounding of its final shift
    (matmul_shift of its input width, as model.Members.linear), added once here instead of once per
    output of every row."""
    return {name: correction(params[name]) + np.int32((1 << matmul_shift(params[name].shape[-1])) >> 1)
            for name in names}


# The model as the forward's kernels read it, built once per call (_operands) and handed down whole:
# the settings; the parameters (matrices packed for gemm, with their corrections _c; vectors as they
# are); the perturbation, n_ (a matrix's as its A rows _a, B rows _b and B's offset correction _bc,
# see _matrix_noise; vectors as they are); the log-likelihood's tables. Flat: Numba's parallel loop
# takes a tuple of arrays and scalars, not a tuple holding tuples.
MATRICES = ("embed", "gru", "up", "down", "head")
PACKED = MATRICES[1:]  # packed for gemm (the embedding is a lookup)
VECTORS = ("gru_bias", "norm", "out_norm", "head_bias")
Operands = namedtuple("Operands", [
    "perturbed", "mirror", "sigma", "shift_d", "shift_h", "exp2", "log2_frac", "exp2_bits", "mant_bits",
    "embed", "gru_bias", "norm", "out_norm", "head_bias",
    "gru_w", "gru_c", "up_w", "up_c", "down_w", "down_c", "head_w", "head_c",
    "n_embed_a", "n_embed_b", "n_embed_bc", "n_gru_a", "n_gru_b", "n_gru_bc", "n_up_a", "n_up_b", "n_up_bc",
    "n_down_a", "n_down_b", "n_down_bc", "n_head_a", "n_head_b", "n_head_bc",
    "n_gru_bias", "n_norm", "n_out_norm", "n_head_bias",
    "context_bits", "context_salts", "context_mult", "context", "n_context_keys", "n_context_b"])


def _operands(params, cfg: Config, noise, perturbed: bool) -> Operands:
    c = _corrections(params, PACKED)
    nz = _matrix_noise(cfg, noise) if perturbed else noise
    fields = {"perturbed": perturbed, "mirror": perturbed and context.mirrors(cfg), "sigma": cfg.sigma_shift, "shift_d": matmul_shift(cfg.width),
              "shift_h": matmul_shift(cfg.mlp_width), "exp2": EXP2, "log2_frac": LOG2_FRAC, "exp2_bits": EXP2_BITS,
              "mant_bits": LOG2_MANTISSA_BITS, "embed": params["embed"]}
    for name in PACKED:
        fields[name + "_w"], fields[name + "_c"] = pack(params[name]).reshape(-1), c[name]
    for name in MATRICES:
        fields["n_" + name + "_a"], fields["n_" + name + "_b"], fields["n_" + name + "_bc"] = nz[name]
    for name in VECTORS:
        fields[name], fields["n_" + name] = params[name], nz[name]
    fields.update(_ctx.operands(params, cfg, noise, perturbed))
    return Operands(**fields)


def _run(params, cfg: Config, tokens, token_div, state, noise, perturbed):
    # perturbed rows come in antithetic pairs reading one token row (the embedding's perturbation
    # is computed once per pair)
    assert token_div == 2 or not perturbed
    m = _operands(params, cfg, noise, perturbed)
    ll = np.zeros((state.shape[0], 1 + m.mirror, tokens.shape[1] - 1), dtype=np.int32)
    work = state.astype(np.int32)
    if state.shape[0] <= BLOCK_ROWS:  # one block: on this thread (waking the others costs more than it)
        _run_block(0, state.shape[0], tokens, token_div, work, ll, m)
    else:
        _run_blocks(tokens, token_div, work, ll, m)
    state[...] = work
    return ll if m.mirror else ll[:, 0]


def population_fitness(params, cfg: Config, noise, pair_tokens, state, p0: int, p1: int, positions=False):
    """As ``model.population_fitness`` of pairs [p0, p1): member 2 * p0 + i reads pair_tokens[p0 + i // 2]
    and carries state[2 * p0 + i], updated in place; noise holds the range's pairs."""
    ll = _run(params, cfg, np.ascontiguousarray(pair_tokens[p0:p1]), 2, state[2 * p0:2 * p1], noise, True)
    return ll if positions else window_fitness(ll)


def forward(params, cfg: Config, tokens, state):
    """As ``model.forward`` without noise: log-likelihoods (rows, T); state updated in place."""
    return _run(params, cfg, np.ascontiguousarray(tokens), 1, state, _no_noise(cfg), False)


