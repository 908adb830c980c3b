"""OpenES: EGGROLL's update with full-rank perturbations, the method EGGROLL's low rank approximates.

Every pair perturbs every weight by its own noise (antithetic.py), the pairs' fitnesses are shaped
as EGGROLL's (es.shape_fitness), and Z = sum_p f_p e_p goes through the same thresholded +-1 update
with momentum (backend.update). A matrix's Z is scaled by 16 so that its null spread per unit of f,
16 * 16, is the 256 the matrix threshold assumes (EGGROLL's a.b products have std 16 * 16), and so
is a context table's (its rows are perturbed like a matrix's); a vector's noise is full-rank in
EGGROLL already. Z is regenerated from the hash pair by pair.
"""

import numpy as np

from .. import context, es
from ..params import tensors
from . import Optimizer, antithetic

MATRIX_Z_SCALE = es.NOISE_STD_PRODUCT // es.NOISE_STD


def update_sums(cfg, backend, step: int, f) -> dict:
    """Z per parameter (int64): sum_p f_p e_p, times MATRIX_Z_SCALE for matrices and tables (whose
    threshold is the matrices'); a table's in the sparse update's layout with every row listed, since
    every pair perturbed every row (context.dense_sums)."""
    Z = {}
    for t in tensors(cfg):
        z = np.zeros(t.shape, np.int64)
        for p in np.flatnonzero(f):
            z += int(f[p]) * backend.dense_noise(cfg, t, step, int(p)).astype(np.int64)
        Z[t.name] = z if t.kind == "vector" else z * MATRIX_Z_SCALE
        if t.kind == "table":
            Z[t.name] = context.dense_sums(cfg, Z[t.name], f)
    return Z


class OpenES(Optimizer):
    name = "openes"

    def init_state(self, cfg, params) -> tuple:
        return es.init_momentum(cfg, params), {}

    def step(self, run, train_data, backend) -> dict:
        cfg = run.cfg
        return antithetic.step(run, train_data, backend, lambda f: backend.update(
            run.params, cfg, run.step, f, update_sums(cfg, backend, run.step, f), run.momentum))
