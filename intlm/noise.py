"""Counter-based integer noise: every factor is a pure function of (seed, tensor, step, pair, index).

No stateful RNG and no table: a worker (or a GPU thread) regenerates any noise value on demand, and
different tensors, steps and pairs get unrelated streams. The hash is the splitmix64 finaliser, a
bijection of 64-bit integers with full avalanche; a stream key is a chain of it over the counters,
and element i of a stream is mix(key ^ mix(i + GOLDEN)), so two streams never line up shifted
against each other (the flaw of additive seeding and of windows into one shared table).

A noise value is approximately Gaussian: the sum of the 8 bytes of a hash (Irwin-Hall, std 209),
centred and scaled by ``mult / 1024`` with rounding symmetric about 0, so the distribution is exactly
symmetric. ``NOISE_MULT`` gives std 16 (= 1.0 in fixed point) and |value| <= 78.
"""

import numpy as np

from .arith import iroot

MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
SEED_SALT = 0x5851F42D4C957F2D
INIT_STEP = (1 << 32) - 1  # the "step" counter of parameter initialisation, never a training step
NOISE_MULT = 78  # 16 * 1024 / 209: std 16
NOISE_MAX = (1020 * NOISE_MULT + 512) >> 10  # 78: the largest |noise|
NOISE_STD = 16  # std of one noise value
NOISE_STD_PRODUCT = NOISE_STD * NOISE_STD  # std of sum over rank of a.b (rank scaling keeps it)


def mix(z: int) -> int:
    """splitmix64 finaliser on a Python int (the scalar spec)."""
    z &= MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def mix_array(z: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on a uint64 array (wrapping arithmetic)."""
    z = z.astype(np.uint64)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def stream_key(seed: int, tensor: int, step: int, pair: int) -> int:
    """The 64-bit key of one noise stream."""
    k = mix(seed ^ SEED_SALT)
    k = mix(k ^ tensor)
    k = mix(k ^ step)
    return mix(k ^ pair)


def rank_mult(rank: int) -> int:
    """Noise multiplier for rank-r factors: NOISE_MULT / r**(1/4), so A.B^T summed over r has the
    std of a rank-1 product (the 1/sqrt(r) of EGGROLL, done in the noise itself)."""
    return iroot(NOISE_MULT ** 4 // rank, 4)


def gaussian_from_hash(h: np.ndarray, mult: int) -> np.ndarray:
    """Approximately N(0, (16*mult/78)**2) int32 values from uint64 hashes."""
    c = np.zeros(h.shape, dtype=np.int64)
    for b in range(8):
        c += ((h >> np.uint64(8 * b)) & np.uint64(255)).astype(np.int64)
    c -= 1020
    mag = (np.abs(c) * mult + 512) >> 10
    return np.where(c < 0, -mag, mag).astype(np.int32)


def hashes(key: int, count: int, start: int = 0) -> np.ndarray:
    """The uint64 hashes behind elements start .. start+count-1 of the stream with this key."""
    idx = np.arange(start, start + count, dtype=np.uint64) + np.uint64(GOLDEN)
    return mix_array(np.uint64(key) ^ mix_array(idx))


def stream(key: int, count: int, mult: int = NOISE_MULT, start: int = 0) -> np.ndarray:
    """Elements start .. start+count-1 of the noise stream with this key (int8)."""
    return gaussian_from_hash(hashes(key, count, start), mult).astype(np.int8)


def stream_at(keys, index, mult: int = NOISE_MULT) -> np.ndarray:
    """Element ``index`` of the stream of each key in ``keys`` (uint64; the two broadcast), int32:
    the values ``stream`` makes, at chosen places (a context table's rows as windows read them)."""
    idx = np.asarray(index, np.uint64) + np.uint64(GOLDEN)
    return gaussian_from_hash(mix_array(np.asarray(keys, np.uint64) ^ mix_array(idx)), mult)


def uniform32(keys, index: int) -> np.ndarray:
    """Element ``index`` of each stream in ``keys`` (uint64) as a uniform 32-bit integer (int64; used by
    sampling): the top half of mix(key ^ mix(index + GOLDEN))."""
    return (mix_array(np.asarray(keys, dtype=np.uint64) ^ np.uint64(mix(index + GOLDEN))) >> np.uint64(32)).astype(np.int64)
