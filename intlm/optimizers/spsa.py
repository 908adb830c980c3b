"""SPSA (MeZO-style): a handful of full-rank antithetic pairs per step (population / 2; 1 by
default), many cheap steps, memory equal to inference.

Each pair is evaluated on weights perturbed in place and restored exactly (antithetic.py); the
update walks the pairs in order and moves each weight, in place, by f_p * e / 2**step_shift
stochastically rounded: floor((f_p * e + u) / 2**k) with u uniform in [0, 2**k) from the hash
(dense_noise.dither), so its mean is exactly f_p * e / 2**k (a learning rate of 2**-k per unit
noise of std 16) while the weights stay int8. f_p is the shaped fitness (sign, or graded by rank
among the pairs). Nothing but the int8 weights is kept: no momentum, no update sums.
"""

import numpy as np

from ..arith import clip8
from ..model import tensors
from . import Optimizer, antithetic


def stochastic_shift(x, u, k: int):
    """floor((x + u) / 2**k): x / 2**k rounded down or up, up with probability (x mod 2**k) / 2**k
    when u is uniform in [0, 2**k), so that its mean is exactly x / 2**k."""
    return (x + u) >> k


def apply_step(params, cfg, backend, step: int, f) -> int:
    """The stochastically rounded step of every pair with f_p != 0, in place; returns weights moved."""
    k, moved = cfg.step_shift, 0
    for p in np.flatnonzero(f):
        for t in tensors(cfg):
            x = int(f[p]) * backend.dense_noise(cfg, t, step, int(p)).astype(np.int64)
            delta = stochastic_shift(x, backend.dither(cfg, t, step, int(p), k), k)
            w = params[t.name]
            w[...] = clip8(w + delta)
            moved += int(np.count_nonzero(delta))
    return moved


class SPSA(Optimizer):
    name = "spsa"

    def step(self, run, train_data, backend) -> dict:
        return antithetic.step(run, train_data, backend, lambda f: apply_step(run.params, run.cfg, backend, run.step, f))
