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

On a CPU with AVX2 but no VNNI the tile runs on ``vpmaddwd`` (16-bit products, two summed into each
int32 lane): a u8 x s8 product fits int16 exactly, so widening both operands to 16 bits gives the same
bits, 25-50 times faster than the plain loop LLVM makes of it. Without AVX2 the tile is a plain Numba
loop (same results, slower). The choice is made once at import from the host's features.
INTLM_CPU_KERNEL=avx2 or generic forces the others, for tests:
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


def _host_has_avx2() -> bool:
    return bool(llvm.get_host_cpu_features().get("avx2"))


def _kernels_here() -> list:
    """The tile kernels this host can run, fastest first."""
    return [k for k, ok in (("vnni", _host_has_vnni()), ("avx2", _host_has_avx2()), ("generic", True)) if ok]


KERNEL = os.environ.get("INTLM_CPU_KERNEL") or _kernels_here()[0]
if KERNEL not in _kernels_here():
    raise IntlmError(f"INTLM_CPU_KERNEL={KERNEL!r}: this CPU runs " + ", ".join(map(repr, _kernels_here())))


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


def _tile_intrinsic(codegen):
    """A tile's call signature, (x, xoff, xstride, xgstride, w, woff, wstride, groups, out, ooff,
    ostride), around the LLVM code that ``codegen`` emits."""

    @intrinsic
    def tile(typingctx, x, xoff, xstride, xgstride, w, woff, wstride, groups, out, ooff, ostride):
        sig = types.void(x, xoff, xstride, xgstride, w, woff, wstride, groups, out, ooff, ostride)
        return sig, codegen

    return tile


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

    return _tile_intrinsic(codegen)


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


_I8 = ir.IntType(8)
_I16 = ir.IntType(16)
_W16 = ir.VectorType(_I16, 2 * LANES)  # one vpmaddwd operand


def _avx2_tile(group):
    """The tile of ``_vnni_tile`` on AVX2's ``vpmaddwd`` (x and w as int16, each int32 lane the sum of
    two neighbouring products). group 2 (the update: int16 x and w) is that instruction as it stands.
    group 4 (the model: uint8 x, int8 w, both widened to int16, where every product is exact) leaves
    each output as two partial sums in neighbouring lanes, added at the end of a pass. A pass makes 8
    outputs of the tile's 4 rows, so its accumulators, weights and inputs fit AVX2's 16 registers."""

    per_col = group // 2  # int32 lanes an output's partial sums take, and weight vectors per pass

    def codegen(context, builder, sig, args):
        x, xoff, xstride, xgstride, w, woff, wstride, groups, out, ooff, ostride = args
        xp = context.make_array(sig.args[0])(context, builder, x).data
        wp = context.make_array(sig.args[4])(context, builder, w).data
        op = context.make_array(sig.args[8])(context, builder, out).data
        madd = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_V8, [_W16, _W16]),
                                              "llvm.x86.avx2.pmadd.wd")
        x_group = ir.VectorType(_I16, group)  # a row's group of inputs as int16, broadcast to every lane
        x_word = ir.IntType(16 * group)
        broadcast = ir.VectorType(x_word, 256 // (16 * group))

        def const(v):
            return ir.Constant(_I64, v)

        def widened(ptr, at, count, element, signed):  # count elements at ptr[at], as int16
            vec = builder.load(builder.bitcast(builder.gep(ptr, [at]), ir.VectorType(element, count).as_pointer()),
                               align=1)
            if element == _I16:
                return vec
            target = ir.VectorType(_I16, count)
            return builder.sext(vec, target) if signed else builder.zext(vec, target)

        x_element = ir.IntType(sig.args[0].dtype.bitwidth)
        w_element = ir.IntType(sig.args[4].dtype.bitwidth)
        for first in range(0, TILE_COLS, LANES):  # a pass: outputs first .. first + LANES of each row
            acc = [[cgutils.alloca_once_value(builder, ir.Constant(_V8, [0] * LANES)) for _ in range(per_col)]
                   for _ in range(TILE_ROWS)]
            with cgutils.for_range(builder, groups) as loop:
                g = loop.index
                xs = []
                for r in range(TILE_ROWS):
                    at = builder.add(xoff, builder.add(builder.mul(const(r), xstride), builder.mul(g, xgstride)))
                    word = builder.bitcast(widened(xp, at, group, x_element, False), x_word)
                    vec = builder.insert_element(ir.Constant(broadcast, None), word, ir.Constant(_I32, 0))
                    splat = builder.shuffle_vector(vec, ir.Constant(broadcast, None),
                                                   ir.Constant(ir.VectorType(_I32, broadcast.count),
                                                               [0] * broadcast.count))
                    xs.append(builder.bitcast(splat, _W16))
                row = builder.add(woff, builder.mul(g, wstride))
                for v in range(per_col):
                    at = builder.add(row, const(group * first + 2 * LANES * v))
                    ws = widened(wp, at, 2 * LANES, w_element, True)
                    for r in range(TILE_ROWS):
                        builder.store(builder.add(builder.load(acc[r][v]), builder.call(madd, [xs[r], ws])), acc[r][v])
            for r in range(TILE_ROWS):
                sums = [builder.load(a) for a in acc[r]]
                if per_col == 2:  # outputs first .. first + 3 in sums[0], the next four in sums[1]
                    even = ir.Constant(_V8, list(range(0, 2 * LANES, 2)))
                    odd = ir.Constant(_V8, list(range(1, 2 * LANES, 2)))
                    total = builder.add(builder.shuffle_vector(sums[0], sums[1], even),
                                        builder.shuffle_vector(sums[0], sums[1], odd))
                else:
                    total = sums[0]
                at = builder.add(ooff, builder.add(builder.mul(const(r), ostride), const(first)))
                builder.store(total, builder.bitcast(builder.gep(op, [at]), _V8.as_pointer()), align=1)
        return context.get_dummy_value()

    return _tile_intrinsic(codegen)


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
elif KERNEL == "avx2":
    gemm, gemm16, dot4 = _gemm(_avx2_tile(GROUP), GROUP), _gemm(_avx2_tile(2), 2), _dot4_generic
else:
    gemm, gemm16, dot4 = _gemm(_generic_tile(GROUP), GROUP), _gemm(_generic_tile(2), 2), _dot4_generic
