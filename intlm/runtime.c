/* intlm runtime: samples a model written by `intlm export`, with integer arithmetic only.
 *
 * One C99 file, nothing beyond the C standard library, and no floating-point type anywhere: on every
 * chip that adds and multiplies integers it writes exactly the bytes `intlm sample --raw` writes for
 * the same model, prompt, seed, temperature and top-k. Build and run (-O3: the compiler vectorises
 * the integer loops where it can):
 *
 *     cc -std=c99 -O3 -o intlm-run runtime.c
 *     ./intlm-run model.intlm --prompt "ROMEO." --length 300 [--temperature T] [--top-k K] [--seed S]
 *     ./intlm-run model.intlm --check   # recomputes the 32 bytes intlm sampled at export: run it on a new target
 *
 * `-Wall -Werror -mgeneral-regs-only` (x86-64 and AArch64 GCC: no floating-point or SIMD register may
 * be used) compiles it too. With -DINTLM_NO_MAIN it is a library without files or stdio (for a
 * microcontroller, the model file linked in as a byte array): intlm_load, intlm_work_bytes,
 * intlm_start, intlm_read_byte, intlm_sampler, intlm_choose.
 *
 * Every operation is the Python reference's (intlm/model.py, context.py, sample.py, noise.py,
 * arith.py), in the same order with the same rounding: shifts round half up, divisions round half
 * away from zero on magnitudes, every sum saturates to [-127, 127] where the reference clips.
 */

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define INTLM_MAGIC "INTLMRT"       /* 8 bytes with its NUL */
#define INTLM_VERSION 1u
#define INTLM_PREFIX 48u            /* magic, version, header size, SHA-256 */
#define INTLM_FIXED 180u            /* + config, tensor count, step, checkpoint hash, check bytes */
#define INTLM_ENTRY 56u             /* one tensor directory entry */
#define INTLM_CHECK 32              /* bytes sampled at export, for --check */
#define VOCAB 256
#define GATE_BIAS 127
#define MAX_ORDER 8

/* ---- integer arithmetic (arith.py) ---------------------------------------------------------- */

static int32_t clip8(int32_t x) { return x < -127 ? -127 : (x > 127 ? 127 : x); }

/* floor(x / 2**s) for any sign (C leaves >> of a negative number to the implementation) */
static int32_t floor_shift(int32_t x, int s)
{
    return x >= 0 ? (int32_t)((uint32_t)x >> s) : -(int32_t)((uint32_t)(-(x + 1)) >> s) - 1;
}

/* x / 2**s rounded half up */
static int32_t rshift_round(int32_t x, int s) { return s ? floor_shift(x + (1 << (s - 1)), s) : x; }

/* num / den rounded half away from zero, den > 0 */
static int32_t div_round(int32_t num, int32_t den)
{
    int32_t mag = ((num < 0 ? -num : num) + den / 2) / den;
    return num < 0 ? -mag : mag;
}

/* the shift that rescales an n-term int8 dot product: 4 + the smallest k with n <= 2 * 4**k */
static int matmul_shift(uint32_t n)
{
    int k = 0;
    while (2u * (1u << (2 * k)) < n) k++;
    return 4 + k;
}

/* ---- counter hash (noise.py) ---------------------------------------------------------------- */

#define GOLDEN 0x9E3779B97F4A7C15u
#define SEED_SALT 0x5851F42D4C957F2Du
#define SAMPLE_TENSOR 0xFFFFFFFEu /* sample.SAMPLE_TENSOR */

static uint64_t mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
    return z ^ (z >> 31);
}


/* ---- SHA-256 (FIPS 180-4) ------------------------------------------------------------------- */

typedef struct { uint32_t h[8]; uint8_t block[64]; size_t used; uint64_t bytes; } Sha256;

static const uint32_t SHA_K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

static uint32_t ror(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

static void sha256_block(Sha256 *s, const uint8_t *p)
{
    uint32_t w[64], v[8], t1, t2;
    int i;
    for (i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (i = 16; i < 64; i++)
        w[i] = w[i - 16] + (ror(w[i - 15], 7) ^ ror(w[i - 15], 18) ^ (w[i - 15] >> 3)) + w[i - 7]
             + (ror(w[i - 2], 17) ^ ror(w[i - 2], 19) ^ (w[i - 2] >> 10));
    memcpy(v, s->h, sizeof v);
    for (i = 0; i < 64; i++) {
        t1 = v[7] + (ror(v[4], 6) ^ ror(v[4], 11) ^ ror(v[4], 25)) + ((v[4] & v[5]) ^ (~v[4] & v[6])) + SHA_K[i] + w[i];
        t2 = (ror(v[0], 2) ^ ror(v[0], 13) ^ ror(v[0], 22)) + ((v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]));
        memmove(v + 1, v, 7 * sizeof v[0]);
        v[4] += t1;
        v[0] = t1 + t2;
    }
    for (i = 0; i < 8; i++) s->h[i] += v[i];
}

static void sha256_init(Sha256 *s)
{
    static const uint32_t h0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->h, h0, sizeof h0);
    s->used = 0;
    s->bytes = 0;
}

