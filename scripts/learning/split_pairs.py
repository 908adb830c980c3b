"""A negative result's experiment: each pair perturbs either the dense tensors or the context tables,
never both, so neither's credit carries the other's noise. Pair p perturbs only the dense tensors
when p % M == 0 (M > 0), else only the tables; with M < 0 the other way round (only the tables when
p % -M == 0). A dense-only pair's byte differences give the tables no credit, a tables-only pair's
shaped fitness is 0 for the dense tensors, so neither enters the other's sums or thresholds.

    SPLIT_MOD=M python scripts/learning/split_pairs.py run NAME FIELD=VALUE ... (study.py's arguments)

It wraps study.py with the backend's noise and the step's credit patched (Numba backend only); not a
feature of intlm.
"""

import os
import runpy
import sys
from pathlib import Path

import numpy as np

import intlm.context as context
import intlm.es as es
from intlm.backends.numba import NumbaBackend

M = int(os.environ.get("SPLIT_MOD", "2"))


def dense_pairs(first, count):
    """Which of pairs first .. first + count perturb only the dense tensors."""
    p = np.arange(first, first + count)
    return p % M == 0 if M > 0 else p % -M != 0


def split_noise(make_noise):
    def wrapped(self, cfg, step, p0=0, p1=None):
        noise = make_noise(self, cfg, step, p0, p1)
        table_b = noise[context.NAME][1]
        dense = dense_pairs(p0, table_b.shape[0])
        table_b[dense] = 0  # a dense-only pair's rows are not perturbed
        for name, v in noise.items():
            if name != context.NAME:
                for a in v if isinstance(v, tuple) else (v,):
                    a[~dense] = 0
        return noise
    return wrapped


def split_fitness(shape_fitness):
    def wrapped(fitness, mode):
        f, ties = shape_fitness(fitness, mode)
        return np.where(dense_pairs(0, len(f)), f, 0).astype(f.dtype), ties
    return wrapped


def split_differences(byte_differences):
    def wrapped(ll):
        d = byte_differences(ll)
        return None if d is None else np.where(dense_pairs(0, len(d))[:, None], 0, d)
    return wrapped


NumbaBackend.make_noise = split_noise(NumbaBackend.make_noise)
es.shape_fitness = split_fitness(es.shape_fitness)
context.byte_differences = split_differences(context.byte_differences)
sys.argv = ["study.py"] + sys.argv[1:]
runpy.run_path(str(Path(__file__).with_name("study.py")), run_name="__main__")
