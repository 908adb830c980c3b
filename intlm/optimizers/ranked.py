"""A ranked population around an integer mean: what sepcma and cem share.

The state holds a mean per weight in fixed point (units.py); the int8 weights are the mean rounded.
Member k of a step perturbs the mean by z_k * scale / 16, z_k its full-rank noise (dense_noise, keyed
on (step, k)) and scale a per-weight integer step size; its int8 weights are written into the
parameter arrays in place (no copy per member), it reads the same ``shared_rows`` streams as every
other member, since members are ranked against each other and must see the same bytes, and it
starts from the streams' carried recurrent state. The carried state then becomes the members' mean
state (rounded), as EGGROLL's pairs continue from theirs. The update (the optimiser's) sees the
members ranked best first and regenerates the noise of those it needs; afterwards the weights are
the new mean rounded.
"""

import numpy as np

from ..arith import clip8, div_round, rshift_round
from ..data import stream_windows
from ..params import tensors
from . import Optimizer
from .units import MEAN_MAX, MEAN_SHIFT


def init_mean(params) -> dict:
    """The mean of a fresh run: the initial int8 weights, exactly."""
    return {name: p.astype(np.int32) << MEAN_SHIFT for name, p in params.items()}


def weights(mean):
    """The int8 weights of a mean (or of a member's perturbed mean), rounded and saturated."""
    return clip8(rshift_round(mean.astype(np.int64), MEAN_SHIFT)).astype(np.int8)


def offset(z, scale):
    """A member's offset from the mean, z * scale / 16 rounded symmetrically (so -z gives the
    negated offset), in mean units (int64)."""
    return div_round(z.astype(np.int64) * scale, 16)


def move_mean(mean, delta):
    """mean += delta in place, held to the int8 range."""
    mean[...] = np.clip(mean.astype(np.int64) + delta, -MEAN_MAX, MEAN_MAX)


def member_fitness(run, tokens, backend, mean, scale):
    """Fitness (population,) int32 of every member on the shared ``tokens``; run.recurrent becomes the
    members' mean final state. ``mean`` and ``scale`` are dicts by parameter name; run.params hold
    the last member's weights when this returns."""
    cfg = run.cfg
    fitness = np.zeros(cfg.population, np.int32)
    state_sum = np.zeros(run.recurrent.shape, np.int64)
    for k in range(cfg.population):
        for t in tensors(cfg):
            z = backend.dense_noise(cfg, t, run.step, k)
            run.params[t.name][...] = weights(mean[t.name] + offset(z, scale[t.name]))
        state = run.recurrent.copy()
        fitness[k] = backend.forward(run.params, cfg, tokens, state).sum(dtype=np.int64)
        state_sum += state
    run.recurrent[...] = div_round(state_sum, cfg.population)
    return fitness


def step(run, train_data, backend, mean, scale, update) -> dict:
    """One step: every member's fitness, then ``update(order)`` with the members best first (ties by
    index), then the weights from the updated ``mean``; run.step += 1."""
    cfg = run.cfg
    before = {name: p.copy() for name, p in run.params.items()}
    tokens = stream_windows(train_data, cfg.shared_rows, run.step, cfg.window)
    fitness = member_fitness(run, tokens, backend, mean, scale)
    order = np.argsort(-fitness.astype(np.int64), kind="stable")
    update(order)
    moved = 0
    for name, p in run.params.items():
        p[...] = weights(mean[name])
        moved += int(np.count_nonzero(p != before[name]))
    run.step += 1
    ties = cfg.population - len(np.unique(fitness))
    return {"fitness_sum": int(fitness.astype(np.int64).sum()), "ties": ties, "moved": moved}


def by_parameter(state, prefix) -> dict:
    """The arrays of ``state`` named prefix + parameter name, by parameter name (the same arrays)."""
    return {name[len(prefix):]: v for name, v in state.items() if name.startswith(prefix)}


class Ranked(Optimizer):
    """An optimiser of a ranked population whose members read ``shared_rows`` streams each."""

    def state_rows(self, cfg) -> int:
        return cfg.shared_rows

    def member_bytes(self, cfg) -> int:
        return cfg.population * cfg.shared_rows * cfg.window
