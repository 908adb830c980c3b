"""The cross-entropy method in integers: sample around the mean, keep the elite, refit.

State (units.py): the mean per weight (1/256 int8 units) and a spread per weight (the std of a
member's offset, same units), starting at 2**(4 - sigma_shift) int8 units, EGGROLL's perturbation
scale. Each step the best population >> elite_shift members (ranked.py) are kept; their offsets d_k
(regenerated from the hash) give the refit, exact in integers:

    mean   += sum_k d_k / mu                                            (rounded half away from 0)
    spread += (isqrt(sum_k d_k**2 / mu - (sum_k d_k / mu)**2) - spread) / 2**k

k = step_shift smooths the spread: a few members' variance per weight is noisy and biased low, and
unsmoothed (k = 0, the plain method) it collapses the spread within tens of steps. The spread is
held in [SCALE_MIN, SCALE_MAX]. Flipping the sign of every z flips the mean's step and leaves the
spread alone.
"""

import numpy as np

from ..arith import div_round
from ..params import tensors
from . import ranked
from .units import MEAN_SHIFT, SCALE_MAX, SCALE_MIN


def isqrt_array(x):
    """floor(sqrt(x)) of an int64 array x >= 0, exactly (digit by digit, two bits at a time)."""
    x = x.astype(np.int64).copy()
    root = np.zeros_like(x)
    bit = np.int64(1) << 62
    while bit:
        trial = root + bit
        fits = x >= trial
        x = np.where(fits, x - trial, x)
        root = np.where(fits, (root >> 1) + bit, root >> 1)
        bit >>= 2
    return root


def refit(mean, spread, s1, s2, mu: int, k: int):
    """The refit of one tensor in place from its elite's sums of offsets ``s1`` and squared offsets
    ``s2``: the mean to the elite's, the spread 2**-k of the way to the elite's."""
    step = div_round(s1, mu)
    var = np.maximum(div_round(s2, mu) - step * step, 0)
    ranked.move_mean(mean, step)
    spread[...] = np.clip(spread + div_round(isqrt_array(var) - spread, 1 << k), SCALE_MIN, SCALE_MAX)


class CEM(ranked.Ranked):
    name = "cem"

    def init_state(self, cfg, params) -> tuple:
        state = {"mean." + k: v for k, v in ranked.init_mean(params).items()}
        state.update({"spread." + k: np.full(p.shape, 1 << (4 - cfg.sigma_shift + MEAN_SHIFT), np.int32)
                      for k, p in params.items()})
        return {}, state

    def step(self, run, train_data, backend) -> dict:
        cfg = run.cfg
        mean, spread = ranked.by_parameter(run.optimizer_state, "mean."), ranked.by_parameter(run.optimizer_state, "spread.")

        def update(order):
            elite = order[:cfg.population >> cfg.elite_shift]
            for t in tensors(cfg):
                s1, s2 = np.zeros(t.shape, np.int64), np.zeros(t.shape, np.int64)
                for k in elite:
                    d = ranked.offset(backend.dense_noise(cfg, t, run.step, int(k)), spread[t.name])
                    s1 += d
                    s2 += d * d
                refit(mean[t.name], spread[t.name], s1, s2, len(elite), cfg.step_shift)

        return ranked.step(run, train_data, backend, mean, spread, update)
