// noise.cu: the perturbation noise of a range of pairs for one tensor, from the counter hash.
//
// noise_streams computes out[q, b, i] = noise.stream(noise.stream_key(seed, tensor_ids[b], step, p0 + q),
// count, mult, start)[i] for q < pairs, b < blocks, i < count: the int8 streams that model.make_noise
// stacks (pair axis first, start 0) before split_streams shapes them into (A, B) or e, and a context
// table's B (context.make_noise: start = rows * rank, after A's rows, which are never made whole).
// Bit for bit as noise.mix, noise.stream_key and noise.gaussian_from_hash (common.cuh's stream_key and
// stream_value). No table: every value is a pure function of its indices.
//
// stream_keys computes keys[q, b] = noise.stream_key(seed, tensor_ids[b], step, p0 + q): the keys of
// context.make_noise, from which a table row's A is hashed when a window reads it (context.cu).
//
// Launch geometry (geometry.grid_stride): 1-D, 256 threads a block, a grid-stride loop over the
// total = pairs * blocks * count elements (pairs * blocks for stream_keys; int64 index),
// grid = min(ceil(total / 256), max_grid).
#include "common.cuh"

extern "C" __global__ void noise_streams(i8* __restrict__ out, u64 seed, const i64* __restrict__ tensor_ids,
                                         u64 step, i64 p0, int pairs, int blocks, int count, int mult, i64 start) {
    const i64 total = (i64)pairs * blocks * count;
    for (i64 idx = (i64)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += (i64)gridDim.x * blockDim.x) {
        const int i = (int)(idx % count);
        const i64 qb = idx / count;
        const int b = (int)(qb % blocks);
        const i64 q = qb / blocks;
        const u64 k = stream_key(seed, (u64)tensor_ids[b], step, (u64)(p0 + q));
        out[idx] = (i8)stream_value(k, (u64)(start + i), mult);
    }
}

extern "C" __global__ void stream_keys(u64* __restrict__ keys, u64 seed, const i64* __restrict__ tensor_ids,
                                       u64 step, i64 p0, int pairs, int blocks) {
    const i64 total = (i64)pairs * blocks;
    for (i64 idx = (i64)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += (i64)gridDim.x * blockDim.x)
        keys[idx] = stream_key(seed, (u64)tensor_ids[idx % blocks], step, (u64)(p0 + idx / blocks));
}
