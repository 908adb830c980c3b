"""Where the fitness differences come from: after STEPS default training steps, the mean square of
F+ - F- over the pairs of a population with only one tensor perturbed, as a share of it with every
tensor perturbed, for two steps' noise.

    python scripts/learning/fitness_variance.py [STEPS] [POPULATION]

A share near 1 means that tensor's perturbations decide the pair's fitness difference, and so act as
noise in every other tensor's update sum; the shares need not add up to 1 (the tensors interact).
"""

import dataclasses
import sys

import numpy as np

from intlm.backends import get
from intlm.config import Config
from intlm.data import cache_dir_default, load_corpus, stream_windows
from intlm.run import Run
from intlm.train import train_step


def mean_square_difference(backend, params, cfg, noise, tokens, perturbed) -> float:
    """Mean of (F+ - F-)^2 over the pairs, with the noise of tensors outside ``perturbed`` zeroed."""
    kept = {k: v if k in perturbed else (tuple(np.zeros_like(a) for a in v) if isinstance(v, tuple)
                                         else np.zeros_like(v))
            for k, v in noise.items()}
    state = np.zeros((cfg.population, cfg.layers, cfg.width), np.int8)
    fitness = backend.population_fitness(params, cfg, kept, tokens, state).astype(np.int64)
    d = (fitness[0::2] - fitness[1::2]).astype(np.float64)  # a figure for the report, not the training path
    return float(np.mean(d * d))


def main(steps="200", population="2048"):
    corpus = load_corpus(None, cache_dir_default())
    backend = get("auto")
    run = Run.fresh(Config().check())
    while run.step < int(steps):
        train_step(run, corpus.train, backend)
    cfg = dataclasses.replace(run.cfg, population=int(population)).check()
    for step in (run.step, run.step + 1):
        noise = backend.make_noise(cfg, step)
        tokens = stream_windows(corpus.train, cfg.pairs, step, cfg.window)
        full = mean_square_difference(backend, run.params, cfg, noise, tokens, set(noise))
        shares = {k: mean_square_difference(backend, run.params, cfg, noise, tokens, {k}) / full for k in noise}
        print(f"after {run.step} steps, noise of step {step}, {cfg.pairs} pairs: mean (F+ - F-)^2 {full:.0f}; "
              + " ".join(f"{k} {v:.3f}" for k, v in shares.items()), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
