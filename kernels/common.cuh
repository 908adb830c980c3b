// common.cuh: the scalar integer arithmetic of intlm/arith.py and intlm/noise.py, shared by every
// kernel in this folder. Each function names the Python it equals bit for bit.
//
// Conventions (arith.py): values are int8-range integers in [-127, 127]; products accumulate in int32
// (config.worst_case_bounds proves every int32 intermediate fits; the update's Z and momentum are
// int64). Right shifts of signed ints are arithmetic on every CUDA target.
#pragma once

typedef signed char i8;
typedef unsigned char u8;
typedef long long i64;
typedef unsigned long long u64;

// arith.rshift_round: x / 2**s rounded half up, (x + 2**(s-1)) >> s; s = 0 leaves x.
__device__ __forceinline__ int rshift_round(int x, int s) { return (x + ((1 << s) >> 1)) >> s; }

// arith.clip8: saturate to [-127, 127].
__device__ __forceinline__ int clip8(int x) { return min(max(x, -127), 127); }

// arith.div_round: num / den rounded half away from zero, den > 0, defined on the magnitude.
__device__ __forceinline__ int div_round(int num, int den) {
    int mag = (abs(num) + den / 2) / den;
    return num < 0 ? -mag : mag;
}

// noise.mix: the splitmix64 finaliser (wrapping 64-bit arithmetic).
__device__ __forceinline__ u64 mix64(u64 z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

#define INTLM_GOLDEN 0x9E3779B97F4A7C15ULL     // noise.GOLDEN
#define INTLM_SEED_SALT 0x5851F42D4C957F2DULL  // noise.SEED_SALT
#define INTLM_GATE_BIAS 127                    // model.GATE_BIAS
#define INTLM_UPDATE_CHUNK 32768               // config.UPDATE_CHUNK

// noise.stream_key(seed, tensor, step, pair): the key of one noise stream.
__device__ __forceinline__ u64 stream_key(u64 seed, u64 tensor, u64 step, u64 pair) {
    u64 k = mix64(seed ^ INTLM_SEED_SALT);
    k = mix64(k ^ tensor);
    k = mix64(k ^ step);
    return mix64(k ^ pair);
}

// noise.stream_at(key, i, mult): element i of the stream with this key, mix(key ^ mix(i + GOLDEN))
// made approximately Gaussian by noise.gaussian_from_hash (the 8 bytes summed, centred, scaled by
// mult / 1024 with rounding symmetric about 0).
__device__ __forceinline__ int stream_value(u64 key, u64 i, int mult) {
    const u64 h = mix64(key ^ mix64(i + INTLM_GOLDEN));
    int c = 0;
    for (int byte = 0; byte < 8; ++byte) c += (int)((h >> (8 * byte)) & 255ULL);
    c -= 1020;
    const int mag = (abs(c) * mult + 512) >> 10;
    return c < 0 ? -mag : mag;
}

// A population row of a batch: member ``row`` is pair row >> 1 of the noise range, sign +1 for even
// rows and -1 for odd (model.Members); perturbed == 0 means the unperturbed model (sign 0).
__device__ __forceinline__ int member_sign(int perturbed, int row) { return perturbed ? 1 - 2 * (row & 1) : 0; }

// model.Members.vector for one element: v[j] + s * (e[j] >> sigma), clipped; the noise of a vector
// tensor is its stream buffer (pairs, blocks, n) int8 (model.make_noise's layout before splitting),
// ``blk`` the block (the flat index of the leading axes), v the block's row of the parameter.
__device__ __forceinline__ int perturbed_vector(const i8* v, const i8* noise, int blocks, int blk, int n, int pair,
                                                int sign, int sigma, int j) {
    int x = v[j];
    if (sign == 0) return x;
    int e = noise[((i64)pair * blocks + blk) * n + j];
    return clip8(x + sign * rshift_round(e, sigma));
}

// Warp-wide integer sum (all 32 lanes take part).
__device__ __forceinline__ int warp_sum(int v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ int warp_max(int v) {
    for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// model.layer_norm of one row by one warp, given the row's sum of |x| (all lanes hold it):
// out[j] = clip8(div_round(x[j] * gain[j] * d, max(total, 1))), the gain perturbed per member.
__device__ __forceinline__ void layer_norm_row(const i8* x, int d, int total, const i8* gain, const i8* gain_noise,
                                               int gain_blocks, int gain_blk, int pair, int sign, int sigma,
                                               i8* out, int lane) {
    total = max(total, 1);
    for (int j = lane; j < d; j += 32) {
        int g = perturbed_vector(gain, gain_noise, gain_blocks, gain_blk, d, pair, sign, sigma, j);
        out[j] = (i8)clip8(div_round((int)x[j] * g * d, total));
    }
}

// es.update (a dense weight) and context.update (a weight of a table row read) for one weight i:
// with momentum (k > 0) the evidence is M - sign(M) * (|M| >> k) + z, else z; the weight moves by
// sign(evidence) when ``moving`` and |evidence| > thr (clip8); with momentum M = evidence - move * thr
// (the threshold spent). Returns the move.
template <typename MT>
__device__ __forceinline__ int step_weight(i8* param, MT* mom, i64 i, i64 z, int k, int moving, i64 thr) {
    i64 v = z;
    if (k) {
        const i64 mo = mom[i];
        const i64 decay = (mo < 0 ? -mo : mo) >> k;
        v += mo > 0 ? mo - decay : mo + decay;
    }
    const int move = (moving && (v > thr || v < -thr)) ? (v > 0 ? 1 : -1) : 0;
    param[i] = (i8)clip8((int)param[i] + move);
    if (k) mom[i] = (MT)(v - (i64)move * thr);
    return move;
}

// Adds the warp's count of moved weights to *moved (every lane of the warp takes part).
__device__ __forceinline__ void count_moves(int mine, u64* moved) {
    mine = warp_sum(mine);
    if ((threadIdx.x & 31) == 0 && mine) atomicAdd(moved, (u64)mine);
}
