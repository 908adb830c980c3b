"""Tests of the Numba backend's int8 GEMM (backends/numba/gemm.py, imported as cpu_gemm): the packed weight layout and its offset correction, the
GEMM and the three tile kernels (VNNI, AVX2, plain) against the exact signed product in NumPy (worst cases
included), the update's int16 tile, the four-row dot product of the low-rank term, the int32 shift, the layer
norm's reciprocal division, and a whole Numba forward on the kernels the host does not select."""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

from intlm.backends.numba import gemm as cpu_gemm
from intlm.arith import div_round
from intlm.backends.numba.arith import div_round_reciprocal, sar32
from intlm.backends.numba.update import _interleave_pairs
from intlm.backends.numba.gemm import GROUP, OFFSET, TILE_COLS, TILE_ROWS, correction, pack, padded

REPO = pathlib.Path(__file__).resolve().parents[1]
FEW = settings(max_examples=60, deadline=None)
VNNI_INSTRUCTION = "llvm.x86.avx512.vpdpbusd.256"  # u8 x s8, 4 products per int32 lane
VNNI16_INSTRUCTION = "llvm.x86.avx512.vpdpwssd.256"  # s16 x s16, 2 products per int32 lane (the update)

# Largest dimensions the config accepts: width <= 1024, mlp_ratio <= 8 (config.check).
MAX_WIDTH, MAX_HIDDEN = 1024, 1024 * 8
# Layer norm (backends/numba/forward.py _layer_norm): num = x * gain * d, den = sum |x| over the row.
MAX_NORM_NUM = 127 * 127 * MAX_WIDTH
MAX_NORM_DEN = 127 * MAX_WIDTH


def random_weight(rng, shape, dtype=np.int8, limit=127):
    """Random weights in [-limit, limit] with about 10% saturated at +-limit."""
    w = rng.integers(-limit, limit + 1, shape)
    sat = rng.random(shape) < 0.1
    w[sat] = rng.choice([-limit, limit], int(sat.sum()))
    return w.astype(dtype)


def random_offset_x(rng, rows, n):
    """Activations as stored for the GEMM: uint8 = int8 value + OFFSET, extremes 0 and 255 included."""
    x = rng.integers(0, 256, (rows, n))
    sat = rng.random((rows, n)) < 0.1
    x[sat] = rng.choice([0, 255], int(sat.sum()))
    return x.astype(np.uint8)


def signed_product(x, w):
    """The exact product the GEMM stands for: (x - OFFSET) . W^T in int64."""
    return (x.astype(np.int64) - OFFSET) @ w.astype(np.int64).T


# --- pack / correction -----------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(16, 16), (48, 32), (32, 64), (3, 80, 48), (2, 4, 16, 32), (256, 16)],
                         ids=lambda s: "x".join(map(str, s)))
