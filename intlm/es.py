"""The EGGROLL update in integers: fitness shaping, the z-test threshold, and thresholded +-1 steps.

Z = sum_p f_p A_p B_p^T for a matrix (sum_p f_p e_p for a vector) estimates the fitness gradient.
Under the null of no signal each entry of Z is a sum of independent terms of std NOISE_STD_PRODUCT
(resp. 16) times |f_p|, so |Z| > z_alpha * std * sqrt(sum f_p^2) moves about a fraction alpha_t of
the weights by +-1; with signal, more move. alpha_t = alpha_0 * H / (H + t) anneals the step.
The threshold is never 0 (z >= 1/16), so no step moves every weight, and Z = 0 never moves one.
"""

import numpy as np

from .arith import TAIL_Q31, clip8, isqrt
from .config import RANK_LEVELS, Config
from .model import tensors

NOISE_STD = 16  # std of one noise value
NOISE_STD_PRODUCT = NOISE_STD * NOISE_STD  # std of sum over rank of a.b (rank scaling keeps it)


def shape_fitness(fitness, mode: str):
    """Pair fitnesses f (pairs,) int32 from member fitnesses (+ member first) and the tie count.

    sign: f = sign(F+ - F-). rank: every member gets its rank among all members (ties share the
    mean rank, doubled to stay integer), f = (rank+ - rank-) mapped to -RANK_LEVELS..RANK_LEVELS.
    """
    plus, minus = fitness[0::2].astype(np.int64), fitness[1::2].astype(np.int64)
    ties = int(np.count_nonzero(plus == minus))
    if mode == "sign":
        return np.sign(plus - minus).astype(np.int32), ties
    P = fitness.shape[0]
    order = np.argsort(fitness, kind="stable")
    sorted_f = fitness[order]
    # doubled mean rank of each run of equal values: first + last index of the run
    starts = np.searchsorted(sorted_f, sorted_f, side="left")
    ends = np.searchsorted(sorted_f, sorted_f, side="right") - 1
    rank2 = np.empty(P, dtype=np.int64)
    rank2[order] = starts + ends
    diff = rank2[0::2] - rank2[1::2]  # in -(2P-2) .. 2P-2
    den = 2 * (P - 1)
    mag = (np.abs(diff) * RANK_LEVELS * 2 + den) // (2 * den)
    return (np.sign(diff) * mag).astype(np.int32), ties


def z_threshold_q4(cfg: Config, step: int) -> int:
    """z_alpha in 1/16 units: the smallest z >= 1 with P(|N(0,1)| > z/16) <= alpha_t."""
    H = cfg.alpha_halflife
    alpha_q31 = (cfg.alpha_q16 << 15) * H // (H + step)
    z = int(np.searchsorted(-TAIL_Q31, -alpha_q31, side="left"))
    return max(1, min(z, len(TAIL_Q31) - 1))


def apply_steps(param, Z, thr):
    """Move each weight by sign(Z) where |Z| > thr, saturating; returns how many moved."""
    move = np.where(np.abs(Z) > thr, np.sign(Z), 0)
    param[...] = clip8(param.astype(np.int32) + move).astype(np.int8)
    return int(np.count_nonzero(move))


def thresholds(cfg: Config, step: int, f) -> tuple:
    """(matrix threshold, vector threshold) for this step's pair fitnesses."""
    z = z_threshold_q4(cfg, step)
    sumsq = int(np.sum(f.astype(np.int64) ** 2))
    # z/16 * std * sqrt(sum f^2), with the square root taken last so it loses nothing
    return (isqrt(z * z * NOISE_STD_PRODUCT ** 2 * sumsq) // 16,
            isqrt(z * z * NOISE_STD ** 2 * sumsq) // 16)


def update_sums(cfg: Config, noise, f) -> dict:
    """Z for every parameter (NumPy spec): one integer product over pairs per matrix."""
    f64 = f.astype(np.int64)
    Z = {}
    for t in tensors(cfg):
        if t.kind == "matrix":
            a, b = noise[t.name]
            Z[t.name] = np.einsum("p,p...mr,p...nr->...mn", f64, a.astype(np.int64), b.astype(np.int64))
        else:
            Z[t.name] = np.einsum("p,p...->...", f64, noise[t.name].astype(np.int64))
    return Z


def update(params, cfg: Config, step: int, f, Z) -> int:
    """Apply the thresholded +-1 steps in place; returns the number of weights moved."""
    if not np.any(f):
        return 0
    thr_matrix, thr_vector = thresholds(cfg, step, f)
    moved = 0
    for t in tensors(cfg):
        moved += apply_steps(params[t.name], Z[t.name], thr_matrix if t.kind == "matrix" else thr_vector)
    return moved
