// loglik.cu: the head's logits, their integer log-likelihood, and the fitness sum.
//
// Computes, for every row (model.read_byte's last line, then arith.log_likelihood, bit for bit):
//   z_v = clip8(y[row, v] + head_bias_v + c_v)    (v < 256; head_bias perturbed per member; c_v =
//        extra[row * extra_ld + v], the context tables' logits (context.add_rows), 0 when extra_ld is 0)
//   u_v = z_v - max_v z_v + 255;  S = sum_v EXP2[u_v]  (S < 2**31: arith's table bound)
//   e = floor(log2 S);  m = (S >> (e - mant_bits)) & (2**mant_bits - 1)
//   ll = 16 * u_target - ((e << 8) + LOG2_FRAC[m]) + (exp2_bits << 8)        (1/256-bit units)
// with the target tokens[row >> tshift, t + 1]; then fitness[row] += ll (population_fitness's window
// sum, int32 by config's "window log-likelihood" bound) when bit 0 of ``outputs`` is set, and
// ll_out[row, t] = ll (model.forward) when bit 1 is set; the other pointer is not touched. EXP2 and LOG2_FRAC are arith's tables, passed in.
// With context mirrors (context.mirrors) the backend launches it twice per byte, the second time with
// the mirrors' logit entries as extra and ll_out past the members' (rows of ll_len = 2T): fitness adds both.
//
// Launch geometry (geometry.row_grid): one warp per row, 4 rows (128 threads) a block,
// grid = ceil(rows / 4); lane l handles logits l, l + 32, ..., l + 224.
#include "common.cuh"

#define ROWS_PER_BLOCK 4

extern "C" __global__ void head_loglik(const int* __restrict__ y, const i8* __restrict__ bias,
                                       const i8* __restrict__ bias_noise, int sigma, int perturbed,
                                       const u8* __restrict__ tokens, int token_len, int tshift, int t,
                                       const int* __restrict__ exp2, const int* __restrict__ log2_frac,
                                       int exp2_bits, int mant_bits, int outputs, int* __restrict__ fitness,
                                       int* __restrict__ ll_out, int ll_len, const int* __restrict__ extra,
                                       int extra_ld, int rows) {
    const i64 row = (i64)blockIdx.x * ROWS_PER_BLOCK + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= rows) return;
    const int s = member_sign(perturbed, (int)(row & 1));
    const int pair = (int)(row >> 1);
    // two passes over the row's logits (recomputed, not kept in an array: a register array was
    // placed in local memory on sm_80)
    const int* yr = y + row * 256;
    const int* cr = extra + row * extra_ld;
    int top = -128;
    for (int v = lane; v < 256; v += 32)
        top = max(top, clip8(yr[v] + perturbed_vector(bias, bias_noise, 1, 0, 256, pair, s, sigma, v) +
                             (extra_ld ? cr[v] : 0)));
    top = warp_max(top);
    const int target = tokens[(row >> tshift) * token_len + t + 1];
    int total = 0, mine = 0;
    for (int v = lane; v < 256; v += 32) {
        const int z = clip8(yr[v] + perturbed_vector(bias, bias_noise, 1, 0, 256, pair, s, sigma, v) +
                            (extra_ld ? cr[v] : 0));
        total += exp2[z - top + 255];
        if (v == target) mine = z;
    }
    total = warp_sum(total);
    const int zt = __shfl_sync(0xffffffffu, mine, target & 31);
    if (lane == 0) {
        const int e = 31 - __clz(total);
        const int m = (total >> (e - mant_bits)) & ((1 << mant_bits) - 1);
        const int ll = 16 * (zt - top + 255) - ((e << 8) + log2_frac[m]) + (exp2_bits << 8);
        if (outputs & 1) fitness[row] += ll;
        if (outputs & 2) ll_out[row * ll_len + t] = ll;
    }
}