static void sha256_add(Sha256 *s, const uint8_t *p, size_t n)
{
    s->bytes += n;
    while (n) {
        size_t take = 64 - s->used < n ? 64 - s->used : n;
        if (s->used == 0 && n >= 64) {
            sha256_block(s, p);
            take = 64;
        } else {
            memcpy(s->block + s->used, p, take);
            s->used += take;
            if (s->used == 64) {
                sha256_block(s, s->block);
                s->used = 0;
            }
        }
        p += take;
        n -= take;
    }
}

static void sha256_end(Sha256 *s, uint8_t out[32])
{
    uint64_t bits = s->bytes * 8;
    uint8_t pad[72] = {0x80};
    size_t n = (s->used < 56 ? 56 : 120) - s->used;
    int i;
    for (i = 0; i < 8; i++) pad[n + i] = (uint8_t)(bits >> (56 - 8 * i));
    sha256_add(s, pad, n + 8);
    for (i = 0; i < 32; i++) out[i] = (uint8_t)(s->h[i / 4] >> (24 - 8 * (i % 4)));
}

/* ---- the model file (export.py) ------------------------------------------------------------- */

enum { EMBED, GRU, GRU_BIAS, NORM, UP, DOWN, OUT_NORM, HEAD, HEAD_BIAS, CONTEXT, EXP2_NEG, TENSORS };
static const char *const TENSOR_NAMES[TENSORS] = {"embed", "gru", "gru_bias", "norm", "up", "down", "out_norm",
                                                  "head", "head_bias", "context", "exp2_neg"};

typedef struct {
    uint32_t width, layers, hidden;
    uint32_t context_bits, context_order, row; /* context tables (bits 0: none), the width of their rows */
    uint32_t context_logits;                   /* 1: a row's last 256 entries add to the logits */
    uint64_t step;
    char checkpoint_hash[65];
    uint8_t check[INTLM_CHECK];
    const int8_t *t[TENSORS]; /* pointers into the file's bytes (t[CONTEXT] NULL without tables) */
    int32_t exp2_neg[VOCAB];
} IntlmModel;

