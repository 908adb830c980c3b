// gru.cu: the elementwise GRU arithmetic of one layer (model.read_byte), between its matrix products.
//
// gru_gate (after W_f . a and U_f . h, both from linear.cu as int32 y1, y2):
//   gamma = clip8(y1 + y2 + b_f) + GATE_BIAS          (b_f: gru_bias[l, 0], perturbed per member)
//   gate[row, j] = gamma (0 .. 254, uint8);  reset[row, j] = rshift_round(gamma * h, 8)  (int8, U_h's input)
// gru_state_norm (after W_h . a and U_h . reset):
//   cand = clip8(y1 + y2 + b_h);  h' = clip8(h + rshift_round(gamma * (cand - h), 8))
//   state[row, l] = h';  x = clip8(x + h');  a = layer_norm(x, norm[l, 1] perturbed)   (the MLP's input)
// h is state[row, l, :] (int8, (rows, layers, d)). Vector noise buffers are (pairs, blocks, d) with
// blocks = 2 * layers for gru_bias and norm (block 2l + k), as noise.cu writes them.
//
// Launch geometry (geometry.row_grid): one warp per row, 4 rows (128 threads) a block,
// grid = ceil(rows / 4); lane l handles columns l, l + 32, ... of its row.
#include "common.cuh"

#define ROWS_PER_BLOCK 4

extern "C" __global__ void gru_gate(const int* __restrict__ y1, const int* __restrict__ y2,
                                    const i8* __restrict__ bias, const i8* __restrict__ bias_noise, int blocks,
                                    int blk, int sigma, int perturbed, const i8* __restrict__ state, int layers,
                                    int l, int d, u8* __restrict__ gate, i8* __restrict__ reset, int rows) {
    const i64 row = (i64)blockIdx.x * ROWS_PER_BLOCK + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= rows) return;
    const int s = member_sign(perturbed, (int)(row & 1));
    const int pair = (int)(row >> 1);
    const i8* h = state + (row * layers + l) * d;
    for (int j = lane; j < d; j += 32) {
        const i64 o = row * d + j;
        const int b = perturbed_vector(bias, bias_noise, blocks, blk, d, pair, s, sigma, j);
        const int gamma = clip8(y1[o] + y2[o] + b) + INTLM_GATE_BIAS;
        gate[o] = (u8)gamma;
        reset[o] = (i8)rshift_round(gamma * (int)h[j], 8);
    }
}

extern "C" __global__ void gru_state_norm(const int* __restrict__ y1, const int* __restrict__ y2,
                                          const i8* __restrict__ bias, const i8* __restrict__ bias_noise, int blocks,
                                          int blk, int sigma, int perturbed, i8* __restrict__ state, int layers,
                                          int l, int d, const u8* __restrict__ gate, i8* __restrict__ x,
                                          const i8* __restrict__ gain, const i8* __restrict__ gain_noise,
                                          int gain_blk, i8* __restrict__ a, int rows) {
    const i64 row = (i64)blockIdx.x * ROWS_PER_BLOCK + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= rows) return;
    const int s = member_sign(perturbed, (int)(row & 1));
    const int pair = (int)(row >> 1);
    i8* h = state + (row * layers + l) * d;
    i8* xr = x + row * d;
    int total = 0;
    for (int j = lane; j < d; j += 32) {
        const i64 o = row * d + j;
        const int b = perturbed_vector(bias, bias_noise, blocks, blk, d, pair, s, sigma, j);
        const int cand = clip8(y1[o] + y2[o] + b);
        const int hv = h[j];
        const int hn = clip8(hv + rshift_round((int)gate[o] * (cand - hv), 8));
        h[j] = (i8)hn;
        const int xv = clip8((int)xr[j] + hn);
        xr[j] = (i8)xv;
        total += abs(xv);
    }
    total = warp_sum(total);
    layer_norm_row(xr, d, total, gain, gain_noise, blocks, gain_blk, pair, s, sigma, a + row * d, lane);
}
