"""Does the +-1 step cap the update? After each EGGROLL update, the share of each tensor's weights
whose momentum still exceeds the threshold: those had evidence for two or more steps and moved one.

    python scripts/learning/step_cap.py POPULATION WINDOW STEPS [REPORT_AT,...]

Deterministic (the default corpus, the default settings with this population and window). A share
near 0 means a weight's evidence rarely outruns one step per update, so larger steps would change
little; a large share means the update throws evidence away each step.
"""

import sys

import numpy as np

from intlm import es
from intlm.backends import get
from intlm.config import Config
from intlm.data import cache_dir_default, load_corpus
from intlm.model import tensors
from intlm.run import Run
from intlm.train import train_step


class KeepFitness:
    """A backend that remembers the last population's fitnesses (to rebuild the step's threshold)."""

    def __init__(self, backend):
        self.backend, self.fitness = backend, None

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def population_fitness(self, *args):
        self.fitness = self.backend.population_fitness(*args)
        return self.fitness


def main(population, window, steps, report_at="10,25,50,100,300,1000"):
    corpus = load_corpus(None, cache_dir_default())
    backend = KeepFitness(get("auto"))
    cfg = Config(population=int(population), window=int(window)).check()
    run = Run.fresh(cfg)
    marks = {int(s) for s in report_at.split(",")}
    while run.step < int(steps):
        train_step(run, corpus.train, backend)
        if run.step in marks:
            f, _ = es.shape_fitness(backend.fitness, cfg.fitness)
            thr_matrix, thr_vector = es.thresholds(cfg, run.step - 1, f)
            shares = []
            for t in tensors(cfg):
                thr = thr_matrix if t.kind == "matrix" else thr_vector
                shares.append(f"{t.name} {np.mean(np.abs(run.momentum[t.name]) > thr):.3f}")
            print(f"population {cfg.population} x {cfg.window}, after step {run.step}: " + " ".join(shares),
                  flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
