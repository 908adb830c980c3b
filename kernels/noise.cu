// noise.cu: the perturbation noise of a range of pairs for one tensor, from the counter hash.
//
// Computes out[q, b, i] = noise.stream(noise.stream_key(seed, tensor_ids[b], step, p0 + q), count, mult)[i]
// for q < pairs, b < blocks, i < count: the int8 streams that model.make_noise stacks (pair axis
// first) before split_streams shapes them into (A, B) or e. Bit for bit as noise.mix,
// noise.stream_key and noise.gaussian_from_hash (sum of the 8 bytes of the hash, centred, scaled by
// mult/1024 with rounding symmetric about 0). No table: every value is a pure function of its indices.
//
// Launch geometry (geometry.grid_stride): 1-D, 256 threads a block, a grid-stride loop over the
// total = pairs * blocks * count elements (int64 index), grid = min(ceil(total / 256), max_grid).
#include "common.cuh"

extern "C" __global__ void noise_streams(i8* __restrict__ out, u64 seed, const i64* __restrict__ tensor_ids,
                                         u64 step, i64 p0, int pairs, int blocks, int count, int mult) {
    const i64 total = (i64)pairs * blocks * count;
    for (i64 idx = (i64)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += (i64)gridDim.x * blockDim.x) {
        const int i = (int)(idx % count);
        const i64 qb = idx / count;
        const int b = (int)(qb % blocks);
        const i64 q = qb / blocks;
        // noise.stream_key(seed, tensor, step, pair)
        u64 k = mix64(seed ^ INTLM_SEED_SALT);
        k = mix64(k ^ (u64)tensor_ids[b]);
        k = mix64(k ^ step);
        k = mix64(k ^ (u64)(p0 + q));
        const u64 h = mix64(k ^ mix64((u64)i + INTLM_GOLDEN));
        int c = 0;  // noise.gaussian_from_hash
        for (int byte = 0; byte < 8; ++byte) c += (int)((h >> (8 * byte)) & 255ULL);
        c -= 1020;
        const int mag = (abs(c) * mult + 512) >> 10;
        out[idx] = (i8)(c < 0 ? -mag : mag);
    }
}
