"""Separable CMA-ES (Ros & Hansen's sep-CMA-ES, rank-mu update and cumulative step-size adaptation)
in integer fixed point.

State (units.py), per weight: the mean (1/256 int8 units), a log2 step size relative to the global
one and an evolution path (256 = 1.0); and one global log2 step size, both logs in 1/65536 octaves.
A member's offset is z * S / 16 with S = 2**(global + own) mean units (a 256-entry table of
2**(j/256) and a shift), starting at 2**(4 - sigma_shift) int8 units, EGGROLL's perturbation scale.
Each step, with the population ranked (ranked.py) and mu = population / 2 best members weighted by
w_j proportional to mu - j (integers summing to 2**16; the log weights of CMA-ES need a float log):

    mean       += sum_j w_j d_j                                    d_j the members' offsets
    path        = path - c_s * path + sqrt(c_s (2 - c_s) mu_eff) * sum_j w_j z_j
    own log S  += c_mu / (2 ln 2) * (sum_j w_j z_j**2 - 1)          the diagonal covariance, as a log
    global log S += c_s / (2 ln 2 d_s) * (|path|**2 / n - 1)       CSA on the squared norm

with d_s = --sepcma-damping (1 unless set, the CMA-ES default at these n; a larger d_s slows the
growth of the global step that a steadily drifting mean causes, see scripts/optimizers/README.md), c_s, c_mu the
sep-CMA-ES defaults for n weights and mu_eff (integers in 1/65536, from the integer weights), each
product rounded half away from 0, so flipping every z flips the mean's step and the path and leaves
the step sizes alone. No rank-one update (no second path): with n ~ 10**4..10**5 weights its rate
c_1 ~ 2/n would be far below one step of the log's resolution.
The path saturates at 16 and the logs are held within [0, LOG_SCALE_MAX].
"""

import functools
from typing import NamedTuple

import numpy as np

from ..arith import div_round, iroot, isqrt
from ..config import parameter_count
from ..params import tensors
from . import ranked
from .units import LOG_SCALE_MAX, MEAN_SHIFT, PATH_MAX, RANK_WEIGHT_ONE, SCALE_MAX, SCALE_MIN

Q16 = 1 << 16
INV_LN2_Q16 = 94548  # floor(2**16 / ln 2)
# OCTAVE_Q16[j] = floor(2**16 * 2**(j / 256)), integers only
OCTAVE_Q16 = np.array([iroot(1 << (16 * 256 + j), 256) for j in range(256)], dtype=np.int64)


class Constants(NamedTuple):
    n: int  # weights
    mu: int
    weights: tuple  # recombination weights, best first, in 1/2**16, summing to RANK_WEIGHT_ONE
    mu_eff: int
    c_sigma: int  # in 1/2**16
    path_gain: int  # sqrt(c_sigma (2 - c_sigma) mu_eff), in 1/2**16
    c_mu: int  # in 1/2**16, at most 1/2
    damping: int  # d_sigma


