"""One EGGROLL step, from the model through the noise, the population's forward and the fitness to
the update: train_step on windows of a corpus (pretraining, and the eggroll optimiser's step), and
apply_fitness, the update from fitnesses however they were scored (evolve.py scores samples).

The training loop that calls it, checkpoints and reports is train.py; this module imports nothing
of it, so the optimisers and evolve use the step without an import circle.
"""

import numpy as np

from . import anchor, context, es
from .data import stream_windows
from .model import window_fitness
from .progress import Laps
from .run import Run


def _pair_slice(noise, p0, p1):
    """The noise of pairs [p0, p1) from every pair's noise (views; the pair axis is first)."""
    return {k: tuple(a[p0:p1] for a in v) if isinstance(v, tuple) else v[p0:p1] for k, v in noise.items()}


def train_step(run: Run, train_data: np.ndarray, backend, timings=None, world=None, control=0) -> dict:
    """One EGGROLL step in place; returns integer statistics of it. ``timings``, a dict, collects
    the seconds of its phases: data, noise, reads (the tables' rows), forward, fitness, sums, update
    (and comm under MPI).

    ``world`` (distributed.World): this process evaluates its pairs [p0, p1) only, and one
    Allgatherv gives every process the whole fitness vector (and the OR of the processes'
    ``control`` words, returned as stats["control"]); the update is every process's alike."""
    cfg = run.cfg
    lap = Laps(timings)
    tokens = stream_windows(train_data, cfg.pairs, run.step, cfg.window)
    lap("data")
    sums = world is not None and world.reduce == "sums"  # Z from own pairs, summed over processes
    noise = backend.make_noise(cfg, run.step, world.p0, world.p1) if sums else backend.make_noise(cfg, run.step)
    lap("noise")
    reads, after = context.window_reads(backend, cfg, tokens, run.recurrent)  # before the forward moves them on
    lap("reads")
    positions = context.by_reads(cfg)  # each byte's log-likelihood, not only the window's sum
    if world is None:
        ll = backend.population_fitness(run.params, cfg, noise, tokens, run.recurrent, positions=positions)
        if cfg.pair_state == "mean":
            es.share_pair_state(run.recurrent)
        lap("forward")
        everyone = ll
    else:
        p0, p1 = world.p0, world.p1
        mine = noise if sums else _pair_slice(noise, p0, p1)
        ll = backend.population_fitness(run.params, cfg, mine, tokens, run.recurrent, p0, p1, positions)
        if cfg.pair_state == "mean":
            es.share_pair_state(run.recurrent[2 * p0:2 * p1])
        context.keep_history(cfg, run.recurrent, after)  # every pair's, not only this process's
        lap("forward")
        # under reduce "sums" a process credits only its own pairs' reads: the others' window sums will do
        everyone, control = world.allgather_fitness(window_fitness(ll) if positions and sums else ll, control)
        lap("comm")
    local = context.byte_differences(ll if sums else everyone) if positions else None
    fitness = window_fitness(everyone) if everyone.ndim > 1 else everyone
    stats = apply_fitness(run, backend, noise, fitness, lap, world, reads, local)
    # with mirrors a member's fitness holds two scorings of its bytes: the log, per member-byte, their mean
    scorings = 2 if context.mirrors(cfg) else 1
    return {"fitness_sum": int(fitness.astype(np.int64).sum()) // scorings, **stats, "control": control}


def apply_fitness(run: Run, backend, noise, fitness, lap, world=None, reads=None, local=None) -> dict:
    """The EGGROLL update from the members' fitnesses, whatever scored them (the corpus here, an
    objective in evolve.py): shaping, the sums Z, the thresholded steps, the anchor's pull; then the
    step is done. ``noise``: this step's (under ``world`` with reduce "sums", this process's pairs');
    ``reads``: the rows of the tables each pair's window read (context.window_reads); ``local``: the
    per-byte fitness differences (context.credit's reads credit) of the pairs whose sums this process
    makes (every pair; under reduce "sums" its own), or None.
    Returns the tie count, the weights moved and (with Anchored Weight Decay) the weights pulled."""
    cfg = run.cfg
    f, ties = es.shape_fitness(fitness, cfg.fitness)
    lap("fitness")
    if world is not None and world.reduce == "sums":
        mine = slice(world.p0, world.p1)
        Z = world.allreduce_sums(backend.update_sums(world.local_cfg, noise, f[mine],
                                                     None if reads is None else reads[mine], local))
    else:
        Z = backend.update_sums(cfg, noise, f, reads, local)
    lap("sums")
    stats = {"ties": ties, "moved": backend.update(run.params, cfg, run.step, f, Z, run.momentum)}
    if cfg.anchor_decay:
        stats["pulled"] = anchor.pull(run.params, run.anchor, cfg, run.step)
    if cfg.context_decay:
        stats["decayed"] = backend.decay_tables(run.params[context.NAME], cfg, run.step)
    lap("update")
    run.step += 1
    return stats
