"""Int8 matrix products for the Numba backend: tiles of x . W^T with x as unsigned bytes (gemm; the
exact signed product x . W^T of ``model.Members.linear`` once the offset correction is added), the
low-rank term's x.B for two antithetic pairs at a time (dot4), and the update's int16 product
(gemm16, the sums of ``es.update_sums``).

The model's activations are int8; they are stored offset by +128 as uint8 so the product can run on
the CPU's u8 x s8 dot-product instruction (VNNI ``vpdpbusd``: four byte products summed into each
int32 lane, 32 multiply-adds per 256-bit instruction). The offset is taken back out exactly with a
per-row correction, -128 * sum(W[j, :]), so the result equals the signed product bit for bit.

Weights are packed once per step as (n/4, m_pad, 4): for every group of four inputs, the four bytes
of each output side by side, which is the operand layout of ``vpdpbusd``. A tile computes
TILE_ROWS rows x TILE_COLS outputs with its accumulators in registers.

On a CPU without VNNI the same tile is a plain Numba loop (same results, slower); the choice is made
once at import from the host's features. INTLM_CPU_KERNEL=generic forces the plain loop, for tests:
Numba's on-disk cache is keyed by the CPU and by the source file of the cached function, not by this
variable or by this module, so use it with a fresh NUMBA_CACHE_DIR (and touch forward.py and update.py
after editing the kernels here).
"""

import os

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir
from numba import njit
from numba.core import cgutils, types
from numba.core.extending import intrinsic

from ...errors import IntlmError

TILE_ROWS = 4
LANES = 8  # int32 lanes of a 256-bit vector
TILE_VECTORS = 4
TILE_COLS = LANES * TILE_VECTORS
GROUP = 4  # bytes summed per int32 lane
OFFSET = 128  # int8 value + OFFSET = the uint8 stored


def _host_has_vnni() -> bool:
    features = llvm.get_host_cpu_features()
    return bool(features.get("avxvnni") or (features.get("avx512vnni") and features.get("avx512vl")))


KERNEL = os.environ.get("INTLM_CPU_KERNEL") or ("vnni" if _host_has_vnni() else "generic")
if KERNEL not in ("vnni", "generic") or (KERNEL == "vnni" and not _host_has_vnni()):
    raise IntlmError(f"INTLM_CPU_KERNEL={KERNEL!r}: choose 'generic'" + (", or 'vnni' on a CPU with VNNI"
                                                                          if _host_has_vnni() else ""))


