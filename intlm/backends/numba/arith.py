"""The scalar integer arithmetic of ``intlm.arith`` as Numba functions, in 32 bits where the checked
worst cases (``config.worst_case_bounds``) allow: the rounding shift, the int8 clip, the division
by a row's shared denominator, and the integer log-likelihood of one row of logits."""

import numpy as np
from numba import njit
from numba.core import types
from numba.core.extending import intrinsic
from llvmlite import ir

_I32 = ir.IntType(32)


@intrinsic
def sar32(typingctx, x, s):
    """int32(x) >> s for integers x, s with 0 <= s < 32, as one 32-bit arithmetic shift. Numba types
    int32 arithmetic as int64, and LLVM cannot narrow a shift by a run-time amount back to 32 bits:
    a vectorised loop would widen, shift and truncate every lane, at half the lanes per vector."""
    if not (isinstance(x, types.Integer) and isinstance(s, types.Integer)):
        return None
    sig = types.int32(x, s)

    def codegen(context, builder, sig, args):
        def as_i32(value, kind):
            if kind.bitwidth > 32:
                return builder.trunc(value, _I32)
            if kind.bitwidth < 32:
                return (builder.sext if kind.signed else builder.zext)(value, _I32)
            return value

        return builder.ashr(as_i32(args[0], sig.args[0]), as_i32(args[1], sig.args[1]))

    return sig, codegen


@njit(inline="always")
def rshift_round(x, s):
    """x / 2**s rounded half up, as ``arith.rshift_round`` (s = 0 leaves x), in 32 bits: the checked
    worst cases (config.worst_case_bounds) keep x and the rounding within int32."""
    return sar32(x + ((1 << s) >> 1), s)


@njit(inline="always")
def clip8(x):
    """``arith.clip8``: x clipped to [-127, 127], in 32 bits (int32 operands keep Numba from
    widening to int64)."""
    return min(max(np.int32(x), np.int32(-127)), np.int32(127))


@njit(inline="always")
def div_round_reciprocal(num, den, inv):
    """``arith.div_round(num, den)`` for 0 < den, |num| + den < 2**31, given inv = 2**32 // den:
    u * inv >> 32 is floor(u / den) or one less (u < 2**32), and one comparison fixes it. Saves an
    integer division per element of a row that shares the denominator."""
    u = abs(num) + den // 2
    q = (u * inv) >> 32
    if u - q * den >= den:
        q += 1
    return -q if num < 0 else q


@njit(inline="always")
def log_likelihood(logits, target, exp2, log2_frac, exp2_bits, mant_bits):
    """``arith.log_likelihood`` of one row of 256 logits (exp2, log2_frac, exp2_bits, mant_bits: the
    tables and constants of arith, passed in)."""
    top = logits[0]
    for v in range(256):
        top = max(top, logits[v])
    s = 0
    for v in range(256):
        s += exp2[logits[v] - top + 255]
    e = 0  # floor(log2 s) by halving the search range
    for half in (16, 8, 4, 2, 1):
        if (s >> (e + half)) != 0:
            e += half
    m = (s >> (e - mant_bits)) & ((1 << mant_bits) - 1)
    return 16 * (logits[target] - top + 255) - ((e << 8) + log2_frac[m]) + (exp2_bits << 8)
