"""The EGGROLL update of ``es`` in Numba: the sums Z = sum_p f_p A_p B_p^T (``es.update_sums``) as
int16 products on the CPU's pairwise dot-product instruction, and the thresholded +-1 steps with
momentum (``es.update``) as one fused pass per tensor."""

import numpy as np
from numba import njit, prange

from ... import es
from ...config import UPDATE_CHUNK, Config
from ...params import tensors
from . import context as _context
from .arith import clip8
from .gemm import TILE_ROWS, gemm16, padded
from .noise import factors


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


def update_sums(cfg: Config, noise, f, reads=None, local=None) -> dict:
    """As ``es.update_sums``: Z per parameter, exact (int32 where one chunk holds every term of a
    matrix, else int64). |f * a| <= 8 * 78 fits int16."""
    Z = {}
    ones = np.ones(cfg.pairs, np.int16)
    for t in tensors(cfg):
        if t.kind == "matrix":
            z = _matrix_update_sum(cfg, t, *factors(cfg, t, noise), f, ones)
            Z[t.name] = np.ascontiguousarray(z[:, :, :t.shape[-1]]).reshape(t.shape)
        elif t.kind == "vector":
            Z[t.name] = _vector_sums(f, noise[t.name].reshape(cfg.pairs, -1)).reshape(t.shape)
        else:
            Z[t.name] = _context.update_sums(cfg, noise[t.name], f, reads, local)
    return Z


@njit(parallel=True, cache=True)
def _apply_moves(param, z, momentum, k, thr, moving):
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
        param[i] = clip8(np.int64(param[i]) + move)
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
        if t.kind == "table":  # sparse: the rows read, their momentum decayed only then
            if moving:
                moved += _context.update(params[t.name], cfg, es.z_threshold_q4(cfg, step), *Z[t.name],
                                         momentum[t.name] if cfg.momentum_shift else None)
            continue
        arrays = [params[t.name], Z[t.name]] + ([momentum[t.name]] if cfg.momentum_shift else [])
        if not all(a.flags.c_contiguous for a in arrays):
            raise ValueError(f"{t.name}: update arrays must be C-contiguous (updated through flat views)")
        flat = [a.reshape(-1) for a in arrays]
        moved += _apply_moves(flat[0], flat[1], flat[2] if cfg.momentum_shift else none, cfg.momentum_shift,
                              thr_matrix if t.kind == "matrix" else thr_vector, moving)
    return int(moved)
