// norm.cu: the row-wise steps that end in a layer norm: the embedding of a byte (with the document
// reset) followed by the first layer's norm, and the MLP's residual followed by the next norm.
//
// embed_norm (model.read_byte's first lines, model.Members.embed, model.layer_norm):
//   if byte == 0: state[row, :, :] = 0                         (a 0 byte starts a document)
//   x[row, j] = clip8(embed[byte, j] + s * rshift_round(sum_k A_{p,byte,k} B_{p,j,k}, 4 + sigma))
//   with context tables (ctx_ld > 0): x[row, j] = clip8(x[row, j] + ctx[row, j]), ctx (rows, ctx_ld) the
//   members' table rows that context.cu's context_read summed (context.add_rows; the first d entries)
//   a[row, j] = layer_norm(x[row], norm[0, 0] perturbed)[j]
// residual_norm (the MLP's residual, then the norm before the next layer's GRU or the head):
//   x[row, j] = clip8(x[row, j] + clip8(y[row, j]));  a[row] = layer_norm(x[row], gain perturbed)
// layer_norm is common.cuh's layer_norm_row: clip8(div_round(x * gain * d, max(sum |x|, 1))).
// Row ``row`` reads token row row >> tshift (tshift 1: the two members of a pair read one row).
//
// Launch geometry (geometry.row_grid): one warp per row, 4 rows (128 threads) a block,
// grid = ceil(rows / 4); lane l handles columns l, l + 32, ... of its row.
#include "common.cuh"

#define ROWS_PER_BLOCK 4

extern "C" __global__ void embed_norm(const u8* __restrict__ tokens, int token_len, int tshift, int t,
                                      const i8* __restrict__ embed, const i8* __restrict__ embed_noise,
                                      int rank, int sigma, int perturbed, i8* __restrict__ state, int layers,
                                      int d, const i8* __restrict__ gain, const i8* __restrict__ gain_noise,
                                      int gain_blocks, int gain_blk, const int* __restrict__ ctx, int ctx_ld,
                                      i8* __restrict__ x, i8* __restrict__ a, int rows) {
    const i64 row = (i64)blockIdx.x * ROWS_PER_BLOCK + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= rows) return;  // warp-uniform
    const int byte = tokens[(row >> tshift) * token_len + t];
    if (byte == 0)
        for (int j = lane; j < layers * d; j += 32) state[row * layers * d + j] = 0;
    const int s = member_sign(perturbed, (int)(row & 1));
    const i64 pair = row >> 1;
    const i64 count = (i64)(256 + d) * rank;  // the embedding is (256, d): A is (256, r), B (d, r)
    const i8* an = embed_noise + pair * count + (i64)byte * rank;
    const i8* bn = embed_noise + pair * count + (i64)256 * rank;
    i8* xr = x + row * d;
    int total = 0;
    for (int j = lane; j < d; j += 32) {
        int v = embed[byte * d + j];
        if (s != 0) {
            int pert = 0;
            for (int k = 0; k < rank; ++k) pert += (int)an[k] * (int)bn[j * rank + k];
            v = clip8(v + s * rshift_round(pert, 4 + sigma));
        }
        if (ctx_ld) v = clip8(v + ctx[row * ctx_ld + j]);
        xr[j] = (i8)v;
        total += abs(v);
    }
    total = warp_sum(total);
    layer_norm_row(xr, d, total, gain, gain_noise, gain_blocks, gain_blk, (int)pair, s, sigma, a + row * d, lane);
}

extern "C" __global__ void residual_norm(const int* __restrict__ y, int sigma, int perturbed, int d,
                                         const i8* __restrict__ gain, const i8* __restrict__ gain_noise,
                                         int gain_blocks, int gain_blk, i8* __restrict__ x, i8* __restrict__ a,
                                         int rows) {
    const i64 row = (i64)blockIdx.x * ROWS_PER_BLOCK + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= rows) return;
    const int s = member_sign(perturbed, (int)(row & 1));
    i8* xr = x + row * d;
    int total = 0;
    for (int j = lane; j < d; j += 32) {
        const int v = clip8((int)xr[j] + clip8(y[row * d + j]));
        xr[j] = (i8)v;
        total += abs(v);
    }
    total = warp_sum(total);
    layer_norm_row(xr, d, total, gain, gain_noise, gain_blocks, gain_blk, (int)(row >> 1), s, sigma, a + row * d,
                   lane);
}