static uint32_t le32(const uint8_t *p) { return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t le64(const uint8_t *p) { return le32(p) | (uint64_t)le32(p + 4) << 32; }

/* Reads the model file's n bytes at data (kept, not copied: they must outlive the model). Returns
 * NULL, or what is wrong with the file. */
const char *intlm_load(IntlmModel *m, const uint8_t *data, size_t n)
{
    uint8_t digest[32];
    uint32_t header, count, i, k;
    Sha256 s;

    if (n < 8 || memcmp(data, INTLM_MAGIC, 8) != 0) return "is not an intlm model file (intlm export writes one)";
    if (n < INTLM_PREFIX) return "is truncated";
    if (le32(data + 8) != INTLM_VERSION) return "has a format version this runtime does not read (export it again)";
    sha256_init(&s);
    sha256_add(&s, data, 16);
    sha256_add(&s, data + INTLM_PREFIX, n - INTLM_PREFIX);
    sha256_end(&s, digest);
    if (memcmp(digest, data + 16, 32) != 0) return "is damaged or truncated (content hash mismatch)";
    header = le32(data + 12);
    if (n < INTLM_FIXED || header < INTLM_FIXED || header > n) return "has a damaged header";
    m->width = le32(data + 48);
    m->layers = le32(data + 52);
    m->hidden = le32(data + 56) * m->width;
    m->context_bits = le32(data + 60);
    m->context_order = le32(data + 64);
    m->context_logits = le32(data + 68);
    m->row = m->width + (m->context_logits ? VOCAB : 0);
    count = le32(data + 72);
    m->step = le64(data + 76);
    memcpy(m->checkpoint_hash, data + 84, 64);
    m->checkpoint_hash[64] = 0;
    memcpy(m->check, data + 148, INTLM_CHECK);
    /* the shapes config.Config.check allows */
    if (m->width < 16 || m->width > 1024 || m->width % 16 || m->layers < 1 || m->layers > 64
        || le32(data + 56) < 1 || le32(data + 56) > 8
        || (m->context_bits ? m->context_bits < 8 || m->context_bits > 20 || m->context_order < 2
                                  || m->context_order > MAX_ORDER || m->context_logits > 1
                            : m->context_order != 0 || m->context_logits != 0))
        return "has a model shape this runtime does not know";
    if (count != (m->context_bits ? TENSORS : TENSORS - 1) || header < INTLM_FIXED + INTLM_ENTRY * (uint64_t)count)
        return "has a damaged tensor directory";
    {
        const uint64_t d = m->width, h = m->hidden, L = m->layers;
        const uint64_t want[TENSORS][4] = {
            {VOCAB, d, 1, 1}, {L, 4, d, d}, {L, 2, d, 1}, {L, 2, d, 1}, {L, h, d, 1}, {L, d, h, 1},
            {d, 1, 1, 1}, {VOCAB, d, 1, 1}, {VOCAB, 1, 1, 1},
            {m->context_order - 1, (uint64_t)1 << m->context_bits, m->row, 1}, {VOCAB, 1, 1, 1}};
        const uint32_t ndim[TENSORS] = {2, 4, 3, 3, 3, 3, 1, 2, 1, 3, 1};
        m->t[CONTEXT] = NULL;
        for (i = 0; i < TENSORS; i++) {
            const uint8_t *e;
            uint64_t size = i == EXP2_NEG ? 4 : 1, offset, bytes;
            uint32_t slot = i;
            if (i == CONTEXT && !m->context_bits) continue;
            if (i == EXP2_NEG && !m->context_bits) slot = CONTEXT;
            e = data + INTLM_FIXED + INTLM_ENTRY * slot;
            for (k = 0; k < 4; k++) size *= want[i][k];
            offset = le64(e + 40);
            bytes = le64(e + 48);
            if (strncmp((const char *)e, TENSOR_NAMES[i], 16) != 0 || le32(e + 16) != (i == EXP2_NEG ? 4u : 1u)
                || le32(e + 20) != ndim[i] || bytes != size)
                return "does not match its config (a tensor's name, type or shape)";
            for (k = 0; k < 4; k++)
                if (le32(e + 24 + 4 * k) != want[i][k]) return "does not match its config (a tensor's shape)";
            if (offset < header || offset > n || bytes > n - offset) return "has a damaged tensor directory";
            m->t[i] = (const int8_t *)(data + offset);
        }
    }
    for (i = 0; i < VOCAB; i++) { /* weights of at most 2**16, the best byte's above 0: sums fit, draws land */
        m->exp2_neg[i] = (int32_t)le32((const uint8_t *)m->t[EXP2_NEG] + 4 * i);
        if (m->exp2_neg[i] < (i == 0) || m->exp2_neg[i] > 65536) return "has a damaged sampler table";
    }
    return NULL;
}

/* ---- the forward (model.read_byte, without perturbations) ----------------------------------- */

typedef struct {
    const IntlmModel *m;
    int8_t *h;                  /* each layer's GRU state: layers x width */
    uint8_t before[MAX_ORDER];  /* the bytes read before, most recent first (context tables) */
    int32_t *x, *acc, *acc2;    /* width, max(hidden, 256), width */
    int32_t *rows;              /* the sum of the context tables' rows read for the byte (row width) */
    int8_t *a, *reset, *gamma_f, *hid;
} IntlmState;

/* bytes of working memory intlm_start needs for this model */
size_t intlm_work_bytes(const IntlmModel *m)
{
    size_t d = m->width, big = m->hidden > VOCAB ? m->hidden : VOCAB;
    return sizeof(int32_t) * (2 * d + big + m->row) + m->layers * d + 3 * d + big;
}

/* A state at a document start, its buffers in work (intlm_work_bytes(m) bytes, int32-aligned). */
void intlm_start(IntlmState *s, const IntlmModel *m, void *work)
{
    size_t d = m->width, big = m->hidden > VOCAB ? m->hidden : VOCAB;
    s->m = m;
    s->x = (int32_t *)work;
    s->acc2 = s->x + d;
    s->acc = s->acc2 + d;
    s->rows = s->acc + big;
    s->h = (int8_t *)(s->rows + m->row);
    s->a = s->h + m->layers * d;
    s->reset = s->a + d;
    s->gamma_f = s->reset + d;
    s->hid = s->gamma_f + d;
    memset(s->h, 0, m->layers * d);
    memset(s->before, 0, sizeof s->before);
}

/* out[i] = rshift_round(w[i] . x, shift) for a (rows, cols) int8 matrix */
static void linear(const int8_t *w, uint32_t rows, uint32_t cols, const int8_t *x, int32_t *out)
{
    const int shift = matmul_shift(cols);
    uint32_t i, j;
    for (i = 0; i < rows; i++, w += cols) {
        int32_t acc = 0;
        for (j = 0; j < cols; j++) acc += w[j] * x[j];
        out[i] = rshift_round(acc, shift);
    }
}

/* a = clip8(x * gain * d / max(sum |x|, 1)), rounded half away from zero */
static void layer_norm(const int32_t *x, const int8_t *gain, uint32_t d, int8_t *a)
{
    int32_t total = 0;
    uint32_t i;
    for (i = 0; i < d; i++) total += x[i] < 0 ? -x[i] : x[i];
    if (total < 1) total = 1;
    for (i = 0; i < d; i++) a[i] = (int8_t)clip8(div_round(x[i] * gain[i] * (int32_t)d, total));
}

/* context.row_index: the row of the order-n table for the byte and the bytes before it */
static uint32_t context_row(const uint8_t *bytes, uint32_t order, uint32_t bits)
{
    uint64_t key = 0;
    uint32_t i;
    for (i = 0; i < order; i++) key |= (uint64_t)bytes[i] << (8 * i);
    return (uint32_t)(mix(key + order * GOLDEN) >> (64 - bits));
}

/* The model reads one byte: the state moves on, logits (1/16 bits) of the next byte come out. */
void intlm_read_byte(IntlmState *s, uint8_t byte, int32_t logits[VOCAB])
{
    const IntlmModel *m = s->m;
    const uint32_t d = m->width, hd = m->hidden;
    int32_t *x = s->x, *acc = s->acc, *acc2 = s->acc2;
    uint32_t i, l;

    if (byte == 0) { /* a document starts: forget the one before */
        memset(s->h, 0, m->layers * d);
        memset(s->before, 0, sizeof s->before);
    }
    for (i = 0; i < d; i++) x[i] = m->t[EMBED][byte * d + i];
    if (m->context_bits) { /* x = clip8(embed + the rows of the tables for the last 2 .. N bytes) */
        uint8_t bytes[MAX_ORDER];
        uint32_t n;
        bytes[0] = byte;
        memcpy(bytes + 1, s->before, MAX_ORDER - 1);
        for (i = 0; i < m->row; i++) s->rows[i] = 0;
        for (n = 2; n <= m->context_order; n++) {
            const int8_t *row = m->t[CONTEXT]
                + (((size_t)(n - 2) << m->context_bits) + context_row(bytes, n, m->context_bits)) * m->row;
            for (i = 0; i < m->row; i++) s->rows[i] += row[i];
        }
        for (i = 0; i < d; i++) x[i] = clip8(x[i] + s->rows[i]);
        memmove(s->before + 1, s->before, MAX_ORDER - 1);
        s->before[0] = byte;
    }
    for (l = 0; l < m->layers; l++) {
        const int8_t *gru = m->t[GRU] + (size_t)l * 4 * d * d, *bias = m->t[GRU_BIAS] + l * 2 * d;
        const int8_t *norm = m->t[NORM] + l * 2 * d;
        int8_t *h = s->h + l * d;
        /* single-gate GRU: f = clip8(W_f a + U_f h + b_f), gate gamma = f + 127 in 1/256 */
        layer_norm(x, norm, d, s->a);
        linear(gru, d, d, s->a, acc);
        linear(gru + d * d, d, d, h, acc2);
        for (i = 0; i < d; i++) {
            int32_t gamma = clip8(acc[i] + acc2[i] + bias[i]) + GATE_BIAS;
            s->gamma_f[i] = (int8_t)(gamma - 128); /* 0..254 kept in an int8 */
            s->reset[i] = (int8_t)rshift_round(gamma * h[i], 8);
        }
        linear(gru + 2 * d * d, d, d, s->a, acc);
        linear(gru + 3 * d * d, d, d, s->reset, acc2);
        for (i = 0; i < d; i++) {
            int32_t gamma = s->gamma_f[i] + 128, cand = clip8(acc[i] + acc2[i] + bias[d + i]);
            h[i] = (int8_t)clip8(h[i] + rshift_round(gamma * (cand - h[i]), 8));
            x[i] = clip8(x[i] + h[i]);
        }
        /* MLP: x = clip8(x + clip8(down relu(clip8(up norm(x))))) */
        layer_norm(x, norm + d, d, s->a);
        linear(m->t[UP] + (size_t)l * hd * d, hd, d, s->a, acc);
        for (i = 0; i < hd; i++) s->hid[i] = (int8_t)(acc[i] > 0 ? clip8(acc[i]) : 0);
        linear(m->t[DOWN] + (size_t)l * d * hd, d, hd, s->hid, acc);
        for (i = 0; i < d; i++) x[i] = clip8(x[i] + clip8(acc[i]));
    }
    layer_norm(x, m->t[OUT_NORM], d, s->a);
    linear(m->t[HEAD], VOCAB, d, s->a, acc);
    for (i = 0; i < VOCAB; i++) /* with context logits, plus the rows' last 256 entries */
        logits[i] = clip8(acc[i] + m->t[HEAD_BIAS][i] + (m->context_logits ? s->rows[d + i] : 0));
}

/* ---- the sampler (sample.choose) ------------------------------------------------------------ */

typedef struct {
    uint32_t temperature_q4, kept; /* temperature in 1/16 (0: greedy); the likeliest `kept` bytes */
    uint64_t key;                  /* the stream of draws (noise.stream_key(seed, SAMPLE_TENSOR, 0, 0)) */
    uint32_t weight[2 * 127 + 1];  /* a byte g/16 bits below the best weighs exp2_neg[g * 16 / T], 0 past it */
} IntlmSampler;

/* The sampler of `intlm sample --temperature T --top-k K --seed S`, T in 1/16 (0: greedy), K 0: all. */
void intlm_sampler(IntlmSampler *s, const IntlmModel *m, uint32_t temperature_q4, uint64_t top_k, uint64_t seed)
{
    uint32_t g;
    uint64_t k = mix(seed ^ SEED_SALT);
    k = mix(k ^ SAMPLE_TENSOR);
    k = mix(k ^ 0); /* step */
    s->key = mix(k ^ 0); /* pair */
    s->temperature_q4 = temperature_q4;
    s->kept = top_k > 0 && top_k < VOCAB ? (uint32_t)top_k : VOCAB;
    for (g = 0; temperature_q4 && g <= 2 * 127; g++) {
        uint32_t gap = g * 16 / temperature_q4;
        s->weight[g] = gap < VOCAB ? (uint32_t)m->exp2_neg[gap] : 0;
    }
}

/* The byte drawn for these logits (clipped to [-127, 127]) at `position` of the sampler's draws:
 * bytes ranked best first, ties by value, the byte where the cumulative weight of the ranked bytes
 * first exceeds the draw r = (32-bit draw * total) >> 32. */
uint8_t intlm_choose(const IntlmSampler *s, const int32_t logits[VOCAB], uint64_t position)
{
    uint16_t start[VOCAB + 1]; /* small: this runs on microcontrollers' stacks */
    uint8_t order[VOCAB];
    uint32_t i;
    uint64_t total = 0, cumulative = 0, r;
    int32_t best;

    memset(start, 0, sizeof start); /* a stable counting sort on 127 - logit */
    for (i = 0; i < VOCAB; i++) start[127 - logits[i] + 1]++;
    for (i = 1; i <= VOCAB; i++) start[i] += start[i - 1];
    for (i = 0; i < VOCAB; i++) order[start[127 - logits[i]]++] = (uint8_t)i;
    best = logits[order[0]];
    if (s->temperature_q4 == 0) return order[0];
    for (i = 0; i < s->kept; i++) total += s->weight[best - logits[order[i]]];
    /* the draw (< 2**32) times the total (<= 2**24) fits 64 bits */
    r = ((mix(s->key ^ mix(position + GOLDEN)) >> 32) * total) >> 32;
    for (i = 0; (cumulative += s->weight[best - logits[order[i]]]) <= r; i++) continue;
    return order[i];
}

#ifndef INTLM_NO_MAIN
/* ---- numbers on the command line, as Python's int() and float() read them ------------------- */

/* The digits of a number: optional sign, digits with single underscores between them (PEP 515),
 * an optional fraction and (decimals only) exponent, ASCII whitespace around. Keeps the first
 * MAX_DIGITS significant digits (sticky: whether a non-zero digit was dropped) and the power of ten
 * of the last one kept. Returns 0 for text that is not such a number. */
#define MAX_DIGITS 800
typedef struct { int negative, sticky; int count; long exponent; char digit[MAX_DIGITS]; } Decimal;

static int is_space(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }
static int is_digit(char c) { return c >= '0' && c <= '9'; }

/* digits with single underscores between them, into d (fraction: each lowers the exponent) */
static const char *digit_run(const char *p, Decimal *d, int fraction)
{
    if (!is_digit(*p)) return NULL;
    for (;;) {
        if (d->count || *p != '0') {
            if (d->count < MAX_DIGITS) d->digit[d->count++] = *p;
            else {
                d->sticky |= *p != '0';
                d->exponent++;
            }
        }
        if (fraction) d->exponent--;
        p++;
        if (*p == '_' && is_digit(p[1])) p++;
        else if (!is_digit(*p)) return p;
    }
}

static int parse_number(const char *p, Decimal *d, int decimal)
{
    memset(d, 0, sizeof *d);
    while (is_space(*p)) p++;
    if (*p == '+' || *p == '-') d->negative = *p++ == '-';
    if (decimal && *p == '.') {
        if (!(p = digit_run(p + 1, d, 1))) return 0;
    } else {
        if (!(p = digit_run(p, d, 0))) return 0;
        if (decimal && *p == '.' && is_digit(p[1]) && !(p = digit_run(p + 1, d, 1))) return 0;
        else if (decimal && *p == '.') p++;
    }
    if (decimal && (*p == 'e' || *p == 'E')) {
        int negative = 0;
        long e = 0;
        p++;
        if (*p == '+' || *p == '-') negative = *p++ == '-';
        if (!is_digit(*p)) return 0;
        for (;;) {
            if (e < 100000000) e = e * 10 + (*p - '0');
            p++;
            if (*p == '_' && is_digit(p[1])) p++;
            else if (!is_digit(*p)) break;
        }
        d->exponent += negative ? -e : e;
    }
    while (is_space(*p)) p++;
    while (!d->sticky && d->count && d->digit[d->count - 1] == '0') { /* the digits kept end in a non-zero one */
        d->count--;
        d->exponent++;
    }
    return *p == 0;
}

/* an int option: Python int() of the text, at most `max` (larger: saturated to max when saturate,
 * refused otherwise); negative refused. Returns 0 when refused. */
static int parse_uint(const char *text, uint64_t max, int saturate, uint64_t *out)
{
    Decimal d;
    uint64_t v = 0;
    int i;
    if (!parse_number(text, &d, 0)) return 0;
    if (d.count == 0) return *out = 0, 1;
    if (d.negative) return 0;
    for (i = 0; i < d.count + d.exponent; i++) {
        unsigned digit = i < d.count ? (unsigned)(d.digit[i] - '0') : 0;
        if (d.sticky || v > (max - digit) / 10) {
            if (!saturate) return 0;
            v = max;
            break;
        }
        v = v * 10 + digit;
    }
    *out = v;
    return 1;
}

/* Unsigned big integers, enough for the comparisons below: 2**-1075 against 800 digits at 10**-1130. */
#define LIMBS 256
typedef struct { int n; uint32_t w[LIMBS]; } Big;

static void big_mul_add(Big *b, uint32_t mul, uint32_t add)
{
    uint64_t carry = add;
    int i;
    for (i = 0; i < b->n; i++) {
        carry += (uint64_t)b->w[i] * mul;
        b->w[i] = (uint32_t)carry;
        carry >>= 32;
    }
    if (carry) b->w[b->n++] = (uint32_t)carry;
}

static void big_pow10(Big *b, long e)
{
    for (; e >= 9; e -= 9) big_mul_add(b, 1000000000u, 0);
    for (; e > 0; e--) big_mul_add(b, 10, 0);
}

static void big_shl(Big *b, long bits)
{
    for (; bits >= 16; bits -= 16) big_mul_add(b, 1u << 16, 0);
    if (bits > 0) big_mul_add(b, 1u << bits, 0);
}

static int big_cmp(const Big *a, const Big *b)
{
    int i, na = a->n, nb = b->n;
    while (na && !a->w[na - 1]) na--;
    while (nb && !b->w[nb - 1]) nb--;
    if (na != nb) return na < nb ? -1 : 1;
    for (i = na - 1; i >= 0; i--)
        if (a->w[i] != b->w[i]) return a->w[i] < b->w[i] ? -1 : 1;
    return 0;
}

/* the sign of |d| - mant * 2**p, exactly (mant < 2**64) */
static int cmp_dyadic(const Decimal *d, uint64_t mant, long p)
{
    Big a = {0, {0}}, b = {0, {0}};
    int i, c;
    for (i = 0; i < d->count; i++) big_mul_add(&a, 10, (uint32_t)(d->digit[i] - '0'));
    b.w[0] = (uint32_t)mant;
    b.w[1] = (uint32_t)(mant >> 32);
    b.n = 2;
    big_pow10(d->exponent >= 0 ? &a : &b, d->exponent >= 0 ? d->exponent : -d->exponent);
    big_shl(p >= 0 ? &b : &a, p >= 0 ? p : -p);
    c = big_cmp(&a, &b);
    return d->sticky && c >= 0 ? 1 : (d->sticky ? -1 : c);
}

/* c_k = (2k + 1) / 32 = midpoint(k) * 2**midpoint_exponent(k), written with a 54-bit mantissa so
 * that +-1 is half of c_k's ulp: c_k lies in [2**e, 2**(e+1)) with e = bit length(2k + 1) - 6, its
 * ulp is 2**(e - 52), and (2k + 1) / 32 = ((2k + 1) << (48 - e)) * 2**(e - 53). */
static int32_t midpoint_e(int32_t k)
{
    int32_t e = -5;
    while ((2 * k + 1) >> (e + 6)) e++;
    return e;
}
static uint64_t midpoint(int32_t k) { return (uint64_t)(2 * k + 1) << (48 - midpoint_e(k)); }
static long midpoint_exponent(int32_t k) { return midpoint_e(k) - 53; }

/* The temperature in 1/16 as `intlm sample` has it: round(float(text) * 16), the nearest double
 * rounded half to even and then the product rounded half to even, decided by exact comparisons
 * with the midpoints between doubles. Returns -1 when Python's float() refuses the text or the
 * value is outside [0, 64] (-0.0 included, as in Python). */
static int32_t parse_temperature(const char *text)
{
    Decimal d;
    int32_t lo = 0, hi = 1024;
    long magnitude;
    if (!parse_number(text, &d, 1)) return -1;
    if (d.count == 0) return 0;
    magnitude = d.count + d.exponent; /* 10**(magnitude - 1) <= |t| < 10**magnitude */
    if (magnitude > 3) return -1;
    if (magnitude < -330) return 0; /* below 2**-1075: the double is (-)0 */
    if (d.negative) return cmp_dyadic(&d, 1, -1075) <= 0 ? 0 : -1;
    if (cmp_dyadic(&d, ((uint64_t)1 << 53) + 1, -47) > 0) return -1; /* the double is above 64 */
    /* q = the number of midpoints c_k = (2k + 1) / 32 (k < 1024) that the double lies above; the
     * double is above c_k when t is above c_k + ulp(c_k) / 2 (c_k's mantissa is even: ties go to it) */
    while (lo < hi) {
        int32_t k = (lo + hi) / 2;
        if (cmp_dyadic(&d, midpoint(k) + 1, midpoint_exponent(k)) > 0) lo = k + 1;
        else hi = k;
    }
    /* the double may be c_lo itself (t at most half an ulp below it; 2 lo + 1 > 1 is no power of two),
     * a tie that rounds half to even: up from an odd lo */
    if (lo < 1024 && lo % 2 && cmp_dyadic(&d, midpoint(lo) - 1, midpoint_exponent(lo)) >= 0) lo++;
    return lo;
}

/* ---- the program ---------------------------------------------------------------------------- */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

static const char USAGE[] =
    "usage: intlm-run MODEL_FILE [--prompt TEXT] [--length N] [--temperature T] [--top-k K] [--seed S]\n"
    "                 [--raw] [--check]\n"
    "Writes the prompt and N bytes sampled from a model written by `intlm export`, exactly the bytes\n"
    "`intlm sample --raw` writes with the same options (defaults: length 400, temperature 1.0 with\n"
    "0 greedy, top-k 0 for all bytes, seed 0). The output is always raw; --raw is accepted for the\n"
    "same command line. --check: recompute the bytes intlm sampled when it exported the model.\n";

static int fail(const char *what, const char *detail)
{
    fprintf(stderr, "error: %s%s\n", what, detail ? detail : "");
    return 2;
}

/* the whole file at path, or NULL (errno set) */
static uint8_t *read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    uint8_t *data = NULL, *more;
    size_t cap = 0, got;
    *n = 0;
    if (!f) return NULL;
    for (;;) {
        if (*n == cap) {
            cap = cap ? 2 * cap : 1 << 16;
            if (!(more = (uint8_t *)realloc(data, cap))) break;
            data = more;
        }
        got = fread(data + *n, 1, cap - *n, f);
        *n += got;
        if (got == 0) {
            if (ferror(f)) break;
            fclose(f);
            return data ? data : (uint8_t *)malloc(1);
        }
    }
    free(data);
    fclose(f);
    if (!errno) errno = EIO;
    return NULL;
}

