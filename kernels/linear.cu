// linear.cu: one matrix product of the population forward, the shared int8 product fused with each
// member's low-rank perturbation and the rescaling shift.
//
// Computes, for every batch row b < rows and output c < m (model.Members.linear, bit for bit):
//   acc   = x_b . W_c                                     (int8 x int8 -> int32, W is (m, n) row-major)
//   xb_k  = rshift_round(x_b . B_{p,k}, 4)               (k < rank; p = b >> 1, the row's pair)
//   low   = rshift_round(sum_k xb_k * A_{p,c,k}, sigma)
//   y     = rshift_round(acc + s_b * low, shift)         (s_b = +1 even rows, -1 odd, 0 unperturbed)
// x_b is row b of the input, x + b * ldx (ldx a multiple of 16: the state's rows are layers * d apart),
// and stores y as int32 (mode 0: the caller adds, clips) or as max(clip8(y), 0) int8 (mode 1: the
// MLP's ReLU, model.read_byte's `hid`). A and B are read from the tensor's noise stream buffer
// (pairs, blocks, (m + n) * rank) int8 as noise.cu writes it: A(p, c, k) at c * rank + k, B(p, j, k) at
// m * rank + j * rank + k of stream (p, blk). n and m are multiples of 8 and n of 16 (config.check:
// widths are multiples of 16); the K loop steps by 32 and zero-fills the last half step when n % 32 == 16.
//
// Launch geometry (geometry.linear_grid): 128 threads (4 warps) a block; a block owns a tile of
// 64 rows x 32 outputs: grid = (ceil(rows / 64), ceil(m / 32)). Shared memory: the tile's x.B terms,
// 64 x 16 int32, computed once per block (one warp reduction per (row, rank component)).
//   linear_mma:  warp w computes rows 16w .. 16w + 15 of the tile, 4 tensor-core tiles of 8 outputs,
//                with mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 (sm_80 and later); lane
//                (g = lane / 4, t = lane % 4) holds rows g, g + 8 and outputs 2t, 2t + 1 of each tile.
//   linear_dp4a: thread (w, lane) computes output lane of rows w, w + 4, ..., w + 60 with __dp4a
//                (same tile, same result; the reference path for checking the tensor-core one).
#include "common.cuh"

#define LIN_ROWS 64
#define LIN_COLS 32
#define LIN_THREADS 128
#define LIN_MAX_RANK 16

// The tile's xb terms: xb[rl][k] = rshift_round(x_{row0 + rl} . B_{pair,k}, 4), 0 past the rows.
__device__ __forceinline__ void tile_xb(int (*xb)[LIN_MAX_RANK], const i8* __restrict__ x, int ldx, int rows, int n,
                                        const i8* __restrict__ noise, int blocks, int blk, int m, int rank,
                                        i64 row0) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const i64 count = (i64)(m + n) * rank;
    for (int task = warp; task < LIN_ROWS * rank; task += LIN_THREADS / 32) {
        const int rl = task / rank, k = task % rank;
        const i64 row = row0 + rl;
        int total = 0;
        if (row < rows) {  // warp-uniform
            const i8* xr = x + row * ldx;
            const i8* b = noise + ((row >> 1) * blocks + blk) * count + (i64)m * rank + k;
            for (int j = lane; j < n; j += 32) total += (int)xr[j] * (int)b[(i64)j * rank];
            total = warp_sum(total);
        }
        if (lane == 0) xb[rl][k] = row < rows ? rshift_round(total, 4) : 0;
    }
}

// The fused epilogue of one output (row, c): the low-rank term, the final shift, the store.
__device__ __forceinline__ void linear_out(int acc, i64 row, int c, int rows, int m, int (*xb)[LIN_MAX_RANK],
                                           i64 row0, const i8* __restrict__ noise, int blocks, int blk, int n,
                                           int rank, int sigma, int perturbed, int shift, int mode,
                                           int* __restrict__ y32, i8* __restrict__ y8, int ldy) {
    if (row >= rows || c >= m) return;
    int v = acc;
    const int s = member_sign(perturbed, (int)(row & 1));
    if (s != 0) {
        const i64 count = (i64)(m + n) * rank;
        const i8* a = noise + ((row >> 1) * blocks + blk) * count + (i64)c * rank;
        const int rl = (int)(row - row0);
        int low = 0;
        for (int k = 0; k < rank; ++k) low += xb[rl][k] * (int)a[k];
        v += s * rshift_round(low, sigma);
    }
    v = rshift_round(v, shift);
    if (mode == 0) y32[row * ldy + c] = v;
    else y8[row * ldy + c] = (i8)max(clip8(v), 0);
}

