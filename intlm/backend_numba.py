"""Numba CPU backend: the model, noise and update of the NumPy reference, bit for bit, in parallel.

The population is split across cores by member: each member runs its whole window on its own
(one member = one core's working set: the weights, shared read-only, stay in cache). Matrix-vector
products are written as x_i * W^T[i, :] accumulations into an int32 row, a loop LLVM vectorises.
"""

import numpy as np
from numba import njit, prange

from .arith import EXP2, EXP2_BITS, LOG2_FRAC, LOG2_MANTISSA_BITS, matmul_shift
from .config import Config
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
    if s == 0:
        return x
    return (x + (1 << (s - 1))) >> s


@njit(inline="always")
def _clip8(x):
    return min(max(x, -127), 127)


@njit(parallel=True, cache=True)
def _fill_streams(seed, tensor_ids, step, pairs, count, mult, out):
    """out[p, b, :] = the first `count` values of stream (seed, tensor_ids[b], step, p)."""
    for pp in prange(pairs):
        p = np.int64(pp)
        for b in range(tensor_ids.shape[0]):
            k = _mix(U64(seed) ^ U64(SEED_SALT))
            k = _mix(k ^ U64(tensor_ids[b]))
            k = _mix(k ^ U64(step))
            k = _mix(k ^ U64(p))
            for i in range(count):
                h = _mix(k ^ _mix(U64(i) + U64(GOLDEN)))
                c = np.int64(0)
                for byte in range(8):
                    c += np.int64((h >> U64(8 * byte)) & U64(255))
                c -= 1020
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

