"""Full-rank noise of one population member: every weight its own counter-hash value (the spec).

EGGROLL's members carry rank-r factors (model.make_noise); the other optimisers (openes, spsa,
sepcma, cem) perturb every weight independently. Element i of block b of tensor t for member k at
a step is element i of the noise stream stream_key(seed, t.tensor_id(b), step, k): a member's
noise is regenerated on demand, one tensor at a time, and never held for the whole population.

``dither`` gives uniform integers for stochastic rounding from streams of their own (the tensor id
with DITHER_TENSOR_BIT set), independent of the Gaussian values they round.
"""

import numpy as np

from .noise import NOISE_MULT, hashes, stream, stream_key

DITHER_TENSOR_BIT = 1 << 40  # tensor ids (model.Tensor.tensor_id) stay below 2**40


def block_size(t) -> int:
    """Values per block of a tensor (a matrix block's m * n, a vector's n)."""
    return t.shape[-1] * (1 if t.kind == "vector" else t.shape[-2])


def dense_noise(cfg, t, step: int, member: int) -> np.ndarray:
    """The member's full-rank noise of tensor t (std 16, |value| <= 78), int8 of t's shape."""
    count = block_size(t)
    return np.stack([stream(stream_key(cfg.seed, t.tensor_id(b), step, member), count, NOISE_MULT)
                     for b in range(t.blocks)]).reshape(t.shape)


def dither(cfg, t, step: int, member: int, bits: int) -> np.ndarray:
    """Uniform integers in [0, 2**bits) (0 <= bits <= 32), int64 of t's shape: the top bits of the
    hashes of the dither streams."""
    if bits == 0:
        return np.zeros(t.shape, np.int64)
    blocks = [hashes(stream_key(cfg.seed, t.tensor_id(b) | DITHER_TENSOR_BIT, step, member), block_size(t))
              >> np.uint64(64 - bits) for b in range(t.blocks)]
    return np.stack(blocks).astype(np.int64).reshape(t.shape)
