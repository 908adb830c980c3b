"""Int8 matrix products for the CPU backend: tiles of x . W^T with x as unsigned bytes.

The model's activations are int8; they are stored offset by +128 as uint8 so the product can run on
the CPU's u8 x s8 dot-product instruction (VNNI ``vpdpbusd``: four byte products summed into each
int32 lane, 32 multiply-adds per 256-bit instruction). The offset is taken back out exactly with a
per-row correction, -128 * sum(W[j, :]), so the result equals the signed product bit for bit.

Weights are packed once per step as (n/4, m_pad, 4): for every group of four inputs, the four bytes
of each output side by side, which is the operand layout of ``vpdpbusd``. A tile computes
TILE_ROWS rows x TILE_COLS outputs with its accumulators in registers.

On a CPU without VNNI the same tile is a plain Numba loop (same results, slower); the choice is made
once at import from the host's features (INTLM_CPU_KERNEL=generic forces the plain loop).
"""

import os

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir
from numba import njit
from numba.core import cgutils, types
from numba.core.extending import intrinsic

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
if KERNEL not in ("vnni", "generic"):
    raise ValueError(f"INTLM_CPU_KERNEL must be 'vnni' or 'generic', got {KERNEL!r}")


def padded(m: int) -> int:
    """Output count rounded up to whole tiles."""
    return -(-m // TILE_COLS) * TILE_COLS


def pack(weight):
    """(..., m, n) int8 -> packed (blocks, n/4, m_pad, 4) int8 and correction (blocks, m_pad) int32."""
    m, n = weight.shape[-2:]
    w = weight.reshape(-1, m, n)
    blocks = w.shape[0]
    full = np.zeros((blocks, padded(m), n), dtype=np.int8)
    full[:, :m] = w
    packed = np.ascontiguousarray(full.reshape(blocks, padded(m), n // GROUP, GROUP).transpose(0, 2, 1, 3))
    correction = (-OFFSET * full.astype(np.int32).sum(axis=2)).astype(np.int32)
    return packed, correction


_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_V8 = ir.VectorType(_I32, LANES)


@intrinsic
def _tile_vnni(typingctx, x, xoff, xstride, w, woff, wstride, groups, out, ooff, ostride):
    """out[ooff + r*ostride + c] = sum_g x[xoff + r*xstride + 4g : +4] . w[woff + g*wstride + 4c : +4]
    for r < TILE_ROWS, c < TILE_COLS; x uint8, w int8, out int32 (flat arrays)."""
    sig = types.void(x, xoff, xstride, w, woff, wstride, groups, out, ooff, ostride)

    def codegen(context, builder, sig, args):
        x, xoff, xstride, w, woff, wstride, groups, out, ooff, ostride = args
        xp = context.make_array(sig.args[0])(context, builder, x).data
        wp = context.make_array(sig.args[3])(context, builder, w).data
        op = context.make_array(sig.args[7])(context, builder, out).data
        dpbusd = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(_V8, [_V8, _V8, _V8]), "llvm.x86.avx512.vpdpbusd.256")
        zero = ir.Constant(_V8, [0] * LANES)
        acc = [[cgutils.alloca_once_value(builder, zero) for _ in range(TILE_VECTORS)]
               for _ in range(TILE_ROWS)]

        def const(v):
            return ir.Constant(_I64, v)

        with cgutils.for_range(builder, groups) as loop:
            g = loop.index
            xs = []
            for r in range(TILE_ROWS):  # four input bytes of row r, broadcast to every lane
                at = builder.add(xoff, builder.add(builder.mul(const(r), xstride), builder.mul(g, const(GROUP))))
                word = builder.load(builder.bitcast(builder.gep(xp, [at]), _I32.as_pointer()), align=1)
                vec = builder.insert_element(ir.Constant(_V8, None), word, ir.Constant(_I32, 0))
                xs.append(builder.shuffle_vector(vec, ir.Constant(_V8, None), ir.Constant(_V8, [0] * LANES)))
            row = builder.add(woff, builder.mul(g, wstride))
            ws = [builder.load(builder.bitcast(builder.gep(wp, [builder.add(row, const(GROUP * LANES * c))]),
                                               _V8.as_pointer()), align=1)
                  for c in range(TILE_VECTORS)]
            for r in range(TILE_ROWS):
                for c in range(TILE_VECTORS):
                    builder.store(builder.call(dpbusd, [builder.load(acc[r][c]), xs[r], ws[c]]), acc[r][c])
        for r in range(TILE_ROWS):
            for c in range(TILE_VECTORS):
                at = builder.add(ooff, builder.add(builder.mul(const(r), ostride), const(LANES * c)))
                builder.store(builder.load(acc[r][c]), builder.bitcast(builder.gep(op, [at]), _V8.as_pointer()),
                              align=1)
        return context.get_dummy_value()

    return sig, codegen


@njit(inline="always")
def _tile_generic(x, xoff, xstride, w, woff, wstride, groups, out, ooff, ostride):
    """The same tile as ``_tile_vnni`` in plain Numba, for CPUs without VNNI."""
    for r in range(TILE_ROWS):
        for c in range(TILE_COLS):
            out[ooff + r * ostride + c] = 0
        for g in range(groups):
            xo = xoff + r * xstride + GROUP * g
            wo = woff + g * wstride
            for c in range(TILE_COLS):
                s = np.int32(0)
                for q in range(GROUP):
                    s += np.int32(x[xo + q]) * np.int32(w[wo + GROUP * c + q])
                out[ooff + r * ostride + c] += s


tile = _tile_vnni if KERNEL == "vnni" else _tile_generic


@njit(inline="always")
def gemm(x, rows, xstride, w, woff, groups, m_pad, out, ostride):
    """out[:rows, :m_pad] = x[:rows, :4*groups] . W^T (raw: without the offset correction), with
    x, out flat row-major buffers and W packed at w[woff:]. ``rows`` is rounded up to whole tiles,
    so the buffers must hold those rows."""
    for j in range(0, m_pad, TILE_COLS):
        for i in range(0, rows, TILE_ROWS):
            tile(x, i * xstride, xstride, w, woff + GROUP * j, GROUP * m_pad, groups, out, i * ostride + j, ostride)
