// context.cu: the context tables (intlm/context.py) on the GPU: the table read of the forward, the sparse
// update sums of the rows read, and the sparse thresholded step.
//
// Tables: (tables, 2**bits, w) int8, table i for the last i + 2 bytes (order i + 2), a row w entries long
// (params.tensors: the width d, and 256 more with context logits). A pair's noise of
// table i: stream key keys[pair, i] (noise.cu's stream_keys) and B = b[pair, i] (w, rank) int8 (noise.cu's
// noise_streams from start 2**bits * rank); A's row r is hashed when read: a_k = stream_value(key,
// r * rank + k) (context.factor_a). The bytes before a byte live in the state's extra row (the last
// of its state_rows rows), most recent first, as stored (signed) bytes (context.history_slots).
//
// context_read (model.read_byte's table read, context.add_rows: history, member_rows, step_history):
//   hist = the byte, then the bytes before (all 0 when the byte is 0: a document starts)
//   r_i = context.row_index(hist, i + 2, bits)
//   ctx[row, j] = sum_i clip8(T[i, r_i, j] + s * rshift_round(sum_k a_k B[pair, i, j, k], 4 + sigma)), j < w
//   with mirrors (``mirror``, context.mirrors: perturbed, context logits) also the logit entries with the
//   perturbation negated, ctx[row, w + j - d] = sum_i clip8(T[i, r_i, j] - s * rshift_round(...)), d <= j < w
//   (ctx rows then 2w - d long, else w); then the bytes before move back one slot and the byte enters
//   first (as a signed byte).
// norm.cu's embed_norm adds ctx[row, :d] to the embedding (x = clip8(embed row + ctx)), loglik.cu's
// head_loglik ctx[row, d:w] to the logits (context logits: w = d + 256), and ctx[row, w:] to the
// mirror's. Row ``row`` reads token row row >> tshift; s = +1 / -1 for even / odd rows, 0 unperturbed
// (the noise is then not read).
//
// context_rows (context.rows_read): for each stream q, the rows of every table its window reads,
//   reads[q, t, i] = r_i at byte t of tokens[q] (the resets and shifts of context_read, from the bytes
//   before[q] (tables,) stored bytes), and after[q] = the bytes before once the window is read (int64).
//
// context_credit (context.credit): for each pair p and table i, c[p, t, i, part] at the first read t of
// each row in the pair's window (0 at a repeated read: a pair counts a row once): window credit f[p] for
// every part; reads credit (by_reads 1) sign(sum of local[p, 0, t:]) for the input entries (part 0) and,
// with context logits, sign(sum of local[p, local_parts - 1, u] over the bytes u that read the row) for
// the logit entries; local (pairs, local_parts, window): one difference per byte for both parts, or with
// mirrors (local_parts 2) each part its own (context.credit_parts). graded credit (by_reads 2) the same
// sums graded (context.graded_scales): sign(x) * min(levels, round(levels * |x| / scale)), scale =
// graded_unit of the part's differences for a logit sum, times isqrt(window - t) for an input sum.
//
// context_sums (context.update_sums' Z and S, exact): for each entry (p, t, i) of reads (pairs, window,
// tables) with a nonzero credit (c, parts columns):
//   Z[place, j] += c[p, t, i, part of j] * sum_k a_k B[p, i, j, k];   S[place, part] += c[p, t, i, part]^2
// (part of j: 0 for j < d, the input entries, parts - 1 after).
// place = slot[i * 2**bits + r], the row's place in the ascending list of (table, row) read (the
// backend lists them). The adds are int64 atomics: integer addition is exact and order-free, so the
// sums are the reference's bit for bit in any order of the threads.
//
// context_step_m32 / context_step_m64 / context_step (context.update, momentum int32, int64 or none):
// for each listed row (read[place] = (table, row)) and column j, common.cuh's step_weight with the
// threshold thr[place, part of j] of the entry's part (context.thresholds, computed on the host in exact
// integers; -1 for a part with S = 0, which is left as it is): the momentum decays once per read (only
// listed rows are touched), +-1 steps, the threshold spent.
//
// Launch geometry: context_read: one warp per row, 4 a block (geometry.row_grid); context_sums: a warp
// per entry of reads, 4 warps a block, in a grid-stride loop (geometry.warp_stride); lane l handles
// columns l, l + 32, ... < w; context_rows (a thread per stream), context_credit (a thread per pair and
// table) and the steps (over places * w): 256 threads a block, a grid-stride loop (geometry.grid_stride).
#include "common.cuh"

