"""The noise of ``model.make_noise`` (streams of ``intlm.noise.stream``), generated in parallel, and
the view of a matrix's factors that the forward and the update read."""

import numpy as np
from numba import njit, prange

from ...config import Config
from ...model import noise_layout, split_streams, tensors
from ...noise import GOLDEN, SEED_SALT

U64 = np.uint64


@njit(inline="always")
def mix(z):
    """``noise.mix`` (splitmix64 finaliser) on a uint64."""
    z = (z ^ (z >> U64(30))) * U64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> U64(27))) * U64(0x94D049BB133111EB)
    return z ^ (z >> U64(31))


@njit(parallel=True, cache=True)
def fill_streams(seed, tensor_ids, step, p0, count, mult, out):
    """out[q, b, :] = the first `count` values of ``noise.stream`` (stream_key(seed, tensor_ids[b],
    step, p0 + q), count, mult) for q < out.shape[0]: the key holds the absolute pair index, so a
    pair's values do not depend on the range it is generated in."""
    index_hash = np.empty(count, np.uint64)  # the hash of each index, the same in every stream
    for i in range(count):
        index_hash[i] = mix(U64(i) + U64(GOLDEN))
    for q in prange(out.shape[0]):
        p = np.int64(p0) + q
        for b in range(tensor_ids.shape[0]):
            k = mix(U64(seed) ^ U64(SEED_SALT))
            k = mix(k ^ U64(tensor_ids[b]))
            k = mix(k ^ U64(step))
            k = mix(k ^ U64(p))
            for i in range(count):
                h = mix(k ^ index_hash[i])
                # the sum of h's eight bytes: pairs of bytes into 16-bit fields (<= 510), then one
                # multiply sums the four fields into the top 16 bits (<= 2040: nothing carries out)
                fields = (h & U64(0x00FF00FF00FF00FF)) + ((h >> U64(8)) & U64(0x00FF00FF00FF00FF))
                c = np.int64((fields * U64(0x0001000100010001)) >> U64(48)) - 1020
                mag = (abs(c) * mult + 512) >> 10
                out[q, b, i] = -mag if c < 0 else mag


def make_noise(cfg: Config, step: int, p0: int, p1: int) -> dict:
    """``model.make_noise`` of pairs [p0, p1): same layout and values, generated in parallel."""
    out = {}
    for t in tensors(cfg):
        ids = np.array([t.tensor_id(b) for b in range(t.blocks)], dtype=np.int64)
        count, mult = noise_layout(cfg, t)
        block = np.empty((p1 - p0, t.blocks, count), dtype=np.int8)
        fill_streams(cfg.seed, ids, step, p0, count, mult, block)
        out[t.name] = split_streams(cfg, t, block)
    return out


def factors(cfg: Config, t, noise):
    """A matrix tensor's noise (A, B) as (pairs, blocks, m, r) and (pairs, blocks, n, r) views."""
    m, n = t.shape[-2:]
    return tuple(v.reshape(v.shape[0], t.blocks, size, cfg.rank) for v, size in zip(noise[t.name], (m, n)))
