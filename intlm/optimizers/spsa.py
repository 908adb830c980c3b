"""SPSA (MeZO-style): a handful of full-rank antithetic pairs per step (population / 2; 1 by
default), many cheap steps, memory equal to inference.

Each pair is evaluated on weights perturbed in place and restored exactly (antithetic.py); the
update walks the pairs in order and moves each weight, in place, by f_p * e / 2**step_shift (a
learning rate of 2**-k per unit noise of std 16), f_p the shaped fitness (sign, or graded by rank
among the pairs). A step is mostly far below one int8 unit, so how it is rounded decides what the
weights do (``spsa_rounding``):

- stochastic (the only rule before the carry; its runs resume as they were): floor((f_p * e + u) / 2**k) with u uniform in [0, 2**k) from the hash
  (dense_noise.dither), so its mean is exactly f_p * e / 2**k. Nothing but the int8 weights is kept,
  but the rounding's variance per step is about the step itself, not its square: over many steps it
  random-walks the weights far more than the signal moves them.
- carry (the default): each weight keeps the part of its steps below one unit, r in [-2**(k-1), 2**(k-1)) (int16,
  the state ``residual.NAME``), and moves by round((r + f_p * e) / 2**k), keeping the rest: error
  feedback, so w * 2**k + r is exactly the sum of the steps (until the weight saturates) and nothing
  is random. Memory: two bytes a weight more.
"""

import numpy as np

from ..arith import clip8
from ..params import tensors
from . import Optimizer, antithetic

RESIDUAL = "residual."


def stochastic_shift(x, u, k: int):
    """floor((x + u) / 2**k): x / 2**k rounded down or up, up with probability (x mod 2**k) / 2**k
    when u is uniform in [0, 2**k), so that its mean is exactly x / 2**k."""
    return (x + u) >> k


def carry_shift(x, residual, k: int):
    """(move, new residual) of a step x (in 1/2**k units) on a weight that carries ``residual``:
    move = round(total / 2**k), half up, and new residual = total - move * 2**k in [-2**(k-1), 2**(k-1))."""
    total = residual + x
    move = (total + ((1 << k) >> 1)) >> k
    return move, total - (move << k)


def apply_step(params, cfg, backend, step: int, f, state) -> int:
    """The rounded step of every pair with f_p != 0, in place; returns weights moved."""
    k, moved = cfg.step_shift, 0
    for p in np.flatnonzero(f):
        for t in tensors(cfg):
            x = int(f[p]) * backend.dense_noise(cfg, t, step, int(p)).astype(np.int64)
            if cfg.spsa_rounding == "carry":
                residual = state[RESIDUAL + t.name]
                delta, rest = carry_shift(x, residual, k)
                residual[...] = rest
            else:
                delta = stochastic_shift(x, backend.dither(cfg, t, step, int(p), k), k)
            w = params[t.name]
            w[...] = clip8(w + delta)
            moved += int(np.count_nonzero(delta))
    return moved


class SPSA(Optimizer):
    name = "spsa"

    def init_state(self, cfg, params) -> tuple:
        if cfg.spsa_rounding != "carry":
            return {}, {}
        return {}, {RESIDUAL + name: np.zeros(p.shape, np.int16) for name, p in params.items()}

    def step(self, run, train_data, backend) -> dict:
        return antithetic.step(run, train_data, backend,
                               lambda f: apply_step(run.params, run.cfg, backend, run.step, f, run.optimizer_state))
