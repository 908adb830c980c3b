"""The Numba CPU backend: the reference's operations bit for bit, in parallel, one module per
operation beside the name of its reference: noise.py (``model.make_noise``, ``dense_noise``), forward.py
(``model.forward``, ``model.population_fitness``), update.py (``es.update_sums``, ``es.update``),
context.py (the context tables of ``intlm.context``),
with the int8 products in gemm.py and the scalar integer arithmetic of ``intlm.arith`` in arith.py.
Importing this package imports Numba and compiles (or loads from Numba's cache) on first use."""

from ...model import pair_range
from ...params import tensors
from .. import Backend
from . import context as _context, forward as _forward, noise as _noise, update as _update


class NumbaBackend(Backend):
    name = "numba"

    def make_noise(self, cfg, step: int, p0: int = 0, p1: int | None = None) -> dict:
        p0, p1 = pair_range(cfg, p0, p1)
        return {t.name: (_context if t.kind == "table" else _noise).make_noise(cfg, t, step, p0, p1)
                for t in tensors(cfg)}

    def population_fitness(self, params, cfg, noise, pair_tokens, state, p0: int = 0, p1: int | None = None,
                           positions=False):
        return _forward.population_fitness(params, cfg, noise, pair_tokens, state, *pair_range(cfg, p0, p1, noise),
                                           positions)

    def forward(self, params, cfg, tokens, state):
        return _forward.forward(params, cfg, tokens, state)

    def rows_read(self, cfg, tokens, state_row) -> tuple:
        return _context.rows_read(cfg, tokens, state_row)

    def update_sums(self, cfg, noise, f, reads=None, local=None) -> dict:
        return _update.update_sums(cfg, noise, f, reads, local)

    def update(self, params, cfg, step: int, f, Z, momentum=None) -> int:
        return _update.update(params, cfg, step, f, Z, momentum)

    def decay_tables(self, param, cfg, step: int) -> int:
        return _context.decay(param, cfg, step)

    def dense_noise(self, cfg, t, step: int, member: int):
        return _noise.dense_noise(cfg, t, step, member)

    def dither(self, cfg, t, step: int, member: int, bits: int):
        return _noise.dither(cfg, t, step, member, bits)