// d += A . B on the int8 tensor cores: A 16 x 32 (row), B 32 x 8 (col), d 16 x 8 int32, fragments
// as the PTX ISA lays them out for m16n8k32 .s8 (see linear_mma's header). INTLM_EMULATE_MMA: the
// CPU emulation of the tests (tests/test_cuda_emulated.py) supplies intlm_emulate_mma instead.
__device__ __forceinline__ void mma_s8(int (&d)[4], int a0, int a1, int a2, int a3, int b0, int b1) {
#ifndef INTLM_EMULATE_MMA
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#else
    intlm_emulate_mma(d, a0, a1, a2, a3, b0, b1);
#endif
}

__device__ __forceinline__ int load4(const i8* p) { return *reinterpret_cast<const int*>(p); }

extern "C" __global__ void __launch_bounds__(LIN_THREADS)
linear_mma(const i8* __restrict__ x, int ldx, int rows, int n, const i8* __restrict__ w, int m,
           const i8* __restrict__ noise, int blocks, int blk, int rank, int sigma, int perturbed, int shift,
           int mode, int* __restrict__ y32, i8* __restrict__ y8, int ldy) {
    __shared__ int xb[LIN_ROWS][LIN_MAX_RANK];
    const i64 row0 = (i64)blockIdx.x * LIN_ROWS;
    const int col0 = blockIdx.y * LIN_COLS;
    if (perturbed) tile_xb(xb, x, ldx, rows, n, noise, blocks, blk, m, rank, row0);
    __syncthreads();
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int g = lane >> 2, t = lane & 3;
    const i64 r_lo = row0 + warp * 16 + g, r_hi = r_lo + 8;
    const bool lo_ok = r_lo < rows, hi_ok = r_hi < rows;
    int acc[4][4];
#pragma unroll
    for (int nt = 0; nt < 4; ++nt)
#pragma unroll
        for (int c = 0; c < 4; ++c) acc[nt][c] = 0;
    for (int k0 = 0; k0 < n; k0 += 32) {
        const bool second = k0 + 16 < n;  // n % 16 == 0: the last step may hold only 16 columns
        const int ka = k0 + 4 * t, kb = ka + 16;
        const int a0 = lo_ok ? load4(x + r_lo * ldx + ka) : 0;
        const int a1 = hi_ok ? load4(x + r_hi * ldx + ka) : 0;
        const int a2 = (lo_ok && second) ? load4(x + r_lo * ldx + kb) : 0;
        const int a3 = (hi_ok && second) ? load4(x + r_hi * ldx + kb) : 0;
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) {
            const int tile = col0 + nt * 8;
            if (tile >= m) break;  // warp-uniform; m % 8 == 0, so a tile is all in or all out
            const i8* wr = w + (i64)(tile + g) * n;
            const int b0 = load4(wr + ka);
            const int b1 = second ? load4(wr + kb) : 0;
            mma_s8(acc[nt], a0, a1, a2, a3, b0, b1);
        }
    }
#pragma unroll
    for (int nt = 0; nt < 4; ++nt)
#pragma unroll
        for (int c = 0; c < 4; ++c) {
            const i64 row = (c < 2) ? r_lo : r_hi;
            const int col = col0 + nt * 8 + 2 * t + (c & 1);
            linear_out(acc[nt][c], row, col, rows, m, xb, row0, noise, blocks, blk, n, rank, sigma, perturbed,
                       shift, mode, y32, y8, ldy);
        }
}

extern "C" __global__ void __launch_bounds__(LIN_THREADS)
linear_dp4a(const i8* __restrict__ x, int ldx, int rows, int n, const i8* __restrict__ w, int m,
            const i8* __restrict__ noise, int blocks, int blk, int rank, int sigma, int perturbed, int shift,
            int mode, int* __restrict__ y32, i8* __restrict__ y8, int ldy) {
    __shared__ int xb[LIN_ROWS][LIN_MAX_RANK];
    const i64 row0 = (i64)blockIdx.x * LIN_ROWS;
    const int col0 = blockIdx.y * LIN_COLS;
    if (perturbed) tile_xb(xb, x, ldx, rows, n, noise, blocks, blk, m, rank, row0);
    __syncthreads();
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int col = col0 + lane;
    if (col >= m) return;
    const i8* wr = w + (i64)col * n;
    for (int i = 0; i < LIN_ROWS / 4; ++i) {
        const i64 row = row0 + warp + 4 * i;
        if (row >= rows) break;
        const i8* xr = x + row * ldx;
        int acc = 0;
        for (int k = 0; k < n; k += 4) acc = __dp4a(load4(xr + k), load4(wr + k), acc);
        linear_out(acc, row, col, rows, m, xb, row0, noise, blocks, blk, n, rank, sigma, perturbed, shift, mode,
                   y32, y8, ldy);
    }
}