@njit(inline="always")
def _linear(x, WT, A, B, sign, sigma, shift, xb, acc, out):
    """out = rshift(x . W^T + sign * ((x.B >> 4) . A^T >> sigma), shift); WT is W transposed (n, m)."""
    n, m = WT.shape
    for j in range(m):
        acc[j] = 0
    for i in range(n):
        xi = x[i]
        if xi != 0:
            for j in range(m):
                acc[j] += xi * WT[i, j]
    if sign != 0:
        r = B.shape[1]
        for k in range(r):
            s = 0
            for i in range(n):
                s += x[i] * B[i, k]
            xb[k] = _rshift(s, 4)
        for j in range(m):
            lr = 0
            for k in range(r):
                lr += xb[k] * A[j, k]
            acc[j] += sign * _rshift(lr, sigma)
    for j in range(m):
        out[j] = _rshift(acc[j], shift)


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
def _layer_norm(x, g, out):
    d = x.shape[0]
    total = 0
    for j in range(d):
        total += abs(x[j])
    total = max(total, 1)
    for j in range(d):
        num = x[j] * g[j] * d
        mag = (abs(num) + total // 2) // total
        out[j] = _clip8(-mag if num < 0 else mag)


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
def _run_row(tokens, state, ll, sign, pair, sigma, shifts,
             embed, gruT, gru_bias, norm, upT, downT, out_norm, headT, head_bias,
             n_emb_a, n_emb_b, n_gru_a, n_gru_b, n_up_a, n_up_b, n_down_a, n_down_b, n_head_a, n_head_b,
             n_gru_bias, n_norm, n_out_norm, n_head_bias, exp2, log2_frac, exp2_bits, mant_bits):
    L, d = state.shape
    hdim = upT.shape[2]
    r = n_emb_a.shape[2]
    x = np.zeros(d, np.int32)
    a = np.zeros(d, np.int32)
    h = np.zeros(d, np.int32)
    t1 = np.zeros(d, np.int32)
    t2 = np.zeros(d, np.int32)
    reset = np.zeros(d, np.int32)
    hid = np.zeros(hdim, np.int32)
    logits = np.zeros(256, np.int32)
    acc = np.zeros(max(hdim, 256), np.int32)
    xb = np.zeros(r, np.int32)
    sh_d, sh_h = shifts[0], shifts[1]
    gains = np.zeros((L, 2, d), np.int32)
    biases = np.zeros((L, 2, d), np.int32)
    for l in range(L):
        for k in range(2):
            _perturbed_vector(norm[l, k], n_norm[pair, l, k], sign, sigma, gains[l, k])
            _perturbed_vector(gru_bias[l, k], n_gru_bias[pair, l, k], sign, sigma, biases[l, k])
    out_gain = np.zeros(d, np.int32)
    _perturbed_vector(out_norm, n_out_norm[pair], sign, sigma, out_gain)
    out_bias = np.zeros(256, np.int32)
    _perturbed_vector(head_bias, n_head_bias[pair], sign, sigma, out_bias)
    T = tokens.shape[0] - 1
    for t in range(T):
        byte = tokens[t]
        if byte == 0:
            state[:, :] = 0
        # embedding row plus its low-rank perturbation
        for j in range(d):
            v = np.int32(embed[byte, j])
            if sign != 0:
                p = 0
                for k in range(r):
                    p += np.int32(n_emb_a[pair, byte, k]) * np.int32(n_emb_b[pair, j, k])
                v = _clip8(v + sign * _rshift(p, 4 + sigma))
            x[j] = v
        for l in range(L):
            for j in range(d):
                h[j] = state[l, j]
            _layer_norm(x, gains[l, 0], a)
            _linear(a, gruT[l, 0], n_gru_a[pair, l, 0], n_gru_b[pair, l, 0], sign, sigma, sh_d, xb, acc, t1)
            _linear(h, gruT[l, 1], n_gru_a[pair, l, 1], n_gru_b[pair, l, 1], sign, sigma, sh_d, xb, acc, t2)
            for j in range(d):
                f = _clip8(t1[j] + t2[j] + biases[l, 0, j])
                gamma = f + GATE_BIAS
                t1[j] = gamma  # keep the gate for the state update
                reset[j] = _rshift(gamma * h[j], 8)
            _linear(a, gruT[l, 2], n_gru_a[pair, l, 2], n_gru_b[pair, l, 2], sign, sigma, sh_d, xb, acc, t2)
            _linear(reset, gruT[l, 3], n_gru_a[pair, l, 3], n_gru_b[pair, l, 3], sign, sigma, sh_d, xb, acc, reset)
            for j in range(d):
                cand = _clip8(t2[j] + reset[j] + biases[l, 1, j])
                hn = _clip8(h[j] + _rshift(t1[j] * (cand - h[j]), 8))
                state[l, j] = hn
                x[j] = _clip8(x[j] + hn)
            _layer_norm(x, gains[l, 1], a)
            _linear(a, upT[l], n_up_a[pair, l], n_up_b[pair, l], sign, sigma, sh_d, xb, acc, hid)
            for j in range(hdim):
                hid[j] = max(_clip8(hid[j]), 0)
            _linear(hid, downT[l], n_down_a[pair, l], n_down_b[pair, l], sign, sigma, sh_h, xb, acc, t2)
            for j in range(d):
                x[j] = _clip8(x[j] + _clip8(t2[j]))
        _layer_norm(x, out_gain, a)
        _linear(a, headT, n_head_a[pair], n_head_b[pair], sign, sigma, sh_d, xb, acc, logits)
        for v in range(256):
            logits[v] = _clip8(logits[v] + out_bias[v])
        ll[t] = _log_likelihood(logits, tokens[t + 1], exp2, log2_frac, exp2_bits, mant_bits)


@njit(parallel=True, cache=True)
def _run_rows(tokens, state, ll, perturbed, sigma, shifts, embed, gruT, gru_bias, norm, upT, downT,
              out_norm, headT, head_bias, n_emb_a, n_emb_b, n_gru_a, n_gru_b, n_up_a, n_up_b,
              n_down_a, n_down_b, n_head_a, n_head_b, n_gru_bias, n_norm, n_out_norm, n_head_bias,
              exp2, log2_frac, exp2_bits, mant_bits):
    for ii in prange(state.shape[0]):
        i = np.int64(ii)
        if perturbed:
            pair, sign, row = i // 2, 1 - 2 * (i % 2), i // 2
        else:
            pair, sign, row = 0, 0, i
        _run_row(tokens[row], state[i], ll[i], sign, pair, sigma, shifts,
                 embed, gruT, gru_bias, norm, upT, downT, out_norm, headT, head_bias,
                 n_emb_a, n_emb_b, n_gru_a, n_gru_b, n_up_a, n_up_b, n_down_a, n_down_b, n_head_a, n_head_b,
                 n_gru_bias, n_norm, n_out_norm, n_head_bias, exp2, log2_frac, exp2_bits, mant_bits)


def _transposed(params):
    return {k: np.ascontiguousarray(np.swapaxes(v, -1, -2)) for k, v in params.items()
            if k in ("gru", "up", "down", "head")}


def _no_noise(cfg: Config) -> dict:
    """A zero perturbation with one pair, for the unperturbed forward (never read: sign 0)."""
    return {t.name: split_streams(cfg, t, np.zeros((1, t.blocks, noise_layout(cfg, t)[0]), np.int8))
            for t in tensors(cfg)}


def _run(params, cfg: Config, tokens, state, noise, perturbed):
    rows = state.shape[0]
    ll = np.zeros((rows, tokens.shape[1] - 1), dtype=np.int32)
    wt = _transposed(params)
    shifts = np.array([matmul_shift(cfg.width), matmul_shift(cfg.hidden)], dtype=np.int64)
    nz = noise
    _run_rows(tokens, state, ll, perturbed, cfg.sigma_shift, shifts,
              params["embed"], wt["gru"], params["gru_bias"], params["norm"], wt["up"], wt["down"],
              params["out_norm"], wt["head"], params["head_bias"],
              nz["embed"][0], nz["embed"][1], nz["gru"][0], nz["gru"][1], nz["up"][0], nz["up"][1],
              nz["down"][0], nz["down"][1], nz["head"][0], nz["head"][1],
              nz["gru_bias"], nz["norm"], nz["out_norm"], nz["head_bias"],
              EXP2, LOG2_FRAC, EXP2_BITS, LOG2_MANTISSA_BITS)
    return ll


def population_fitness(params, cfg: Config, noise, pair_tokens, state):
    """As ``model.population_fitness``: member i reads pair_tokens[i // 2]; state updated in place."""
    ll = _run(params, cfg, np.ascontiguousarray(pair_tokens), state, noise, True)
    return ll.sum(axis=1, dtype=np.int64).astype(np.int32)


def forward(params, cfg: Config, tokens, state):
    """As ``model.forward`` without noise: log-likelihoods (rows, T); state updated in place."""
    return _run(params, cfg, np.ascontiguousarray(tokens), state, _no_noise(cfg), False)


@njit(parallel=True, cache=True)
def _matrix_sums(f, a, b, out):
    """out[blk] = sum_p f[p] * a[p, blk] @ b[p, blk]^T, parallel over output rows."""
    P, blocks, m, r = a.shape
    n = b.shape[2]
    for rr in prange(blocks * m):
        row = np.int64(rr)
        blk, i = row // m, row % m
        for j in range(n):
            out[blk, i, j] = 0
        for p in range(P):
            if f[p] == 0:
                continue
            for k in range(r):
                c = f[p] * np.int32(a[p, blk, i, k])
                if c != 0:
                    for j in range(n):
                        out[blk, i, j] += c * b[p, blk, j, k]


def update_sums(cfg: Config, noise, f) -> dict:
    """As ``es.update_sums``: Z per parameter, int32."""
    f32 = f.astype(np.int32)
    Z = {}
    for t in tensors(cfg):
        if t.kind == "matrix":
            a, b = noise[t.name]
            m, n = t.shape[-2:]
            z = np.empty((t.blocks, m, n), dtype=np.int32)
            _matrix_sums(f32, a.reshape(cfg.pairs, t.blocks, m, cfg.rank), b.reshape(cfg.pairs, t.blocks, n, cfg.rank), z)
            Z[t.name] = z.reshape(t.shape)
        else:
            e = noise[t.name].reshape(cfg.pairs, -1).astype(np.int32)
            Z[t.name] = (f32 @ e).reshape(t.shape)
    return Z

