"""Antithetic pairs of full-rank members, evaluated one at a time on weights perturbed in place.

Member 2p (+) and 2p + 1 (-) of pair p carry +-(noise >> sigma_shift), the noise the pair's
full-rank stream (dense_noise), on every weight, and read the pair's own stream of the corpus with
their recurrent state carried across steps, as EGGROLL's pairs do. No member's weights are ever
copied: a member's perturbation is added to the weights in place (saturating), the member is run by
the backend's unperturbed forward, and the perturbation is regenerated from the hash and taken off
again. The clip makes the addition lossy where a weight saturates, so those few weights' old values
are kept aside and put back: the undo is exact, and memory is the model's plus that short list.

Used by openes (the thresholded update of es.py) and spsa (a stochastically rounded step).
"""

import numpy as np

from .. import es
from ..arith import clip8, rshift_round
from ..data import stream_windows
from ..params import tensors


def add_clipped(w, delta):
    """w <- clip8(w + delta) in place; returns the flat indices where the clip bit and their old values."""
    total = w.astype(np.int32) + delta
    clipped = np.flatnonzero(np.abs(total) > 127)
    old = w.reshape(-1)[clipped].copy()
    w[...] = clip8(total)
    return clipped, old


def undo_add(w, delta, kept):
    """The inverse of add_clipped(w, delta) that returned ``kept``."""
    clipped, old = kept
    w[...] = w.astype(np.int32) - delta
    w.reshape(-1)[clipped] = old


def pair_perturbation(cfg, backend, t, step: int, pair: int):
    """The pair's perturbation of tensor t for its + member (int32): noise >> sigma_shift, rounded."""
    return rshift_round(backend.dense_noise(cfg, t, step, pair).astype(np.int32), cfg.sigma_shift)


def _switch(params, cfg, backend, step, pair, applied, sign):
    """Take ``applied`` ((sign, kept) of the perturbation now in the weights, or None) off and put
    sign * the pair's on (sign 0: none), regenerating each tensor's noise once."""
    kept = {}
    for t in tensors(cfg):
        delta = pair_perturbation(cfg, backend, t, step, pair)
        w = params[t.name]
        if applied is not None:
            undo_add(w, applied[0] * delta, applied[1][t.name])
        if sign:
            kept[t.name] = add_clipped(w, sign * delta)
    return sign, kept


def pair_fitness(run, tokens, backend):
    """Fitness (population,) int32 of every member at run.step, member 2p + (0: +, 1: -) reading
    tokens[p] and carrying run.recurrent[member]; run.params are as they were when it returns."""
    cfg = run.cfg
    fitness = np.zeros(cfg.population, np.int32)
    for p in range(cfg.pairs):
        applied = None
        for sign, row in ((1, 2 * p), (-1, 2 * p + 1)):
            applied = _switch(run.params, cfg, backend, run.step, p, applied, sign)
            ll = backend.forward(run.params, cfg, tokens[p:p + 1], run.recurrent[row:row + 1])
            fitness[row] = ll.sum(dtype=np.int64)
        _switch(run.params, cfg, backend, run.step, p, applied, 0)
    return fitness


def step(run, train_data, backend, update) -> dict:
    """One step of pairs: their fitnesses on their own streams, their mean state (pair_state "mean"),
    EGGROLL's fitness shaping, then ``update(f)`` (returns the weights moved); run.step += 1."""
    cfg = run.cfg
    fitness = pair_fitness(run, stream_windows(train_data, cfg.pairs, run.step, cfg.window), backend)
    if cfg.pair_state == "mean":
        es.share_pair_state(run.recurrent)
    f, ties = es.shape_fitness(fitness, cfg.fitness)
    moved = update(f)
    run.step += 1
    return {"fitness_sum": int(fitness.astype(np.int64).sum()), "ties": ties, "moved": moved}