def test_pack_layout_unpacks_to_zero_padded_weight(shape):
    """pack gives (blocks, n/4, padded(m), 4) int8 whose transpose back is W followed by zero rows."""
    rng = np.random.default_rng(sum(shape))
    w = random_weight(rng, shape)
    m, n = shape[-2:]
    blocks = int(np.prod(shape[:-2], dtype=np.int64))
    p = pack(w)
    assert padded(m) % TILE_COLS == 0 and m <= padded(m) < m + TILE_COLS
    assert p.dtype == np.int8 and p.flags.c_contiguous
    assert p.shape == (blocks, n // GROUP, padded(m), GROUP)
    # p[b, g, j, q] = W[b, j, GROUP*g + q]
    unpacked = p.transpose(0, 2, 1, 3).reshape(blocks, padded(m), n)
    assert np.array_equal(unpacked[:, :m], w.reshape(blocks, m, n))
    assert not unpacked[:, m:].any()
    j, g, q = m - 1, n // GROUP - 1, GROUP - 1  # one element by hand: the last output's last input
    assert p[blocks - 1, g, j, q] == w.reshape(blocks, m, n)[blocks - 1, j, n - 1]


@pytest.mark.parametrize("pairs, rank, q_start", [(5, 1, 0), (4, 3, 0), (3, 3, 0), (5, 1, 2), (3, 3, 4)])
def test_interleave_pairs_is_the_gemm16_layout(pairs, rank, q_start):
    """update._interleave_pairs gives int16 with pairs of q = p * r + k side by side from q_start
    on, f[p] * v[p, blk, j, k], a zero last q when pairs * rank is odd, and leaves columns past v's alone."""
    rng = np.random.default_rng(7)
    blocks, n = 2, 40
    v = rng.integers(-78, 79, (pairs, blocks, n, rank)).astype(np.int8)
    f = rng.integers(-8, 9, pairs).astype(np.int32)
    groups = -(-(pairs * rank - q_start) // 2)
    out = np.full((blocks, groups, padded(n), 2), 999, np.int16)
    _interleave_pairs(f, v, q_start, out)
    assert out.dtype == np.int16 and out.shape == (blocks, groups, padded(n), 2)
    want = np.zeros((blocks, q_start + 2 * groups, n), np.int64)  # [blk, q, j]
    want[:, :pairs * rank] = (f[:, None, None, None] * v.astype(np.int64)).transpose(1, 0, 3, 2).reshape(
        blocks, pairs * rank, n)
    unpacked = out.transpose(0, 1, 3, 2).reshape(blocks, 2 * groups, padded(n))
    assert np.array_equal(unpacked[:, :, :n], want[:, q_start:])
    assert np.all(unpacked[:, :, n:] == 999)


@pytest.mark.parametrize("shape", [(16, 16), (48, 32), (3, 80, 48), (2, 4, 16, 32)],
                         ids=lambda s: "x".join(map(str, s)))
def test_correction_is_minus_128_times_row_sums(shape):
    """correction is (blocks, padded(m)) int32 = -128 * sum_k W[j, k] for j < m, and 0 in the padding."""
    rng = np.random.default_rng(len(shape) + shape[-1])
    w = random_weight(rng, shape)
    m, n = shape[-2:]
    c = correction(w)
    blocks = int(np.prod(shape[:-2], dtype=np.int64))
    assert c.dtype == np.int32 and c.shape == (blocks, padded(m))
    sums = w.reshape(blocks, m, n).astype(np.int64).sum(axis=2)
    assert np.array_equal(c[:, :m].astype(np.int64), -128 * sums)
    assert not c[:, m:].any()


def test_correction_worst_case_fits_int32():
    """At the largest input count (8192) a row of all +-127 gives -+128*127*8192 exactly, no wrap."""
    w = np.full((2, 16, MAX_HIDDEN), 127, dtype=np.int8)
    w[1] = -127
    c = correction(w)
    assert np.all(c[0, :16] == -128 * 127 * MAX_HIDDEN)
    assert np.all(c[1, :16] == 128 * 127 * MAX_HIDDEN)


# --- GEMM ------------------------------------------------------------------------------------------

def _gemm_runner(gemm):
    """A jitted call of a flat-array GEMM on block ``blk`` of a packed weight, as _linear calls it."""

    @njit
    def run(x, w, blk, m_pad, out, ostride):
        rows, n = x.shape
        groups = n // GROUP
        gemm(x.reshape(x.size), rows, n, GROUP, w, blk * groups * m_pad * GROUP, groups, m_pad, out.reshape(out.size),
             ostride)

    return run


GEMMS = {
    "selected": _gemm_runner(cpu_gemm.gemm),  # the one the backend uses on this host (KERNEL)
    "generic": _gemm_runner(cpu_gemm._gemm(cpu_gemm._generic_tile(GROUP), GROUP)),
    "avx2": _gemm_runner(cpu_gemm._gemm(cpu_gemm._avx2_tile(GROUP), GROUP)),  # compiled on first call
}


@pytest.fixture(autouse=True)
def _skip_avx2_without_it(request):
    """A test of the AVX2 kernels needs a CPU with AVX2 (Numba compiles on first call, so defining the
    runner above costs nothing elsewhere)."""
    kind = getattr(request.node, "callspec", None) and request.node.callspec.params.get("kind")
    if kind == "avx2" and not cpu_gemm._host_has_avx2():
        pytest.skip("AVX2 kernel not tested: this CPU has no AVX2")


def run_gemm(kind, x, w, extra_cols=0):
    """(rows, padded(m) + extra_cols) int32 per block of W: GEMM output + correction in the first
    padded(m) columns; the extra columns are left at a sentinel so stray writes show."""
    m, n = w.shape[-2:]
    wb = w.reshape(-1, m, n)
    m_pad = padded(m)
    packed, corr = pack(wb).reshape(-1), correction(wb)
    ostride = m_pad + extra_cols
    outs = []
    for blk in range(wb.shape[0]):
        out = np.full((x.shape[0], ostride), -12345, dtype=np.int32)
        GEMMS[kind](np.ascontiguousarray(x), packed, blk, m_pad, out, ostride)
        assert np.all(out[:, m_pad:] == -12345), "GEMM wrote past m_pad"
        out[:, :m_pad] += corr[blk]
        outs.append(out[:, :m_pad])
    return np.stack(outs), wb


def assert_gemm_exact(kind, x, w, extra_cols=0):
    got, wb = run_gemm(kind, x, w, extra_cols)
    m = wb.shape[1]
    for blk in range(wb.shape[0]):
        assert np.array_equal(got[blk, :, :m].astype(np.int64), signed_product(x, wb[blk])), (kind, blk)
        assert not got[blk, :, m:].any(), "padding columns must come out 0"


GEMM_SHAPES = [  # (blocks, rows, m, n): m = 16, 48, 80 are not multiples of 32; 256 = the head
    (1, 4, 16, 16),
    (1, 8, 48, 32),
    (3, 12, 80, 48),
    (2, 4, 32, 64),
    (1, 32, 256, 16),
    (4, 8, 16, 128),
    (1, 4, 64, 1024),
]


@pytest.mark.parametrize("kind", list(GEMMS))
@pytest.mark.parametrize("shape", GEMM_SHAPES, ids=lambda s: "b{}-r{}-m{}-n{}".format(*s))
def test_gemm_equals_signed_product(kind, shape):
    """GEMM + correction on offset uint8 x and int8 W = (x - 128) . W^T exactly, for every block."""
    blocks, rows, m, n = shape
    rng = np.random.default_rng(rows * 1000 + m + n)
    x = random_offset_x(rng, rows, n)
    w = random_weight(rng, (blocks, m, n))
    assert_gemm_exact(kind, x, w, extra_cols=TILE_COLS)


@pytest.mark.parametrize("kind", list(GEMMS))
@pytest.mark.parametrize("n", [MAX_WIDTH, MAX_HIDDEN])
def test_gemm_worst_case_has_no_int32_overflow(kind, n):
    """All x at 255 or 0 with all W at +-127 over n = 1024 and 8192 inputs gives (x-128)*w*n exactly."""
    x = np.array([255, 0, 255, 0, 0, 255, 0, 255], dtype=np.uint8)[:, None].repeat(n, axis=1)
    w = np.full((2, 48, n), 127, dtype=np.int8)
    w[1] = -127
    got, _ = run_gemm(kind, x, w)
    for blk, wv in enumerate((127, -127)):
        expected = ((x[:, :1].astype(np.int64) - OFFSET) * wv * n).repeat(48, axis=1)
        assert np.array_equal(got[blk, :, :48].astype(np.int64), expected)
    # the raw accumulator reached 255 * 127 * n (about 2**28 at n = 8192) before the correction
    assert got[0, 0, 0] == 127 * 127 * n and got[1, 0, 0] == -127 * 127 * n
    assert got[0, 1, 0] == -128 * 127 * n and got[1, 1, 0] == 128 * 127 * n


@pytest.mark.parametrize("kind", list(GEMMS))
@FEW
@given(blocks=st.integers(1, 3), tiles=st.integers(1, 4), m16=st.integers(1, 9), n16=st.integers(1, 12),
       seed=st.integers(0, 2 ** 32 - 1), extreme=st.booleans())
def test_gemm_property_random_shapes(kind, blocks, tiles, m16, n16, seed, extreme):
    """For any rows (multiple of 4), m and n (multiples of 16) and values, GEMM = (x - 128) . W^T."""
    rng = np.random.default_rng(seed)
    rows, m, n = tiles * TILE_ROWS, 16 * m16, 16 * n16
    if extreme:  # only the extreme values, in random places
        x = rng.choice(np.array([0, 255], np.uint8), (rows, n))
        w = rng.choice(np.array([-127, 127], np.int8), (blocks, m, n))
    else:
        x = random_offset_x(rng, rows, n)
        w = random_weight(rng, (blocks, m, n))
    assert_gemm_exact(kind, x, w, extra_cols=int(rng.integers(0, 3)) * 16)


# --- tile kernels ----------------------------------------------------------------------------------

def _tile_runner(tile):
    @njit
    def run(x, xoff, xstride, xgstride, w, woff, wstride, groups, out, ooff, ostride):
        tile(x, xoff, xstride, xgstride, w, woff, wstride, groups, out, ooff, ostride)

    return run


def _tile(kind, group=GROUP):
    if kind == "generic":
        return _tile_runner(cpu_gemm._generic_tile(group))
    if kind == "avx2":
        return _tile_runner(cpu_gemm._avx2_tile(group))
    if cpu_gemm.KERNEL != "vnni" or not cpu_gemm._host_has_vnni():
        pytest.skip(f"VNNI tile not tested: cpu_gemm.KERNEL is {cpu_gemm.KERNEL!r} (needs 'vnni' and a CPU "
                    f"with AVX-VNNI or AVX512-VNNI+VL)")
    return _tile_runner(cpu_gemm._vnni_tile(VNNI_INSTRUCTION if group == GROUP else VNNI16_INSTRUCTION, group))


def tile_reference(x, xoff, xstride, xgstride, w, woff, wstride, groups):
    """The documented tile in NumPy: out[r, c] = sum_{g,q} x[xoff + r*xstride + g*xgstride + q] *
    w[woff + g*wstride + 4c + q] for r < TILE_ROWS, c < TILE_COLS (int64)."""
    r = np.arange(TILE_ROWS)[:, None, None, None]
    c = np.arange(TILE_COLS)[None, :, None, None]
    g = np.arange(groups)[None, None, :, None]
    q = np.arange(GROUP)[None, None, None, :]
    xv = x.astype(np.int64)[xoff + r * xstride + g * xgstride + q]
    wv = w.astype(np.int64)[woff + g * wstride + GROUP * c + q]
    return (xv * wv).sum(axis=(2, 3))


@pytest.fixture(scope="module", params=["row-major", "group-major"])
def tile_case(request):
    """Flat operands with non-zero offsets and strides wider than the tile, shared by both kernels;
    x row-major (a row's groups in order) or group-major (each group's rows side by side)."""
    rng = np.random.default_rng(2024)
    groups, wstride, ostride = 24, 4 * TILE_COLS + 64, TILE_COLS + 16
    if request.param == "row-major":
        xstride, xgstride = GROUP * groups + 20, GROUP
    else:
        xstride, xgstride = GROUP, GROUP * TILE_ROWS + 12
    xoff, woff, ooff = 2 * xstride + 8, 3 * wstride + 32, ostride + 8
    x = random_offset_x(rng, 1, xoff + TILE_ROWS * xstride + groups * xgstride)[0]
    w = random_weight(rng, woff + groups * wstride)
    x[xoff + xgstride * np.arange(groups)[:, None] + np.arange(GROUP)] = 255  # row 0 at the worst case
    return dict(x=x, xoff=xoff, xstride=xstride, xgstride=xgstride, w=w, woff=woff, wstride=wstride,
                groups=groups, ooff=ooff, ostride=ostride)


TILE_KINDS = ["generic", "avx2", "vnni"]


@pytest.mark.parametrize("kind", TILE_KINDS)
def test_tile_kernel_matches_numpy(kind, tile_case):
    """Each tile kernel writes exactly the 4 x 32 block of x . w at (ooff, ostride), nothing else."""
    run = _tile(kind)
    t = tile_case
    out = np.full(t["ooff"] + TILE_ROWS * t["ostride"] + 16, 777, dtype=np.int32)
    args = (t["x"], t["xoff"], t["xstride"], t["xgstride"], t["w"], t["woff"], t["wstride"], t["groups"])
    run(*args, out, t["ooff"], t["ostride"])
    ref = tile_reference(*args)
    idx = t["ooff"] + np.arange(TILE_ROWS)[:, None] * t["ostride"] + np.arange(TILE_COLS)[None, :]
    assert np.array_equal(out[idx].astype(np.int64), ref)
    untouched = np.ones(out.size, bool)
    untouched[idx.ravel()] = False
    assert np.all(out[untouched] == 777), "tile wrote outside its 4 x 32 block"


@pytest.mark.parametrize("kind", TILE_KINDS)
def test_tile_kernel_overwrites_previous_output(kind, tile_case):
    """A tile sets (not adds to) its outputs: a second call on a dirty buffer gives the same block."""
    run = _tile(kind)
    t = tile_case
    args = (t["x"], t["xoff"], t["xstride"], t["xgstride"], t["w"], t["woff"], t["wstride"], t["groups"])
    out = np.zeros(t["ooff"] + TILE_ROWS * t["ostride"], dtype=np.int32)
    run(*args, out, t["ooff"], t["ostride"])
    first = out.copy()
    run(*args, out, t["ooff"], t["ostride"])
    assert np.array_equal(out, first)
    assert first.any()


@pytest.mark.parametrize("kind", TILE_KINDS)
@FEW
@given(groups=st.integers(1, 40), seed=st.integers(0, 2 ** 32 - 1), extreme=st.booleans(),
       group_major=st.booleans())
def test_int16_tile_kernel_matches_numpy(kind, groups, seed, extreme, group_major):
    """The update's tile (gemm16: int16 x and w, 2 inputs a group) writes exactly the 4 x 32 block of
    x . w, with int32 wrap-around as the reference's: at -32768 on both sides a group's two products
    sum to 2**31, which every kernel wraps alike."""
    run = _tile(kind, 2)
    rng = np.random.default_rng(seed)
    wstride, ostride = 2 * TILE_COLS + 2 * int(rng.integers(0, 8)), TILE_COLS + int(rng.integers(0, 8))
    xstride, xgstride = (2, 2 * TILE_ROWS + 6) if group_major else (2 * groups + 4, 2)
    xoff, woff, ooff = 6, 2 * wstride + 4, 3
    span = (xoff + TILE_ROWS * xstride + groups * xgstride, woff + groups * wstride)
    values = np.array([-32768, 32767, -1, 0], np.int16)
    x, w = ((rng.choice(values, k) if extreme else rng.integers(-32768, 32768, k)).astype(np.int16) for k in span)
    out = np.full(ooff + TILE_ROWS * ostride + 8, 777, dtype=np.int32)
    run(x, xoff, xstride, xgstride, w, woff, wstride, groups, out, ooff, ostride)
    r, c = np.arange(TILE_ROWS)[:, None, None, None], np.arange(TILE_COLS)[None, :, None, None]
    g, q = np.arange(groups)[None, None, :, None], np.arange(2)[None, None, None, :]
    ref = (x.astype(np.int64)[xoff + r * xstride + g * xgstride + q] *
           w.astype(np.int64)[woff + g * wstride + 2 * c + q]).sum(axis=(2, 3)).astype(np.int32)  # wraps
    idx = ooff + np.arange(TILE_ROWS)[:, None] * ostride + np.arange(TILE_COLS)[None, :]
    assert np.array_equal(out[idx], ref)
    untouched = np.ones(out.size, bool)
    untouched[idx.ravel()] = False
    assert np.all(out[untouched] == 777), "tile wrote outside its 4 x 32 block"


# --- sar32: the 32-bit arithmetic shift -------------------------------------------------------------

@njit
def _sar32_many(x, s):
    out = np.empty(x.size, np.int32)
    for i in range(x.size):
        out[i] = sar32(x[i], s[i])
    return out


@settings(max_examples=200, deadline=None)
@given(x=st.lists(st.integers(-(2 ** 63), 2 ** 63 - 1), min_size=1, max_size=50),
       s=st.integers(0, 31))
def test_sar32_is_int32_then_arithmetic_shift(x, s):
    """sar32(x, s) = int32(x) >> s: the low 32 bits as a signed value, shifted with the sign (floor
    division by 2**s), for every int64 x and 0 <= s < 32."""
    xs = np.array(x, np.int64)
    got = _sar32_many(xs, np.full(xs.size, s, np.int64))
    low = xs.astype(np.int32)  # two's-complement wrap, as the intrinsic's truncation
    assert np.array_equal(got, low >> s)
    assert np.array_equal(got.astype(np.int64), np.floor_divide(low.astype(np.int64), 1 << s))


def test_sar32_extremes():
    """The int32 limits, -1 and the shift limits: the sign fills in from the left."""
    x = np.array([2 ** 31 - 1, -2 ** 31, -1, 1, 0, -7, 7], np.int64)
    for s in (0, 1, 4, 31):
        assert np.array_equal(_sar32_many(x, np.full(x.size, s, np.int64)), x.astype(np.int32) >> s)
    assert _sar32_many(np.array([-2 ** 31], np.int64), np.array([31], np.int64))[0] == -1
    assert _sar32_many(np.array([2 ** 31 - 1], np.int64), np.array([31], np.int64))[0] == 0


# --- dot4: x.B of two antithetic pairs ------------------------------------------------------------

def _dot4_runner(dot4):
    @njit
    def run(x, xoff, xstride, w, woff0, woff1, n, out, ooff, ostride):
        dot4(x, xoff, xstride, w, woff0, woff1, n, out, ooff, ostride)

    return run


DOT4_RUNNERS = {"generic": _dot4_runner(cpu_gemm._dot4_generic), "vnni": _dot4_runner(cpu_gemm._dot4_vnni)}


def _dot4(kind):
    """The jitted runner (compiled once, on first use) of one dot4 kernel."""
    if kind == "vnni" and (cpu_gemm.KERNEL != "vnni" or not cpu_gemm._host_has_vnni()):
        pytest.skip(f"VNNI dot4 not tested: cpu_gemm.KERNEL is {cpu_gemm.KERNEL!r}")
    return DOT4_RUNNERS[kind]


def assert_dot4_exact(kind, x_rows, w0, w1, rng):
    """dot4 on flat buffers with offsets and strides wider than n; only out[ooff + r*ostride] change."""
    n = x_rows.shape[1]
    xstride, ostride = n + int(rng.integers(0, 3)) * 16, int(rng.integers(1, 4))
    xoff, woff0, ooff = int(rng.integers(0, 40)), int(rng.integers(0, 40)), int(rng.integers(0, 5))
    x = rng.integers(0, 256, xoff + 4 * xstride).astype(np.uint8)
    for r in range(4):
        x[xoff + r * xstride:xoff + r * xstride + n] = x_rows[r]
    woff1 = woff0 + n + int(rng.integers(0, 40))
    w = random_weight(rng, woff1 + n + 8)
    w[woff0:woff0 + n], w[woff1:woff1 + n] = w0, w1
    out = np.full(ooff + 4 * ostride + 3, -777, np.int32)
    _dot4(kind)(x, xoff, xstride, w, woff0, woff1, n, out, ooff, ostride)
    want = [x_rows[r].astype(np.int64) @ (w0 if r < 2 else w1).astype(np.int64) for r in range(4)]
    at = ooff + ostride * np.arange(4)
    assert out[at].tolist() == want
    rest = np.ones(out.size, bool)
    rest[at] = False
    assert np.all(out[rest] == -777), "dot4 wrote outside its four outputs"


@pytest.mark.parametrize("kind", ["generic", "vnni"])
@FEW
@given(n16=st.integers(1, 20), seed=st.integers(0, 2 ** 32 - 1))
def test_dot4_matches_numpy(kind, n16, seed):
    """Rows 0, 1 against w0 and rows 2, 3 against w1, for any n that is a multiple of 16 (with and
    without a 16-byte tail past the 32-byte steps)."""
    rng = np.random.default_rng(seed)
    n = 16 * n16
    assert_dot4_exact(kind, random_offset_x(rng, 4, n), random_weight(rng, n), random_weight(rng, n), rng)


@pytest.mark.parametrize("kind", ["generic", "vnni"])
@pytest.mark.parametrize("n", [16, 48, MAX_WIDTH, MAX_HIDDEN])
def test_dot4_worst_case_has_no_int32_overflow(kind, n):
    """x at 255 (and 0) against all +-127 over up to 8192 inputs: +-255 * 127 * n exactly."""
    rng = np.random.default_rng(n)
    x = np.array([255, 0, 255, 0], np.uint8)[:, None].repeat(n, axis=1)
    assert_dot4_exact(kind, x, np.full(n, 127, np.int8), np.full(n, -127, np.int8), rng)


# --- div_round_reciprocal --------------------------------------------------------------------------

@njit
def _div_many(num, den, inv):
    out = np.empty_like(num)
    for i in range(num.size):
        out[i] = div_round_reciprocal(num[i], den[i], inv[i])
    return out


def reciprocal_div(num, den):
    """div_round_reciprocal on int64 arrays with inv = 2**32 // den computed here in NumPy."""
    num, den = np.broadcast_arrays(np.asarray(num, np.int64), np.asarray(den, np.int64))
    num, den = np.ascontiguousarray(num), np.ascontiguousarray(den)
    return _div_many(num, den, (1 << 32) // den)


@settings(max_examples=400, deadline=None)
@given(num=st.integers(-MAX_NORM_NUM, MAX_NORM_NUM), den=st.integers(1, MAX_NORM_DEN))
def test_div_round_reciprocal_matches_div_round(num, den):
    """For |num| <= 127*127*1024 and 1 <= den <= 127*1024 (the layer norm's x*gain*d over sum|x|),
    the reciprocal division equals arith.div_round."""
    got = int(div_round_reciprocal(num, den, (1 << 32) // den))
    assert got == int(div_round(np.int64(num), np.int64(den)))
    assert got == int(reciprocal_div([num], [den])[0])


@st.composite
def near_rounding_boundary(draw):
    """(num, den) with |num| within a few units of a rounding boundary k*den - den//2, the inputs
    where u * inv >> 32 falls one short of floor(u / den) and the correction step matters."""
    den = draw(st.integers(1, MAX_NORM_DEN))
    k = draw(st.integers(0, (MAX_NORM_NUM + den // 2) // den))
    mag = k * den - den // 2 + draw(st.integers(-3, 3))
    mag = min(max(mag, 0), MAX_NORM_NUM)
    return (mag if draw(st.booleans()) else -mag), den


@settings(max_examples=400, deadline=None)
@given(near_rounding_boundary())
def test_div_round_reciprocal_matches_div_round_at_boundaries(case):
    """Within 3 of every rounding boundary (|num| <= 127*127*1024, den <= 127*1024) it equals div_round."""
    num, den = case
    assert int(div_round_reciprocal(num, den, (1 << 32) // den)) == int(div_round(np.int64(num), np.int64(den)))


def test_div_round_reciprocal_edge_cases():
    """den = 1, 2, 3, 127*1024; num = 0, +-(k*den +- den//2 (+-1)) around the rounding boundaries and
    +-127*127*1024 (range: |num| <= 127*127*1024, 1 <= den <= 127*1024) all equal arith.div_round."""
    cases = []
    for den in (1, 2, 3, 4, 5, 7, 127, 128, 1024, 65535, 65536, 65537, MAX_NORM_DEN - 1, MAX_NORM_DEN):
        for k in (0, 1, 2, 3, 100, MAX_NORM_NUM // den - 1, MAX_NORM_NUM // den):
            for delta in (-den // 2 - 1, -den // 2, -(den // 2) + 1, -1, 0, 1, den // 2 - 1, den // 2,
                          den // 2 + 1):
                v = k * den + delta
                if abs(v) <= MAX_NORM_NUM:
                    cases += [(v, den), (-v, den)]
        cases += [(MAX_NORM_NUM, den), (-MAX_NORM_NUM, den), (0, den)]
    num, den = np.array(cases, np.int64).T
    assert np.array_equal(reciprocal_div(num, den), div_round(num, den))
    # hand-checked values: halves round away from zero, below halves toward it
    assert list(reciprocal_div([0, 1, -1, 3, -3, 5, -5, 4, -4], 2)) == [0, 1, -1, 2, -2, 3, -3, 2, -2]
    assert list(reciprocal_div([7, -7, MAX_NORM_NUM, -MAX_NORM_NUM], 1)) == [7, -7, MAX_NORM_NUM, -MAX_NORM_NUM]
    assert list(reciprocal_div([4, 5, -4, -5], 3)) == [1, 2, -1, -2]
    assert reciprocal_div([MAX_NORM_NUM], [MAX_NORM_DEN])[0] == 127  # 16516096 / 130048 = 127 exactly


def test_div_round_reciprocal_every_denominator_near_max_numerator():
    """For every den in 1 .. 127*1024, the largest numerators and the rounding boundaries below them
    (where the reciprocal estimate is most often one short) equal arith.div_round."""
    den = np.arange(1, MAX_NORM_DEN + 1, dtype=np.int64)
    top = MAX_NORM_NUM // den * den  # largest multiple of den <= the max numerator
    nums = [np.full_like(den, MAX_NORM_NUM), np.full_like(den, MAX_NORM_NUM - 1)]
    for base in (top, top - den):
        for delta in (-1, 0, 1):
            nums.append(base + den // 2 + delta)
            nums.append(base - den + den // 2 + delta)
    num = np.clip(np.concatenate(nums), 0, MAX_NORM_NUM)
    d = np.tile(den, len(nums))
    for sign in (1, -1):
        assert np.array_equal(reciprocal_div(sign * num, d), div_round(sign * num, d))
    # the correction step is exercised: the raw estimate u * inv >> 32 is one short for many of these
    u = num + d // 2
    assert np.count_nonzero(((u * ((1 << 32) // d)) >> 32) != u // d) > 1000


# --- the whole Numba backend on each kernel the host does not select -----------------------------

KERNEL_SCRIPT = r"""
import numpy as np
from intlm import model
from intlm.backends import get
from intlm.backends.numba import gemm as cpu_gemm
from intlm.config import Config
from conftest import random_params

nb = get("numba")
print("kernel=" + cpu_gemm.KERNEL, flush=True)
assert cpu_gemm.dot4 is cpu_gemm._dot4_generic
cfg = Config(width=16, layers=2, mlp_ratio=2, population=6, rank=2, window=5, sigma_shift=2,
             fitness="rank", momentum_shift=0, seed=11).check()
rng = np.random.default_rng(3)
params = random_params(cfg, rng)
noise = model.make_noise(cfg, 5)
tokens = rng.integers(0, 256, (cfg.pairs, cfg.window + 1)).astype(np.uint8)
state = rng.integers(-127, 128, (cfg.population, cfg.layers, cfg.width)).astype(np.int8)
a, b = state.copy(), state.copy()
f_ref = model.population_fitness(params, cfg, noise, tokens, a)
f_nb = nb.population_fitness(params, cfg, noise, tokens, b)
assert f_nb.dtype == np.int32 and np.array_equal(f_ref, f_nb), (f_ref, f_nb)
assert np.array_equal(a, b) and not np.array_equal(a, state)
assert len(set(f_ref.tolist())) > 2, f_ref
tokens = rng.integers(0, 256, (5, cfg.window + 2)).astype(np.uint8)
state = rng.integers(-127, 128, (5, cfg.layers, cfg.width)).astype(np.int8)
a, b = state.copy(), state.copy()
ll_ref = model.forward(params, cfg, tokens, a)
ll_nb = nb.forward(params, cfg, tokens, b)
assert ll_nb.shape == ll_ref.shape == (5, cfg.window + 1)
assert np.array_equal(ll_ref, ll_nb), (ll_ref, ll_nb)
assert np.array_equal(a, b)
print("numba == numpy", flush=True)
"""


@pytest.mark.parametrize("kind", ["generic", "avx2"])
def test_numba_backend_on_each_kernel_matches_numpy(kind, tmp_path):
    """With INTLM_CPU_KERNEL=generic or avx2 (fresh Numba cache), population_fitness and forward equal
    NumPy (the host's own kernel is what every other Numba test runs, so it is not run again here)."""
    if kind == cpu_gemm.KERNEL:
        pytest.skip(f"{kind} is this host's own kernel, which every other Numba test runs")
    env = {**os.environ, "INTLM_CPU_KERNEL": kind, "NUMBA_CACHE_DIR": str(tmp_path / "numba-cache"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), str(REPO / "tests"), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", KERNEL_SCRIPT], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.split("\n")
    assert f"kernel={kind}" in lines, done.stdout
    assert "numba == numpy" in lines, done.stdout