#define ROWS_PER_BLOCK 4
#define CTX_MAX_RANK 16

// The bytes before, packed: slot i of the extra row (the byte i + 1 before) at bits 8i .. 8i + 7.
__device__ __forceinline__ u64 pack_slots(const i8* slots, int tables) {
    u64 before = 0;
    for (int i = 0; i < tables; ++i) before |= (u64)(u8)slots[i] << (8 * i);
    return before;
}

// context.history, packed: the byte being read at bits 0..7, then the bytes before; all 0 when the
// byte is 0 (a document starts: the forward's reset forgets them).
__device__ __forceinline__ u64 history(u64 before, int byte) { return byte == 0 ? 0 : (before << 8) | (u64)byte; }

// context.step_history: the bytes before the next byte are the first ``tables`` bytes of the history.
__device__ __forceinline__ u64 step_history(u64 hist, int tables) { return hist & ((1ULL << (8 * tables)) - 1); }

// context.row_index for table i (order i + 2): the top ``bits`` bits of mix(key + order * GOLDEN),
// the key the last ``order`` bytes of the packed history.
__device__ __forceinline__ i64 table_row(u64 hist, int i, int bits) {
    const int order = i + 2;
    const u64 key = order == 8 ? hist : hist & ((1ULL << (8 * order)) - 1);
    return (i64)(mix64(key + (u64)order * INTLM_GOLDEN) >> (64 - bits));
}

// context.factor_a of row r for one pair's table stream, into a[0 .. rank) (lanes 0 .. rank - 1 hash,
// the warp then reads them all).
__device__ __forceinline__ void factor_a(int* a, u64 key, i64 r, int rank, int mult, int lane) {
    if (lane < rank) a[lane] = stream_value(key, (u64)r * rank + lane, mult);
    __syncwarp();
}

// sum_k a_k * B[j, k] for one column of a pair's table B (w, rank).
__device__ __forceinline__ int factor_dot(const int* a, const i8* b, int j, int rank) {
    int total = 0;
    for (int k = 0; k < rank; ++k) total += a[k] * (int)b[j * rank + k];
    return total;
}

extern "C" __global__ void __launch_bounds__(32 * ROWS_PER_BLOCK)
context_read(const u8* __restrict__ tokens, int token_len, int tshift, int t, const i8* __restrict__ table,
             int tables, int bits, int w, const u64* __restrict__ keys, const i8* __restrict__ b, int rank, int mult,
             int sigma, int perturbed, int mirror, i8* __restrict__ state, int state_rows, int d, int* __restrict__ ctx,
             int rows) {
    __shared__ int a[ROWS_PER_BLOCK][CTX_MAX_RANK];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const i64 row = (i64)blockIdx.x * ROWS_PER_BLOCK + warp;
    if (row >= rows) return;  // warp-uniform
    const int byte = tokens[(row >> tshift) * token_len + t];
    i8* slots = state + (row * state_rows + state_rows - 1) * d;
    const u64 hist = history(pack_slots(slots, tables), byte);
    const int s = member_sign(perturbed, (int)(row & 1));
    const int ld = mirror ? 2 * w - d : w;
    int* out = ctx + row * ld;
    for (int i = 0; i < tables; ++i) {
        const i64 r = table_row(hist, i, bits);
        const i8* weights = table + (((i64)i << bits) + r) * w;
        const i64 stream = (row >> 1) * tables + i;
        if (s != 0) factor_a(a[warp], keys[stream], r, rank, mult, lane);
        for (int j = lane; j < w; j += 32) {
            int v = weights[j], q = 0;
            if (s != 0) {
                q = s * rshift_round(factor_dot(a[warp], b + stream * w * rank, j, rank), 4 + sigma);
                v = clip8(v + q);
            }
            out[j] = (i == 0 ? 0 : out[j]) + v;
            // the mirror's logit entries: the same row, its perturbation negated (its input is the member's)
            if (mirror && j >= d) out[w + j - d] = (i == 0 ? 0 : out[w + j - d]) + clip8(weights[j] - q);
        }
        __syncwarp();  // every lane has read a (and, at i = 0, the slots) before they are rewritten
    }
    if (lane == 0) {  // the byte enters slot 0 as a signed byte (context.stored_byte), the others move back
        const u64 after = step_history(hist, tables);
        for (int i = 0; i < tables; ++i) slots[i] = (i8)(u8)(after >> (8 * i));
    }
}

