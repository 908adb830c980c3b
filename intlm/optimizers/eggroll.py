"""EGGROLL behind the optimiser interface: the step is step.train_step, the update es.py's."""

from .. import es
from ..step import train_step
from . import Optimizer


class Eggroll(Optimizer):
    name = "eggroll"

    def init_state(self, cfg, params) -> tuple:
        return es.init_momentum(cfg, params), {}

    def step(self, run, train_data, backend) -> dict:
        return train_step(run, train_data, backend)
