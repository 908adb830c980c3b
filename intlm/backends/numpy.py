"""The reference backend: the readable spec (model.py, es.py, noise.py) behind the Backend interface."""

from .. import es, model
from . import Backend


class NumpyBackend(Backend):
    name = "numpy"

    def make_noise(self, cfg, step: int, p0: int = 0, p1: int | None = None) -> dict:
        return model.make_noise(cfg, step, range(*model.pair_range(cfg, p0, p1)))

    def population_fitness(self, params, cfg, noise, pair_tokens, state, p0: int = 0, p1: int | None = None,
                           positions=False):
        return model.population_fitness(params, cfg, noise, pair_tokens, state, p0, p1, positions)

    def forward(self, params, cfg, tokens, state):
        return model.forward(params, cfg, tokens, state)

    def update_sums(self, cfg, noise, f, reads=None, local=None) -> dict:
        return es.update_sums(cfg, noise, f, reads, local)

    def update(self, params, cfg, step: int, f, Z, momentum=None) -> int:
        return es.update(params, cfg, step, f, Z, momentum)
