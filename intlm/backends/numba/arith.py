"""The scalar integer arithmetic of ``intlm.arith`` as Numba functions, in 32 bits where the checked
worst cases (``config.worst_case_bounds``) allow: the rounding shift, the int8 clip, the division
by a row's shared denominator, and the integer log-likelihood of one row of logits."""

import numpy as np
from numba import njit
from numba.core import cgutils, types
from numba.core.extending import intrinsic
from llvmlite import ir

from ...arith import EXP2
from .gemm import KERNEL

_I32 = ir.IntType(32)
_V8 = ir.VectorType(_I32, 8)


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
def graded(x, scale, levels):
    """``arith.graded`` for one int64 sum."""
    mag = min((2 * levels * abs(x) + scale) // (2 * scale), levels)
    return mag if x > 0 else -mag


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


# Every EXP2 entry is one of the top sixteen shifted right: EXP2[u] = EXP2[240 + u % 16] >> (15 - u // 16),
# exactly, since floor(floor(X) / 2**k) = floor(X / 2**k) for X = 2**(EXP2_BITS + 15 + (u % 16) / 16).
_EXP2_TOP = [int(v) for v in EXP2[240:]]
assert all(EXP2[u] == _EXP2_TOP[u % 16] >> (15 - u // 16) for u in range(256))


@njit(inline="always")
def _exp2_sum_generic(logits, top, exp2):
    """sum_v exp2[logits[v] - top + 255] over a row of 256 logits (top - 254 <= logits[v] <= top)."""
    s = np.int32(0)
    for v in range(256):
        s += exp2[logits[v] - top + 255]
    return s


@intrinsic
def _exp2_sum_avx2(typingctx, logits, top, exp2):
    """``_exp2_sum_generic`` for a contiguous int32 row and the table EXP2 (built in, so ``exp2`` is not
    read), eight lanes at a time on AVX2: the sixteen top entries sit in two registers (vpermd picks by
    an index's low three bits, bit 3 chooses the register) and a shift by lane gives the rest. Numba
    compiles the generic loop to gathers of four lanes with 64-bit indices, at twice the time."""
    if not (isinstance(logits, types.Array) and logits.dtype == types.int32 and logits.ndim == 1
            and logits.layout == "C" and isinstance(top, types.Integer)):
        return None
    sig = types.int32(logits, top, exp2)

    def codegen(context, builder, sig, args):
        row = context.make_array(sig.args[0])(context, builder, args[0]).data
        top32 = builder.trunc(args[1], _I32) if sig.args[1].bitwidth > 32 else args[1]

        def splat(value):
            vec = builder.insert_element(ir.Constant(_V8, None), value, ir.Constant(_I32, 0))
            return builder.shuffle_vector(vec, ir.Constant(_V8, None), ir.Constant(_V8, [0] * 8))

        def const(v):
            return ir.Constant(_V8, [v] * 8)

        permd = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_V8, [_V8, _V8]), "llvm.x86.avx2.permd")
        reduce_add = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_I32, [_V8]),
                                                    "llvm.vector.reduce.add.v8i32")
        low, high = ir.Constant(_V8, _EXP2_TOP[:8]), ir.Constant(_V8, _EXP2_TOP[8:])
        shift_to_u = splat(builder.sub(ir.Constant(_I32, 255), top32))
        total = const(0)
        for c in range(32):
            x = builder.load(builder.bitcast(builder.gep(row, [ir.Constant(ir.IntType(64), 8 * c)]), _V8.as_pointer()),
                             align=4)
            u = builder.add(x, shift_to_u)  # in [1, 255]
            frac = builder.and_(u, const(15))
            top_entry = builder.select(builder.icmp_unsigned(">", frac, const(7)),
                                       builder.call(permd, [high, frac]), builder.call(permd, [low, frac]))
            total = builder.add(total, builder.lshr(top_entry, builder.sub(const(15), builder.lshr(u, const(4)))))
        return builder.call(reduce_add, [total])

    return sig, codegen


# the AVX2 kernel wherever the int8 tiles run on VNNI or AVX2 (every CPU with VNNI has AVX2)
exp2_sum = _exp2_sum_avx2 if KERNEL in ("vnni", "avx2") else _exp2_sum_generic


@njit(inline="always")
def log_likelihood(logits, target, exp2, log2_frac, exp2_bits, mant_bits):
    """``arith.log_likelihood`` of one row of 256 logits (exp2, log2_frac, exp2_bits, mant_bits: the
    tables and constants of arith, passed in)."""
    top = logits[0]
    for v in range(256):
        top = max(top, logits[v])
    s = exp2_sum(logits, top, exp2)
    e = 0  # floor(log2 s) by halving the search range
    for half in (16, 8, 4, 2, 1):
        if (s >> (e + half)) != 0:
            e += half
    m = (s >> (e - mant_bits)) & ((1 << mant_bits) - 1)
    return 16 * (logits[target] - top + 255) - ((e << 8) + log2_frac[m]) + (exp2_bits << 8)