int main(int argc, char **argv)
{
    static const char *const names[] = {"--prompt", "--length", "--temperature", "--top-k", "--seed"};
    const char *value[5] = {"", "400", "1.0", "0", "0"}, *path = NULL;
    const char *prompt;
    uint64_t length, top_k, seed, i;
    int32_t temperature, logits[VOCAB];
    int check = 0, options_end = 0, a, k;
    size_t size;
    uint8_t *data;
    void *work;
    IntlmModel model;
    IntlmState state;
    IntlmSampler sampler;
    const char *problem;

    for (a = 1; a < argc; a++) { /* as click reads them: --name VALUE or --name=VALUE, the last wins */
        const char *arg = argv[a];
        size_t len = strcspn(arg, "=");
        if (options_end || arg[0] != '-' || !arg[1]) {
            if (path) return fail("one model file, got a second: ", arg);
            path = arg;
        } else if (!strcmp(arg, "--")) {
            options_end = 1;
        } else if (!strcmp(arg, "-h") || !strcmp(arg, "--help")) {
            return fputs(USAGE, stdout), 0;
        } else if (!strcmp(arg, "--check")) {
            check = 1;
        } else if (strcmp(arg, "--raw") != 0) {
            for (k = 0; k < 5 && (strlen(names[k]) != len || strncmp(arg, names[k], len) != 0); k++) continue;
            if (k == 5) return fail("no such option: ", arg);
            if (arg[len] == '=') value[k] = arg + len + 1;
            else if (a + 1 < argc) value[k] = argv[++a];
            else return fail(names[k], " needs a value");
        }
    }
    if (!path) return fail("missing the model file (intlm-run --help)", NULL);
    prompt = value[0];
    if (!parse_uint(value[1], UINT64_MAX, 1, &length)) return fail("--length must be an integer >= 0, got ", value[1]);
    if ((temperature = parse_temperature(value[2])) < 0)
        return fail("--temperature must be a number between 0 and 64, got ", value[2]);
    if (!parse_uint(value[3], UINT64_MAX, 1, &top_k)) return fail("--top-k must be an integer >= 0, got ", value[3]);
    if (!parse_uint(value[4], ((uint64_t)1 << 63) - 1, 0, &seed))
        return fail("--seed must be an integer in [0, 2**63), got ", value[4]);

    errno = 0;
    if (!(data = read_file(path, &size))) {
        fprintf(stderr, "error: cannot read model file %s: %s\n", path, strerror(errno));
        return 2;
    }
    if ((problem = intlm_load(&model, data, size)) != NULL) {
        fprintf(stderr, "error: model file %s %s\n", path, problem);
        return 2;
    }
    if (!(work = malloc(intlm_work_bytes(&model)))) return fail("out of memory", NULL);
    intlm_start(&state, &model, work);
    if (check) { /* the export's sample: no prompt, seed 0, temperature 1, all bytes */
        uint8_t got[INTLM_CHECK];
        intlm_sampler(&sampler, &model, 16, 0, 0);
        intlm_read_byte(&state, 0, logits);
        for (k = 0; k < INTLM_CHECK; k++) {
            got[k] = intlm_choose(&sampler, logits, (uint64_t)k);
            intlm_read_byte(&state, got[k], logits);
        }
        if (memcmp(got, model.check, INTLM_CHECK) != 0)
            return fail("this runtime does not reproduce the bytes intlm sampled from ", path);
        printf("%s: reproduces the %d bytes intlm sampled at export (checkpoint step %lu, %.12s...)\n", path,
               INTLM_CHECK, (unsigned long)model.step, model.checkpoint_hash);
        return 0;
    }
    intlm_sampler(&sampler, &model, (uint32_t)temperature, top_k, seed);
    fputs(prompt, stdout);
    intlm_read_byte(&state, 0, logits);
    for (; *prompt; prompt++) intlm_read_byte(&state, (uint8_t)*prompt, logits);
    for (i = 0; i < length; i++) {
        uint8_t b = intlm_choose(&sampler, logits, i);
        putchar(b);
        if (i + 1 < length) intlm_read_byte(&state, b, logits);
    }
    if (fflush(stdout) != 0 || ferror(stdout)) return fail("cannot write the output", NULL);
    free(work);
    free(data);
    return 0;
}
#endif
