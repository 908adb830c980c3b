"""Integer arithmetic: the fixed-point conventions, the small tables, and the NumPy spec of each op.

Conventions (the whole model uses them):
- Activations, weights and norm gains are int8 values in [-127, 127] (-128 is never produced);
  16 means 1.0 (``ONE``). Products accumulate in int32.
- Every right shift rounds half up: ``(x + 2**(s-1)) >> s`` (``rshift_round``).
- Divisions round half away from zero on the magnitude (``div_round``), so C, Numba and NumPy agree
  whatever their own rule for negative operands.
- Logits are in 1/16-bit units; log-likelihoods in 1/256-bit units (``LL_ONE_BIT``).

Every table is built here with integer arithmetic only (Python big ints), so it is the same bytes on
every machine, and each is at most a few KB.
"""

import math

import numpy as np

ONE = 16  # fixed point: 16 means 1.0
I8_MAX = 127
LL_ONE_BIT = 256  # log-likelihood unit: 1/256 bit


def iroot(x: int, k: int) -> int:
    """floor(x ** (1/k)) for integers x >= 0, k >= 1, exactly (Newton on big ints)."""
    if x < 2:
        return x
    y = 1 << ((x.bit_length() + k - 1) // k)  # an upper bound
    while True:
        z = ((k - 1) * y + x // y ** (k - 1)) // k
        if z >= y:
            return y
        y = z


def isqrt(x: int) -> int:
    """floor(sqrt(x)) for integers x >= 0, exactly: the standard library's integer square root (equal
    to iroot(x, 2), and about ten times faster; the context tables take one per distinct row sum a step)."""
    return math.isqrt(x)


# --- Softmax tables -------------------------------------------------------------------------
# EXP2[u] = floor(2**(EXP2_BITS + u/16)) for u in 0..255: the weight of a logit u (1/16-bit units,
# shifted to be non-negative). 256 * EXP2[255] < 2**31, so the sum over the vocabulary fits int32.
EXP2_BITS = 6
EXP2 = np.array([iroot(1 << (16 * EXP2_BITS + u), 16) for u in range(256)], dtype=np.int32)

# LOG2_FRAC[m] = round(256 * log2(1 + m/1024)): the mantissa part of an integer log2 in 1/256 bits.
# round(256*log2(y)) = floor(log2(y**512 * 2) / 2), and floor(log2(n)) of a big int is its bit length - 1.
LOG2_MANTISSA_BITS = 10
LOG2_FRAC = np.array(
    [(((1024 + m) ** 512).bit_length() - 512 * LOG2_MANTISSA_BITS) // 2 for m in range(1024)],
    dtype=np.int32,
)

# EXP2_NEG[k] = floor(2**16 * 2**(-k/16)) for k in 0..255: sampling weights for logits k/16 bits
# below the best one; anything further down has weight 0.
EXP2_NEG = np.array([iroot(1 << (256 - k), 16) for k in range(256)], dtype=np.int32)

# --- Normal tail table for the update threshold ---------------------------------------------------
# TAIL_Q31[z] = round(2**31 * P(|N(0,1)| > z/16)) for z in 0..127 (two-sided tail, 2*(1 - Phi)).
# Built by integer-only numerical integration (no libm), so it is identical everywhere; tests check
# it against math.erfc.
def _tail_table() -> np.ndarray:
    """2**31 * erfc(z/(16*sqrt(2))) for z in 0..127, by integer arithmetic only.

    erfc via the series of the standard normal density integrated with Simpson's rule on a fine
    fixed-point grid (Q60), all in Python ints: deterministic on every machine.
    """
    q = 60
    one = 1 << q
    # exp(-t) in fixed point by a Taylor series with range reduction, integers only.
    def exp_neg(t):  # t is Q60, t >= 0
        n = 0
        while t > one:  # exp(-t) = exp(-t/2)^2
            t >>= 1
            n += 1
        term, total, k = one, one, 1
        while term:
            term = -term * t // (k * one)
            total += term
            k += 1
        for _ in range(n):
            total = total * total >> q
        return total

    # density phi(x) = exp(-x^2/2)/sqrt(2 pi); integrate on [0, 8] with h = 1/256 (Simpson).
    steps_per_unit = 256
    n = 8 * steps_per_unit
    pi_q = 3622009729038561421  # floor(pi * 2**60)
    inv_sqrt_2pi = (one * one) // isqrt(2 * pi_q * one)  # 1/sqrt(2 pi) in Q60
    f = []
    for i in range(n + 1):
        x2 = (i * i << q) // (steps_per_unit * steps_per_unit)  # x^2 in Q60
        f.append(exp_neg(x2 >> 1) * inv_sqrt_2pi >> q)
    # cumulative Simpson integral from x to 8 at the grid points x = z/16 (every 16 grid steps).
    # panel sums from the right end, so each tail integral is one running total.
    tail = [0] * (n + 1)
    for i in range(n - 2, -1, -2):
        tail[i] = tail[i + 2] + f[i] + 4 * f[i + 1] + f[i + 2]
    out = []
    for z in range(128):
        integral = tail[z * (steps_per_unit // 16)] // (3 * steps_per_unit)  # Q60, P(z/16 < N < 8)
        out.append((2 * integral * (1 << 31) + (one >> 1)) >> q)
    return np.array(out, dtype=np.int64)


TAIL_Q31 = _tail_table()


# --- Elementwise ops (NumPy spec; inputs are integer arrays or Python ints) ----------------------

def clip8(x):
    """Saturate to the int8 value range [-127, 127]."""
    return np.clip(x, -I8_MAX, I8_MAX)


def rshift_round(x, s: int):
    """x / 2**s rounded half up, for s >= 0."""
    if s == 0:
        return x
    return (x + (1 << (s - 1))) >> s


def div_round(num, den):
    """num / den rounded half away from zero; den > 0. Defined on magnitudes so every language agrees."""
    mag = (np.abs(num) + den // 2) // den
    return np.where(num < 0, -mag, mag)


def graded(x, scale, levels: int):
    """sign(x) * min(levels, round(levels * |x| / scale)), rounded half up on the magnitude; scale > 0
    (broadcast against x). The linear fitness (es.shape_fitness) and graded credit (context.credit)."""
    x = np.asarray(x, np.int64)
    return np.sign(x) * np.minimum((2 * levels * np.abs(x) + scale) // (2 * scale), levels)


def matmul_shift(n: int) -> int:
    """Right shift that rescales an n-term int8 dot product: log2(16 sqrt(n)) rounded to an integer.

    Exact for n a power of 4, otherwise within a factor sqrt(2); the init scale of the weights makes
    up the difference. round(log2(sqrt n)) is the smallest k with n <= 2 * 4**k.
    """
    k = 0
    while 2 * 4 ** k < n:
        k += 1
    return 4 + k


def int_log2_q8(s):
    """256 * log2(s), rounded to the mantissa table, for int32 arrays s >= 2**14 (1/256-bit units)."""
    s = np.asarray(s, dtype=np.int64)
    e = np.zeros(s.shape, dtype=np.int64)
    for k in range(1, 31):
        e += (s >> k) != 0  # e = floor(log2 s)
    m = (s >> (e - LOG2_MANTISSA_BITS)) & ((1 << LOG2_MANTISSA_BITS) - 1)
    return (e << 8) + LOG2_FRAC[m]


def log_likelihood(logits, target):
    """log2 p(target) in 1/256-bit units for int8-range logits (1/16-bit units); last axis is vocab.

    u = z - max(z) + 255 in [1, 255] (softmax ignores a shift; the best logit lands where EXP2 is
    most precise); S = sum_v EXP2[u_v] ~ 2**EXP2_BITS * sum 2**(u_v/16);
    log2 p = u_t/16 - log2(S) + EXP2_BITS.
    """
    z = np.asarray(logits, dtype=np.int64)
    u = z - z.max(axis=-1, keepdims=True) + 255
    s = EXP2[u].astype(np.int64).sum(axis=-1)
    u_t = np.take_along_axis(u, np.asarray(target, dtype=np.int64)[..., None], axis=-1)[..., 0]
    return (16 * u_t - int_log2_q8(s) + (EXP2_BITS << 8)).astype(np.int32)
