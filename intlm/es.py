"""The EGGROLL update in integers: fitness shaping, the z-test threshold, and thresholded +-1 steps.

Z = sum_p f_p A_p B_p^T for a matrix (sum_p f_p e_p for a vector) estimates the fitness gradient.
Under the null of no signal each entry of Z is a sum of independent terms of std NOISE_STD_PRODUCT
(resp. 16) times |f_p|, so |Z| > z_alpha * std * sqrt(sum f_p^2) moves about a fraction alpha_t of
the weights by +-1; with signal, more move. alpha_t = alpha_0 * H / (H + t) anneals the step.
The threshold is never 0 (z >= 1/16), so no step moves every weight, and Z = 0 never moves one.

Optional integer momentum (``momentum_shift`` k > 0), our addition: each weight keeps an integer
M = M - sign(M)(|M| >> k) + Z and the threshold applies to M, whose null std is larger by
sqrt(4**k / (2**(k+1) - 1)); a weight that moves spends the threshold from its M (error feedback),
so evidence is averaged over about 2**k steps without moving the same weight every step.

Z and M are exact integers: the spec sums in int64; M is stored as int32 where its worst case fits
(every population up to about 10,000 with the default update), else as int64 (``momentum_dtype``).
"""

import numpy as np

from . import context
from .arith import TAIL_Q31, clip8, graded, isqrt
from .config import INT32_MAX, LINEAR_SPAN, RANK_LEVELS, Config, worst_case_bounds
from .noise import NOISE_STD, NOISE_STD_PRODUCT
from .params import tensors