@functools.lru_cache(maxsize=16)
def constants(cfg) -> Constants:
    n = parameter_count(cfg)
    mu = cfg.population // 2
    raw = mu * (mu + 1) // 2
    weights = [(mu - j) * RANK_WEIGHT_ONE // raw for j in range(mu)]
    weights[0] += RANK_WEIGHT_ONE - sum(weights)
    mu_eff = max(1, RANK_WEIGHT_ONE ** 2 // sum(w * w for w in weights))
    c_sigma = max(1, ((mu_eff + 2) << 16) // (n + mu_eff + 5))
    path_gain = isqrt(c_sigma * (2 * Q16 - c_sigma) * mu_eff)
    # sep-CMA-ES: (n + 2) / 3 times CMA-ES's c_mu = 2 (mu_eff - 2 + 1/mu_eff) / ((n + 2)**2 + mu_eff)
    c_mu = min(Q16 // 2, (2 * (mu_eff - 1) ** 2 * (n + 2) << 16) // (3 * mu_eff * ((n + 2) ** 2 + mu_eff)))
    return Constants(n, mu, tuple(weights), mu_eff, c_sigma, path_gain, c_mu, cfg.sepcma_damping)


def step_size(log_scale):
    """2**(log_scale / 2**16) mean units for logs in [0, LOG_SCALE_MAX] (int64, within [SCALE_MIN, SCALE_MAX])."""
    log_scale = np.asarray(log_scale, np.int64)
    s = (OCTAVE_Q16[(log_scale >> 8) & 255] << (log_scale >> 16)) + (Q16 >> 1) >> 16
    return np.clip(s, SCALE_MIN, SCALE_MAX)


def step_sizes(run) -> dict:
    """Every weight's step size S from the global and its own log step size."""
    own = ranked.by_parameter(run.optimizer_state, "log_scale.")
    glob = int(run.optimizer_state["log_sigma"][0])
    return {name: step_size(np.clip(glob + v.astype(np.int64), 0, LOG_SCALE_MAX)) for name, v in own.items()}


def update_tensor(c: Constants, mean, path, log_scale, sums):
    """One tensor's mean, path and own log step size in place from its weighted sums (y, zw, zz):
    sum_j w_j d_j, sum_j w_j z_j and sum_j w_j z_j**2, z in 1/16 and w in 1/2**16."""
    y, zw, zz = sums
    ranked.move_mean(mean, div_round(y, RANK_WEIGHT_ONE))
    p = path.astype(np.int64)
    p = p - div_round(p * c.c_sigma, Q16) + div_round(c.path_gain * zw, 1 << 28)  # Q16 * Q20 -> 1/256
    path[...] = np.clip(p, -PATH_MAX, PATH_MAX)
    # sum w z**2 is in 1/2**24 (1.0 = 2**24); the log's step c_mu / (2 ln 2) * (that - 1) in 1/2**16
    own = log_scale.astype(np.int64) + div_round(c.c_mu * (zz - (1 << 24)) * INV_LN2_Q16, 1 << 41)
    log_scale[...] = np.clip(own, -LOG_SCALE_MAX, LOG_SCALE_MAX)


def adapt_global(c: Constants, log_sigma: int, path_norm: int) -> int:
    """CSA on the path's squared norm (in 1/2**16): the new global log step size."""
    num = c.c_sigma * INV_LN2_Q16 * (path_norm - c.n * Q16)
    den = 2 * c.n * Q16 * Q16 * c.damping
    change = (abs(num) + den // 2) // den * (1 if num >= 0 else -1)
    return min(max(log_sigma + change, 0), LOG_SCALE_MAX)


class SepCMA(ranked.Ranked):
    name = "sepcma"

    def init_state(self, cfg, params) -> tuple:
        state = {"mean." + k: v for k, v in ranked.init_mean(params).items()}
        state.update({"log_scale." + k: np.zeros(p.shape, np.int32) for k, p in params.items()})
        state.update({"path." + k: np.zeros(p.shape, np.int32) for k, p in params.items()})
        state["log_sigma"] = np.array([(4 - cfg.sigma_shift + MEAN_SHIFT) << 16], np.int64)
        return {}, state

    def step(self, run, train_data, backend) -> dict:
        cfg = run.cfg
        c = constants(cfg)
        mean = ranked.by_parameter(run.optimizer_state, "mean.")
        path, log_scale = ranked.by_parameter(run.optimizer_state, "path."), ranked.by_parameter(run.optimizer_state, "log_scale.")
        scale = step_sizes(run)

        def update(order):
            path_norm = 0
            for t in tensors(cfg):
                y, zw, zz = (np.zeros(t.shape, np.int64) for _ in range(3))
                for w, k in zip(c.weights, order[:c.mu]):
                    z = backend.dense_noise(cfg, t, run.step, int(k)).astype(np.int64)
                    y += w * ranked.offset(z, scale[t.name])
                    zw += w * z
                    zz += w * z * z
                update_tensor(c, mean[t.name], path[t.name], log_scale[t.name], (y, zw, zz))
                path_norm += int((path[t.name].astype(np.int64) ** 2).sum())
            run.optimizer_state["log_sigma"][0] = adapt_global(c, int(run.optimizer_state["log_sigma"][0]), path_norm)

        return ranked.step(run, train_data, backend, mean, scale, update)