def padded(m: int) -> int:
    """Output count rounded up to whole tiles."""
    return -(-m // TILE_COLS) * TILE_COLS


def pack(weight):
    """(..., m, n) int8 -> (blocks, n/4, m_pad, 4): for each group of four inputs, the group's values
    of every output side by side (the dot-product instruction's operand layout)."""
    m, n = weight.shape[-2:]
    full = np.zeros((weight.size // (m * n), padded(m), n), dtype=weight.dtype)
    full[:, :m] = weight.reshape(-1, m, n)
    return np.ascontiguousarray(full.reshape(full.shape[0], padded(m), n // GROUP, GROUP).transpose(0, 2, 1, 3))


def correction(weight):
    """-OFFSET * sum(W[j, :]) per output (blocks, m_pad) int32: takes the uint8 offset back out."""
    m, n = weight.shape[-2:]
    out = np.zeros((weight.size // (m * n), padded(m)), dtype=np.int32)
    out[:, :m] = -OFFSET * weight.reshape(-1, m, n).sum(axis=2, dtype=np.int32)
    return out


_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_V8 = ir.VectorType(_I32, LANES)


def _vnni_tile(instruction, group):
    """A tile on a VNNI dot-product instruction that sums ``group`` products into each int32 lane:
    out[ooff + r*ostride + c] = sum_g x[xoff + r*xstride + g*xgstride : +group] . w[woff + g*wstride +
    group*c : +group] for r < TILE_ROWS, c < TILE_COLS (flat arrays; out int32). Row-major x has
    xgstride = group; the update's operand stores each group's rows side by side (xstride = group)."""

    def codegen(context, builder, sig, args):
        x, xoff, xstride, xgstride, w, woff, wstride, groups, out, ooff, ostride = args
        xp = context.make_array(sig.args[0])(context, builder, x).data
        wp = context.make_array(sig.args[4])(context, builder, w).data
        op = context.make_array(sig.args[8])(context, builder, out).data
        dp = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_V8, [_V8] * 3), instruction)
        zero = ir.Constant(_V8, [0] * LANES)
        acc = [[cgutils.alloca_once_value(builder, zero) for _ in range(TILE_VECTORS)]
               for _ in range(TILE_ROWS)]

        def const(v):
            return ir.Constant(_I64, v)

        with cgutils.for_range(builder, groups) as loop:
            g = loop.index
            xs = []
            for r in range(TILE_ROWS):  # row r's group of inputs (32 bits), broadcast to every lane
                at = builder.add(xoff, builder.add(builder.mul(const(r), xstride), builder.mul(g, xgstride)))
                word = builder.load(builder.bitcast(builder.gep(xp, [at]), _I32.as_pointer()), align=1)
                vec = builder.insert_element(ir.Constant(_V8, None), word, ir.Constant(_I32, 0))
                xs.append(builder.shuffle_vector(vec, ir.Constant(_V8, None), ir.Constant(_V8, [0] * LANES)))
            row = builder.add(woff, builder.mul(g, wstride))
            ws = [builder.load(builder.bitcast(builder.gep(wp, [builder.add(row, const(group * LANES * c))]),
                                               _V8.as_pointer()), align=1)
                  for c in range(TILE_VECTORS)]
            for r in range(TILE_ROWS):
                for c in range(TILE_VECTORS):
                    builder.store(builder.call(dp, [builder.load(acc[r][c]), xs[r], ws[c]]), acc[r][c])
        for r in range(TILE_ROWS):
            for c in range(TILE_VECTORS):
                at = builder.add(ooff, builder.add(builder.mul(const(r), ostride), const(LANES * c)))
                builder.store(builder.load(acc[r][c]), builder.bitcast(builder.gep(op, [at]), _V8.as_pointer()),
                              align=1)
        return context.get_dummy_value()

    @intrinsic
    def tile(typingctx, x, xoff, xstride, xgstride, w, woff, wstride, groups, out, ooff, ostride):
        sig = types.void(x, xoff, xstride, xgstride, w, woff, wstride, groups, out, ooff, ostride)
        return sig, codegen

    return tile


_V4 = ir.VectorType(_I32, 4)


DOT_ROWS = 4  # rows per dot4 call: two antithetic pairs


@intrinsic
def _dot4_vnni(typingctx, x, xoff, xstride, w, woff0, woff1, n, out, ooff, ostride):
    """out[ooff + r*ostride] = sum_i x[xoff + r*xstride + i] * w[woff + i] for r < 4 and i < n (a
    multiple of 16), woff = woff0 for rows 0, 1 and woff1 for rows 2, 3; x uint8, w int8, out int32
    (flat arrays). Four independent accumulators, summed together at the end."""
    sig = types.void(x, xoff, xstride, w, woff0, woff1, n, out, ooff, ostride)

    def codegen(context, builder, sig, args):
        x, xoff, xstride, w, woff0, woff1, n, out, ooff, ostride = args
        xp = context.make_array(sig.args[0])(context, builder, x).data
        wp = context.make_array(sig.args[3])(context, builder, w).data
        op = context.make_array(sig.args[7])(context, builder, out).data
        mod = builder.module
        dp8 = cgutils.get_or_insert_function(mod, ir.FunctionType(_V8, [_V8] * 3), "llvm.x86.avx512.vpdpbusd.256")
        dp4 = cgutils.get_or_insert_function(mod, ir.FunctionType(_V4, [_V4] * 3), "llvm.x86.avx512.vpdpbusd.128")
        rows = [builder.gep(xp, [builder.add(xoff, builder.mul(ir.Constant(_I64, r), xstride))])
                for r in range(DOT_ROWS)]
        ws = [builder.gep(wp, [woff]) for woff in (woff0, woff1)]
        acc = [cgutils.alloca_once_value(builder, ir.Constant(_V8, [0] * LANES)) for _ in range(DOT_ROWS)]

        def load(ptr, at, vec):
            return builder.load(builder.bitcast(builder.gep(ptr, [at]), vec.as_pointer()), align=1)

        wide = ir.Constant(_I64, 8 * GROUP)
        with cgutils.for_range(builder, builder.udiv(n, wide)) as loop:
            at = builder.mul(loop.index, wide)
            wv = [load(p, at, _V8) for p in ws]
            for r in range(DOT_ROWS):
                builder.store(builder.call(dp8, [builder.load(acc[r]), load(rows[r], at, _V8), wv[r // 2]]), acc[r])
        at = builder.sub(n, builder.urem(n, wide))
        with builder.if_then(builder.icmp_unsigned("!=", at, n)):  # the last 16 bytes, in the low lanes
            wv = [load(p, at, _V4) for p in ws]
            for r in range(DOT_ROWS):
                total = builder.load(acc[r])
                low = builder.shuffle_vector(total, total, ir.Constant(_V4, [0, 1, 2, 3]))
                low = builder.call(dp4, [low, load(rows[r], at, _V4), wv[r // 2]])
                wide_low = builder.shuffle_vector(low, low, ir.Constant(_V8, [0, 1, 2, 3, 0, 0, 0, 0]))
                builder.store(builder.shuffle_vector(wide_low, total, ir.Constant(_V8, [0, 1, 2, 3, 12, 13, 14, 15])),
                              acc[r])  # the new low lanes, and the high lanes of the 32-byte steps

        def pairwise(a, b, size):  # the sums of neighbouring lanes of a, then of b
            even = ir.Constant(ir.VectorType(_I32, size), list(range(0, 2 * size, 2)))
            odd = ir.Constant(ir.VectorType(_I32, size), list(range(1, 2 * size, 2)))
            return builder.add(builder.shuffle_vector(a, b, even), builder.shuffle_vector(a, b, odd))

        sums = [builder.load(a) for a in acc]
        quarters = pairwise(pairwise(sums[0], sums[1], LANES), pairwise(sums[2], sums[3], LANES), LANES)
        totals = pairwise(quarters, quarters, 4)  # row r's total in lane r
        for r in range(DOT_ROWS):
            at = builder.add(ooff, builder.mul(ir.Constant(_I64, r), ostride))
            builder.store(builder.extract_element(totals, ir.Constant(_I32, r)), builder.gep(op, [at]))
        return context.get_dummy_value()

    return sig, codegen


def _generic_tile(group):
    """The same tile as ``_vnni_tile`` in plain Numba, for CPUs without VNNI."""

    @njit(inline="always")
    def tile(x, xoff, xstride, xgstride, w, woff, wstride, groups, out, ooff, ostride):
        for r in range(TILE_ROWS):
            for c in range(TILE_COLS):
                out[ooff + r * ostride + c] = 0
            for g in range(groups):
                xo = xoff + r * xstride + g * xgstride
                wo = woff + g * wstride
                for c in range(TILE_COLS):
                    s = np.int32(0)
                    for q in range(group):
                        s += np.int32(x[xo + q]) * np.int32(w[wo + group * c + q])
                    out[ooff + r * ostride + c] += s

    return tile


@njit(inline="always")
def _dot4_generic(x, xoff, xstride, w, woff0, woff1, n, out, ooff, ostride):
    """The same dot products as ``_dot4_vnni`` in plain Numba."""
    for r in range(DOT_ROWS):
        woff = woff0 if r < 2 else woff1
        s = np.int32(0)
        for i in range(n):
            s = np.int32(s + np.int32(x[xoff + r * xstride + i]) * np.int32(w[woff + i]))
        out[ooff + r * ostride] = s


def _gemm(tile, group):
    @njit(inline="always")
    def gemm(x, rows, xstride, xgstride, w, woff, groups, m_pad, out, ostride):
        """out[:rows, :m_pad] = x . W^T for rows of `groups` groups of inputs, row i's group g at
        x[i*xstride + g*xgstride:][:group] (row-major x: xgstride = group), out a flat row-major buffer
        and W packed at w[woff:] (``pack``). ``rows`` is a multiple of TILE_ROWS."""
        for j in range(0, m_pad, TILE_COLS):
            for i in range(0, rows, TILE_ROWS):
                tile(x, i * xstride, xstride, xgstride, w, woff + group * j, group * m_pad, groups, out,
                     i * ostride + j, ostride)

    return gemm


if KERNEL == "vnni":
    # uint8 x int8, 4 per lane (the model's products); int16 x int16, 2 per lane (the update)
    gemm = _gemm(_vnni_tile("llvm.x86.avx512.vpdpbusd.256", GROUP), GROUP)
    gemm16 = _gemm(_vnni_tile("llvm.x86.avx512.vpdpwssd.256", 2), 2)
    dot4 = _dot4_vnni
else:
    gemm, gemm16, dot4 = _gemm(_generic_tile(GROUP), GROUP), _gemm(_generic_tile(2), 2), _dot4_generic