def shape_fitness(fitness, mode: str):
    """Pair fitnesses f (pairs,) int32 from member fitnesses (+ member first) and the tie count.

    sign: f = sign(F+ - F-). rank: the same sign, graded by how large |F+ - F-| is among all
    pairs: f = sign * (1 + (RANK_LEVELS - 1) * rank / (pairs - 1)), rounded, with tied |d| sharing
    their mean rank (doubled to stay integer). linear: f = d itself, scaled so that LINEAR_SPAN
    times the mean |d| is RANK_LEVELS, rounded and clipped there (the plain ES estimate, with its
    tail cut; a pair whose members barely differ counts next to nothing, where rank counts it 1).
    Pairs see different bytes, so only the difference within a pair is comparable across pairs,
    not the raw fitnesses.
    """
    d = fitness[0::2].astype(np.int64) - fitness[1::2].astype(np.int64)
    ties = int(np.count_nonzero(d == 0))
    if mode == "sign" or d.shape[0] == 1:
        return np.sign(d).astype(np.int32), ties
    mag = np.abs(d)
    if mode == "linear":
        mean = max(1, int(mag.sum()) // d.shape[0])  # |d| < 2**32 a pair, so the sum fits int64
        return graded(d, LINEAR_SPAN * mean, RANK_LEVELS).astype(np.int32), ties
    order = np.argsort(mag, kind="stable")
    sorted_mag = mag[order]
    rank2 = np.empty(d.shape[0], dtype=np.int64)  # first + last index of each run of equal |d|
    rank2[order] = (np.searchsorted(sorted_mag, sorted_mag, side="left")
                    + np.searchsorted(sorted_mag, sorted_mag, side="right") - 1)
    den = 2 * (d.shape[0] - 1)
    level = 1 + ((RANK_LEVELS - 1) * 2 * rank2 + den) // (2 * den)
    return (np.sign(d) * level).astype(np.int32), ties


def z_threshold_q4(cfg: Config, step: int) -> int:
    """z_alpha in 1/16 units: the smallest z >= 1 with P(|N(0,1)| > z/16) <= alpha_t."""
    H = cfg.alpha_halflife
    alpha_q31 = (cfg.alpha_q16 << 15) * H // (H + step)
    z = int(np.searchsorted(-TAIL_Q31, -alpha_q31, side="left"))
    return max(1, min(z, len(TAIL_Q31) - 1))


def apply_moves(param, Z, thr):
    """Move each weight by sign(Z) where |Z| > thr, saturating; returns the attempted moves."""
    move = np.where(np.abs(Z) > thr, np.sign(Z), 0).astype(np.int32)
    param[...] = clip8(param.astype(np.int32) + move).astype(np.int8)
    return move


def thresholds(cfg: Config, step: int, f) -> tuple:
    """(matrix threshold, vector threshold) for this step's pair fitnesses."""
    z = z_threshold_q4(cfg, step)
    k = cfg.momentum_shift
    var = z * z * int(np.sum(f.astype(np.int64) ** 2)) * 4 ** k // (2 ** (k + 1) - 1)
    # z/16 * std * sqrt(variance factor), with the square root taken last so it loses nothing
    return isqrt(var * NOISE_STD_PRODUCT ** 2) // 16, isqrt(var * NOISE_STD ** 2) // 16


def update_sums(cfg: Config, noise, f, reads=None, local=None) -> dict:
    """Z for every parameter (NumPy spec), by kind: a matrix's sum over pairs of f_p A_p B_p^T (one
    integer product), a vector's of f_p e_p, a table's sparse sums of the rows read
    (context.update_sums, from the rows each pair's window read: ``reads``, context.rows_read, and with
    reads credit each pair's per-byte fitness differences ``local``, context.credit)."""
    f64 = f.astype(np.int64)
    Z = {}
    for t in tensors(cfg):
        if t.kind == "matrix":
            a, b = noise[t.name]
            Z[t.name] = np.einsum("p,p...mr,p...nr->...mn", f64, a.astype(np.int64), b.astype(np.int64))
        elif t.kind == "vector":
            Z[t.name] = np.einsum("p,p...->...", f64, noise[t.name].astype(np.int64))
        else:
            Z[t.name] = context.update_sums(cfg, noise[t.name], f, reads, local)
    return Z


def momentum_dtype(cfg: Config):
    """int32 where the momentum's worst case fits it (so earlier checkpoints stay byte-identical),
    else int64."""
    return np.int32 if worst_case_bounds(cfg)["momentum M"] <= INT32_MAX else np.int64


def init_momentum(cfg: Config, params) -> dict:
    """The momentum of every parameter, zeros of ``momentum_dtype`` (empty without momentum)."""
    if not cfg.momentum_shift:
        return {}
    return {name: np.zeros(p.shape, dtype=momentum_dtype(cfg)) for name, p in params.items()}


def update(params, cfg: Config, step: int, f, Z, momentum=None) -> int:
    """Apply the thresholded +-1 steps in place (and the momentum, if any); returns weights moved.
    A dense parameter's momentum decays every step; a table's rows only when read (context.update)."""
    k = cfg.momentum_shift
    if k:
        for t in tensors(cfg):
            if t.kind != "table":
                m = momentum[t.name]
                m -= np.sign(m) * (np.abs(m) >> k)
                m += Z[t.name]
    if not np.any(f):
        return 0
    thr_matrix, thr_vector = thresholds(cfg, step, f)
    moved = 0
    for t in tensors(cfg):
        if t.kind == "table":
            moved += context.update(params[t.name], cfg, z_threshold_q4(cfg, step), *Z[t.name],
                                    momentum[t.name] if k else None)
            continue
        evidence = momentum[t.name] if k else Z[t.name]
        thr = thr_matrix if t.kind == "matrix" else thr_vector
        move = apply_moves(params[t.name], evidence, thr)
        if k:
            evidence -= move * thr  # spend the evidence that moved the weight
        moved += int(np.count_nonzero(move))
    return moved


def share_pair_state(recurrent):
    """Both members of each pair continue from their mean state (rounded half up), so the next
    step's F+ - F- measures the perturbation alone, not two diverged histories; to first order the
    mean of an antithetic pair is the unperturbed model's state."""
    pairs = recurrent.reshape(recurrent.shape[0] // 2, 2, -1)  # a view: writes land in recurrent
    mean = (pairs[:, 0].astype(np.int16) + pairs[:, 1] + 1) >> 1  # in [-127, 127]; int16 holds the sum
    pairs[:, 0] = mean
    pairs[:, 1] = mean