extern "C" __global__ void context_rows(const u8* __restrict__ tokens, int token_len, const i8* __restrict__ before,
                                        int rows, int tables, int bits, i64* __restrict__ reads,
                                        i64* __restrict__ after) {
    const int window = token_len - 1;
    for (i64 q = (i64)blockIdx.x * blockDim.x + threadIdx.x; q < rows; q += (i64)gridDim.x * blockDim.x) {
        u64 prev = pack_slots(before + q * tables, tables);
        for (int t = 0; t < window; ++t) {
            const u64 hist = history(prev, tokens[q * token_len + t]);
            for (int i = 0; i < tables; ++i) reads[(q * window + t) * tables + i] = table_row(hist, i, bits);
            prev = step_history(hist, tables);
        }
        for (int i = 0; i < tables; ++i) after[q * tables + i] = (i8)(u8)(prev >> (8 * i));
    }
}

// arith.graded for one sum: sign(x) * min(levels, round(levels * |x| / scale)), half up; scale > 0.
__device__ __forceinline__ int graded(i64 x, i64 scale, int levels) {
    const i64 q = (2 * levels * (x < 0 ? -x : x) + scale) / (2 * scale);
    const int mag = q < levels ? (int)q : levels;
    return x < 0 ? -mag : mag;
}

// graded credit's scale of one byte's difference in d[0 .. window): span * max(1, sum |d| / window)
// (context.graded_scales' per-pair unit).
__device__ __forceinline__ i64 graded_unit(const int* d, int window, int span) {
    i64 total = 0;
    for (int t = 0; t < window; ++t) total += d[t] < 0 ? -(i64)d[t] : d[t];
    return span * (total / window > 1 ? total / window : 1);
}

extern "C" __global__ void context_credit(const i64* __restrict__ reads, int pairs, int window, int tables,
                                          const int* __restrict__ f, const int* __restrict__ local, int local_parts,
                                          int by_reads, int levels, int span, int parts, int* __restrict__ c) {
    for (i64 q = (i64)blockIdx.x * blockDim.x + threadIdx.x; q < (i64)pairs * tables; q += (i64)gridDim.x * blockDim.x) {
        const i64 p = q / tables;
        const int i = (int)(q - p * tables);
        const i64* r = reads + p * window * tables + i;  // r[t * tables]: the row byte t read
        // the pair's differences for the input entries and for the logit entries (read only by_reads)
        const i64 d = p * local_parts * window, d_logits = d + (i64)(local_parts - 1) * window;
        const i64 unit = by_reads == 2 ? graded_unit(local + d, window, span) : 0;
        const i64 unit_logits = by_reads == 2 ? graded_unit(local + d_logits, window, span) : 0;
        i64 after = 0;  // sum of local[p, 0, t:], built from the end
        i64 root = 0;  // isqrt(window - t)
        for (int t = window - 1; t >= 0; --t) {
            int* out = c + ((p * window + t) * tables + i) * parts;
            if (by_reads) after += local[d + t];
            while ((root + 1) * (root + 1) <= window - t) ++root;
            int first = 1;
            for (int u = 0; u < t && first; ++u) first = r[u * tables] != r[t * tables];
            for (int part = 0; part < parts; ++part) out[part] = 0;
            if (!first) continue;
            if (!by_reads) {
                for (int part = 0; part < parts; ++part) out[part] = f[p];
                continue;
            }
            out[0] = by_reads == 2 ? graded(after, unit * root, levels) : (after > 0) - (after < 0);
            if (parts > 1) {
                i64 at = 0;
                for (int u = t; u < window; ++u) at += r[u * tables] == r[t * tables] ? local[d_logits + u] : 0;
                out[1] = by_reads == 2 ? graded(at, unit_logits, levels) : (at > 0) - (at < 0);
            }
        }
    }
}

