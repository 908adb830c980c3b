"""The noise of ``model.make_noise`` (streams of ``intlm.noise.stream``), generated in parallel, and
the view of a matrix's factors that the forward and the update read."""

import functools

import numpy as np
from numba import njit, prange

from ...config import Config
from ...dense_noise import DITHER_TENSOR_BIT, block_size
from ...model import noise_layout, split_streams, tensors
from ...noise import GOLDEN, NOISE_MULT, SEED_SALT, mix_array

U64 = np.uint64


@njit(inline="always")
def mix(z):
    """``noise.mix`` (splitmix64 finaliser) on a uint64."""
    z = (z ^ (z >> U64(30))) * U64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> U64(27))) * U64(0x94D049BB133111EB)
    return z ^ (z >> U64(31))


@njit(inline="always")
def _key(seed, tensor_id, step, p):
    """``noise.stream_key``."""
    k = mix(U64(seed) ^ U64(SEED_SALT))
    k = mix(k ^ U64(tensor_id))
    k = mix(k ^ U64(step))
    return mix(k ^ U64(p))


@njit(inline="always")
def _gaussian(h, mult):
    """``noise.gaussian_from_hash`` of one hash."""
    # the sum of h's eight bytes: pairs of bytes into 16-bit fields (<= 510), then one
    # multiply sums the four fields into the top 16 bits (<= 2040: nothing carries out)
    fields = (h & U64(0x00FF00FF00FF00FF)) + ((h >> U64(8)) & U64(0x00FF00FF00FF00FF))
    c = np.int64((fields * U64(0x0001000100010001)) >> U64(48)) - 1020
    mag = (abs(c) * mult + 512) >> 10
    return -mag if c < 0 else mag


@njit(inline="always")
def stream_value(key, index, mult):
    """Element ``index`` of the stream with this key (``noise.stream_at`` of one key)."""
    return _gaussian(mix(key ^ mix(U64(index) + U64(GOLDEN))), mult)


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
            k = _key(seed, tensor_ids[b], step, p)
            for i in range(count):
                out[q, b, i] = _gaussian(mix(k ^ index_hash[i]), mult)


def make_noise(cfg: Config, t, step: int, p0: int, p1: int):
    """``model.make_noise``'s noise of a matrix or vector t for pairs [p0, p1): same layout and
    values, generated in parallel (a table's is context.make_noise's)."""
    count, mult = noise_layout(cfg, t)
    block = np.empty((p1 - p0, t.blocks, count), dtype=np.int8)
    fill_streams(cfg.seed, _ids(t), step, p0, count, mult, block)
    return split_streams(cfg, t, block)


def factors(cfg: Config, t, noise):
    """A matrix tensor's noise (A, B) as (pairs, blocks, m, r) and (pairs, blocks, n, r) views."""
    m, n = t.shape[-2:]
    return tuple(v.reshape(v.shape[0], t.blocks, size, cfg.rank) for v, size in zip(noise[t.name], (m, n)))


@njit(cache=True)
def _fill_dense(seed, tensor_ids, step, member, bits, index_hash, out):
    """out[b, i] = element i of block b of ``dense_noise.dense_noise`` (bits 0), or of
    ``dense_noise.dither`` (the top ``bits`` bits of the dither stream's hash i); index_hash[i] =
    mix(i + GOLDEN), the same in every stream. One thread: a member's tensor is tens of microseconds
    of work, less than waking the other threads costs."""
    for b in range(tensor_ids.shape[0]):
        k = _key(seed, tensor_ids[b] | (DITHER_TENSOR_BIT if bits else 0), step, member)
        for i in range(out.shape[1]):
            h = mix(k ^ index_hash[i])
            out[b, i] = np.int64(h >> U64(64 - bits)) if bits else _gaussian(h, NOISE_MULT)


@functools.lru_cache(maxsize=64)
def _index_hashes(count: int):
    """mix(i + GOLDEN) for i < count: made once per block size, not once per member and tensor."""
    return mix_array(np.arange(count, dtype=np.uint64) + np.uint64(GOLDEN))


def dense_noise(cfg: Config, t, step: int, member: int):
    """``dense_noise.dense_noise``: the member's full-rank noise of t."""
    out = np.empty((t.blocks, block_size(t)), dtype=np.int8)
    _fill_dense(cfg.seed, _ids(t), step, member, 0, _index_hashes(out.shape[1]), out)
    return out.reshape(t.shape)


def dither(cfg: Config, t, step: int, member: int, bits: int):
    """``dense_noise.dither``: uniform integers in [0, 2**bits)."""
    out = np.zeros((t.blocks, block_size(t)), dtype=np.int64)
    if bits:
        _fill_dense(cfg.seed, _ids(t), step, member, bits, _index_hashes(out.shape[1]), out)
    return out.reshape(t.shape)


def _ids(t):
    return np.array([t.tensor_id(b) for b in range(t.blocks)], dtype=np.int64)
