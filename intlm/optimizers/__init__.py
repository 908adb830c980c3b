"""Optimisers: the declared interface every training method implements, and the one registry of them.

Every optimiser trains the same integer model (model.py) from the same data streams (data.py) and
the same counter-hash noise (noise.py), through a backend's forward and noise (backends/), so each
is bit-identical on every backend and resumes bit-exactly: its state is integer arrays saved in the
checkpoint beside the weights (run.py). One module per method:

- eggroll: low-rank antithetic perturbations, thresholded +-1 steps (es.py, step.train_step)
- openes: the same update with full-rank perturbations of every weight (openes.py)
- spsa: MeZO-style, a handful of full-rank antithetic pairs per step, perturbed in place (spsa.py)
- sepcma: separable CMA-ES with integer fixed-point mean, log step sizes and path (sepcma.py)
- cem: the cross-entropy method with an integer mean and per-weight spread (cem.py)

A module is imported only when its optimiser is chosen; config.py reads NAMES from here.
"""

import abc
import importlib

# name -> (module, class)
REGISTRY = {
    "eggroll": ("intlm.optimizers.eggroll", "Eggroll"),
    "openes": ("intlm.optimizers.openes", "OpenES"),
    "spsa": ("intlm.optimizers.spsa", "SPSA"),
    "sepcma": ("intlm.optimizers.sepcma", "SepCMA"),
    "cem": ("intlm.optimizers.cem", "CEM"),
}
NAMES = tuple(REGISTRY)
STATE_PREFIX = "optimizer."  # checkpoint array names of an optimiser's own state


class Optimizer(abc.ABC):
    """What a training method provides. ``cfg`` is a checked Config; ``run`` a run.Run."""

    name: str

    def init_state(self, cfg, params) -> tuple:
        """(momentum, state) of a fresh run: dicts of integer arrays by parameter name (momentum,
        es.py's) and by state name (saved as STATE_PREFIX + name). Default: none."""
        return {}, {}

    def state_rows(self, cfg) -> int:
        """Rows of recurrent state carried from step to step (one per member by default)."""
        return cfg.population

    def member_bytes(self, cfg) -> int:
        """Bytes read by all members together in one step (a member reading R streams counts R times)."""
        return cfg.population * cfg.window

    @abc.abstractmethod
    def step(self, run, train_data, backend) -> dict:
        """One training step in place (run.params, run.momentum, run.optimizer_state, run.recurrent, run.step += 1);
        returns {"fitness_sum": summed log-likelihood over member_bytes, "ties", "moved"}."""


def get(name: str) -> Optimizer:
    module, cls = REGISTRY[name]
    return getattr(importlib.import_module(module), cls)()