extern "C" __global__ void __launch_bounds__(32 * ROWS_PER_BLOCK)
context_sums(const i64* __restrict__ reads, int pairs, int window, int tables, const int* __restrict__ c, int parts,
             const u64* __restrict__ keys, const i8* __restrict__ b, int w, int d, int rank, int mult, int bits,
             const int* __restrict__ slot, i64* __restrict__ z, i64* __restrict__ s) {
    __shared__ int a[ROWS_PER_BLOCK][CTX_MAX_RANK];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const i64 total = (i64)pairs * window * tables;
    // the entries (p, t, i) of reads, a warp each in a grid-stride loop (everything warp-uniform up to the sums)
    for (i64 e = (i64)blockIdx.x * ROWS_PER_BLOCK + warp; e < total; e += (i64)gridDim.x * ROWS_PER_BLOCK) {
        const i64 p = e / ((i64)window * tables);
        const int i = (int)(e % tables);
        const int* ce = c + e * parts;
        int live = 0;
        for (int part = 0; part < parts; ++part) live |= ce[part] != 0;
        if (!live) continue;
        const i64 r = reads[e];
        const i64 place = slot[((i64)i << bits) + r];
        const i64 stream = p * tables + i;
        factor_a(a[warp], keys[stream], r, rank, mult, lane);
        for (int j = lane; j < w; j += 32)
            atomicAdd((u64*)(z + place * w + j),
                      (u64)((i64)ce[j < d ? 0 : parts - 1] * factor_dot(a[warp], b + stream * w * rank, j, rank)));
        if (lane < parts) atomicAdd((u64*)(s + place * parts + lane), (u64)((i64)ce[lane] * ce[lane]));
        __syncwarp();  // every lane has read a before the next entry's factor_a rewrites it
    }
}

#define INTLM_CONTEXT_STEP(NAME, MT)                                                                          \
    extern "C" __global__ void NAME(i8* __restrict__ param, MT* __restrict__ mom, const i64* __restrict__ read, \
                                    const i64* __restrict__ z, const i64* __restrict__ thr, int parts, i64 places, \
                                    int w, int d, int bits, int k, u64* __restrict__ moved) {                  \
        const i64 size = places * w, stride = (i64)gridDim.x * blockDim.x;                                    \
        /* every lane of a warp runs the same number of rounds, so count_moves sees the whole warp */         \
        const i64 rounds = (size + stride - 1) / stride;                                                      \
        for (i64 round = 0; round < rounds; ++round) {                                                        \
            const i64 e = round * stride + (i64)blockIdx.x * blockDim.x + threadIdx.x;                        \
            int mine = 0;                                                                                     \
            if (e < size) {                                                                                   \
                const i64 place = e / w;                                                                      \
                const int j = (int)(e % w);                                                                   \
                const i64 t = thr[place * parts + (j < d ? 0 : parts - 1)];                                   \
                const i64 i = ((read[2 * place] << bits) + read[2 * place + 1]) * w + j;                      \
                if (t >= 0) mine = step_weight(param, mom, i, z[e], k, 1, t) != 0;                            \
            }                                                                                                 \
            count_moves(mine, moved);                                                                         \
        }                                                                                                     \
    }

INTLM_CONTEXT_STEP(context_step_m32, int)
INTLM_CONTEXT_STEP(context_step_m64, i64)
INTLM_CONTEXT_STEP(context_step, i64)  // no momentum: called with k = 0 and mom unused
