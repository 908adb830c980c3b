// update.cu: the EGGROLL update of es.py: the sums Z over the pairs, and the thresholded +-1 steps
// with momentum.
//
// update_sums_matrix (es.update_sums for a matrix tensor, exact):
//   Z[blk, i, j] = sum_{p < pairs} sum_{k < rank} f_p * A_{p,blk,i,k} * B_{p,blk,j,k}       (int64)
// over the terms q = p * rank + k in order, summed in int32 within each run of UPDATE_CHUNK terms
// (config's "update partial sum" bound) and the runs added in int64 (the "update sum Z" bound).
// A and B come from the tensor's noise stream buffer (pairs, blocks, (m + n) * rank) as noise.cu
// writes it. Geometry (geometry.update_grid): 256 threads (16 x 16) a block, a block owns a 32 x 32 tile
// of Z and thread (ty, tx) its outputs (2ty + a, 2tx + b), a, b in {0, 1}; grid = (ceil(n / 32),
// ceil(m / 32), blocks); the terms pass through shared memory 32 at a time (32 divides UPDATE_CHUNK).
//
// update_sums_vector (es.update_sums for a vector tensor): Z[i] = sum_p f_p * e_{p, i} (int64),
// e the noise buffer (pairs, size). Geometry (geometry.grid_stride): 256 threads, grid-stride over size.
//
// update_step_m32 / update_step_m64 / update_step (es.update for one tensor, flat; momentum int32,
// int64 (es.momentum_dtype) or none):
//   with momentum (k > 0): M = M - sign(M) * (|M| >> k) + Z; v = M.  Without: v = Z.
//   move = sign(v) if moving and |v| > thr else 0;  param = clip8(param + move);  M -= move * thr
//   moved += |move| (the count es.update returns; moving = any(f), thr from es.thresholds);
//   common.cuh's step_weight, which context.cu's sparse step shares.
// Geometry (geometry.grid_stride): 256 threads, grid-stride over the tensor's size.
#include "common.cuh"

#define UPD_TILE 32

extern "C" __global__ void __launch_bounds__(256)
update_sums_matrix(const i8* __restrict__ noise, int pairs, int blocks, int m, int n, int rank,
                   const int* __restrict__ f, i64* __restrict__ z) {
    __shared__ int sa[UPD_TILE][UPD_TILE + 1];
    __shared__ int sb[UPD_TILE][UPD_TILE + 1];
    const int blk = blockIdx.z;
    const int i0 = blockIdx.y * UPD_TILE, j0 = blockIdx.x * UPD_TILE;
    const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
    const i64 count = (i64)(m + n) * rank;
    const i64 terms = (i64)pairs * rank;
    int part[2][2] = {{0, 0}, {0, 0}};
    i64 total[2][2] = {{0, 0}, {0, 0}};
    for (i64 q0 = 0; q0 < terms; q0 += UPD_TILE) {
        for (int e = threadIdx.x; e < UPD_TILE * UPD_TILE; e += 256) {
            const int qq = e / UPD_TILE, c = e % UPD_TILE;
            const i64 q = q0 + qq;
            int av = 0, bv = 0;
            if (q < terms) {
                const i64 p = q / rank;
                const int k = (int)(q % rank);
                const i8* stream = noise + (p * blocks + blk) * count;
                if (i0 + c < m) av = f[p] * (int)stream[(i64)(i0 + c) * rank + k];
                if (j0 + c < n) bv = stream[(i64)m * rank + (i64)(j0 + c) * rank + k];
            }
            sa[qq][c] = av;
            sb[qq][c] = bv;
        }
        __syncthreads();
#pragma unroll 8
        for (int qq = 0; qq < UPD_TILE; ++qq) {
            const int a0 = sa[qq][2 * ty], a1 = sa[qq][2 * ty + 1];
            const int b0 = sb[qq][2 * tx], b1 = sb[qq][2 * tx + 1];
            part[0][0] += a0 * b0;
            part[0][1] += a0 * b1;
            part[1][0] += a1 * b0;
            part[1][1] += a1 * b1;
        }
        __syncthreads();
        if ((q0 + UPD_TILE) % INTLM_UPDATE_CHUNK == 0) {  // a run of UPDATE_CHUNK terms is complete
            for (int a = 0; a < 2; ++a)
                for (int b = 0; b < 2; ++b) { total[a][b] += part[a][b]; part[a][b] = 0; }
        }
    }
    for (int a = 0; a < 2; ++a)
        for (int b = 0; b < 2; ++b) {
            const int i = i0 + 2 * ty + a, j = j0 + 2 * tx + b;
            if (i < m && j < n) z[((i64)blk * m + i) * n + j] = total[a][b] + part[a][b];
        }
}

extern "C" __global__ void update_sums_vector(const i8* __restrict__ noise, int pairs, i64 size,
                                              const int* __restrict__ f, i64* __restrict__ z) {
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < size; i += (i64)gridDim.x * blockDim.x) {
        i64 total = 0;
        for (int p = 0; p < pairs; ++p) total += (i64)f[p] * (i64)noise[(i64)p * size + i];
        z[i] = total;
    }
}

#define INTLM_UPDATE_STEP(NAME, MT)                                                                        \
    extern "C" __global__ void NAME(i8* __restrict__ param, const i64* __restrict__ z, MT* __restrict__ mom, \
                                    i64 size, int k, i64 thr, int moving, u64* __restrict__ moved) {       \
        const i64 stride = (i64)gridDim.x * blockDim.x;                                                    \
        /* every lane of a warp runs the same number of rounds, so count_moves sees the whole warp */      \
        const i64 rounds = (size + stride - 1) / stride;                                                   \
        for (i64 round = 0; round < rounds; ++round) {                                                     \
            const i64 i = round * stride + (i64)blockIdx.x * blockDim.x + threadIdx.x;                     \
            count_moves(i < size && step_weight(param, mom, i, z[i], k, moving, thr) != 0, moved);         \
        }                                                                                                  \
    }

INTLM_UPDATE_STEP(update_step_m32, int)
INTLM_UPDATE_STEP(update_step_m64, i64)
INTLM_UPDATE_STEP(update_step, i64)  // no momentum: called with k = 0 and mom unused (may be null)
