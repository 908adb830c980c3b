"""EGGROLL behind the optimiser interface: the step is train.train_step, the update es.py's."""

from .. import es
from . import Optimizer


class Eggroll(Optimizer):
    name = "eggroll"

    def init_state(self, cfg, params) -> tuple:
        return es.init_momentum(cfg, params), {}

    def step(self, run, train_data, backend) -> dict:
        from ..train import train_step  # train imports the optimisers

        return train_step(run, train_data, backend)
