/* 16-bit floating-point storage: bfloat16 and IEEE binary16 (float16) to and from float32,
 * round to nearest even or stochastic, and the counter-based random numbers stochastic
 * rounding uses.
 *
 * Every build (baseline, AVX2, AVX-512; GCC, Clang, MSVC) gives the same bits. The loops
 * are branch-free integer arithmetic and selects that GCC and Clang vectorise; where F16C
 * is available the round-to-nearest float16 conversions use it 8 at a time, and the
 * software conversions give F16C's bits, NaNs included:
 *   float32 -> float16: NaN -> sign | 0x7e00 | top 10 payload bits (quieted, truncated);
 *   float16 -> float32: NaN -> sign | 0x7fc00000 | payload << 13 (quieted).
 * (NumPy keeps a signalling NaN signalling; every other result equals NumPy's.)
 * The software float16 paths use one float32 add or subtract each, so they assume the
 * default rounding mode (round to nearest even) and SSE or NEON arithmetic (no x87 double
 * rounding); FTZ/DAZ cannot change their results.
 *
 * bfloat16 NaN (round to nearest and stochastic): sign and top payload bits kept, quieted:
 * (bits >> 16) | 0x0040.
 *
 * Stochastic rounding rounds x to its neighbour toward zero (lo) or away from zero (hi),
 * hi with probability (|x| - |lo|) / (|hi| - |lo|), exactly for the 16 (bfloat16) or 13
 * (float16 normal range) bits the rounding drops, and up to 2^-32 (rounding up) for the
 * float16 subnormal range (|x| < 2^-14). Exactly representable values never move. Above
 * the largest finite value the grid is continued by one step to 2^16 (float16) or 2^128
 * (bfloat16), which becomes inf: float16 65504 < |x| < 65536 rounds to inf with probability
 * (|x| - 65504) / 32, |x| >= 65536 and inf give inf.
 */
#ifndef FA_HALF_H
#define FA_HALF_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* MSVC's C compiler spells it __inline. */
#ifndef FA_INLINE
#  if defined(_MSC_VER) && !defined(__cplusplus)
#    define FA_INLINE __inline
#  else
#    define FA_INLINE inline
#  endif
#endif

#if defined(__F16C__) || (defined(_MSC_VER) && defined(__AVX2__))
#  include <immintrin.h>
#  define FA_HAVE_F16C 1
#endif

/* ---- counter-based random numbers ---------------------------------------------------- */

/* Chris Wellons' lowbias32: a 32-bit bijection with good avalanche. */
static FA_INLINE uint32_t fa_mix32(uint32_t x) {
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    return x;
}

/* The two 32-bit round keys of a 64-bit key. The second depends on all 64 bits: were it
 * the high half alone, keys differing only in the low half would give the same numbers at
 * indices xor-ed by the difference (key k^1 = key k with neighbours swapped). */
static FA_INLINE uint32_t fa_key0(uint64_t key) { return (uint32_t)key; }
static FA_INLINE uint32_t fa_key1(uint64_t key) {
    return (uint32_t)(key >> 32) ^ fa_mix32((uint32_t)key ^ 0x9e3779b9u);
}

/* The per-element part: 32-bit multiplies only, so it vectorises. */
static FA_INLINE uint32_t fa_random32_k(uint32_t k0, uint32_t k1, uint32_t lo, uint32_t hi) {
    return fa_mix32(fa_mix32(lo ^ k0) ^ k1 ^ hi);
}

/* 32 random bits for element `index` of the stream `key` (a stateless hash). */
static FA_INLINE uint32_t fa_random32(uint64_t key, uint64_t index) {
    return fa_random32_k(fa_key0(key), fa_key1(key), (uint32_t)index,
                         (uint32_t)(index >> 32));
}

/* splitmix64's output function and step. */
static FA_INLINE uint64_t fa_mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static FA_INLINE uint64_t fa_splitmix64(uint64_t z) {
    return fa_mix64(z + 0x9e3779b97f4a7c15ull);
}

/* The stochastic-rounding key of one tensor at one step: nearby seeds, steps and tensors
 * give unrelated keys. Called once per tensor per step. */
static FA_INLINE uint64_t fa_sr_key(uint64_t seed, uint64_t step, uint64_t tensor) {
    uint64_t z = fa_splitmix64(seed);
    z = fa_splitmix64(z ^ step);
    return fa_splitmix64(z ^ tensor);
}

/* ---- one element ------------------------------------------------------------------- */

static FA_INLINE uint32_t fa_f32_bits(float x) {
    uint32_t b;
    memcpy(&b, &x, sizeof b);
    return b;
}
static FA_INLINE float fa_bits_f32(uint32_t b) {
    float x;
    memcpy(&x, &b, sizeof x);
    return x;
}

static FA_INLINE uint32_t fa_min_u32(uint32_t a, uint32_t b) { return a < b ? a : b; }

/* c ? x : y as masks, for the selects around a float operation: GCC would otherwise move
 * the operation under a branch, which (as it may trap) it then cannot vectorise on SSE2. */
static FA_INLINE uint32_t fa_pick(int c, uint32_t x, uint32_t y) {
    uint32_t mask = 0u - (uint32_t)c;
    return (x & mask) | (y & ~mask);
}

static FA_INLINE uint16_t fa_bf16_rne_bits(uint32_t b) {
    uint32_t rounded = (b + 0x7fffu + ((b >> 16) & 1u)) >> 16;
    uint32_t nan = (b >> 16) | 0x40u;
    return (uint16_t)((b & 0x7fffffffu) > 0x7f800000u ? nan : rounded);
}

static FA_INLINE uint16_t fa_bf16_sr_bits(uint32_t b, uint32_t r) {
    uint32_t rounded = (b + (r & 0xffffu)) >> 16;   /* no carry out: b <= 0xff800000 */
    uint32_t nan = (b >> 16) | 0x40u;
    return (uint16_t)((b & 0x7fffffffu) > 0x7f800000u ? nan : rounded);
}

static FA_INLINE uint32_t fa_f16_nan_bits(uint32_t a) { return 0x7e00u | ((a >> 13) & 0x3ffu); }

static FA_INLINE uint16_t fa_f16_rne_bits(uint32_t b) {
    uint32_t a = b & 0x7fffffffu, sign = (b >> 16) & 0x8000u;
    /* normal range: rebias the exponent (127 -> 15), round the 13 dropped bits */
    uint32_t n = a - 0x38000000u;
    uint32_t normal = (n + 0xfffu + ((n >> 13) & 1u)) >> 13;
    /* |x| < 2^-14: |x| + 0.5 rounds at 2^-24, float16's subnormal step */
    uint32_t sub = fa_f32_bits(fa_bits_f32(a) + 0.5f) - 0x3f000000u;
    uint32_t h = fa_pick(a < 0x38800000u, sub, normal);
    h = fa_pick(a >= 0x477ff000u, 0x7c00u, h); /* 65520 and above round to inf */
    h = fa_pick(a > 0x7f800000u, fa_f16_nan_bits(a), h);
    return (uint16_t)(sign | h);
}

static FA_INLINE uint32_t fa_f16_widen_bits(uint32_t h) {
    uint32_t sign = (h & 0x8000u) << 16, mant = h & 0x3ffu, exp = h & 0x7c00u;
    uint32_t nonsign = (h & 0x7fffu) << 13;
    uint32_t normal = nonsign + 0x38000000u;
    /* subnormal: 0.5 + mant * 2^-24 - 0.5, exact */
    uint32_t sub = fa_f32_bits(fa_bits_f32(0x3f000000u | mant) - 0.5f);
    uint32_t infnan = (nonsign + 0x70000000u) | (mant ? 0x400000u : 0u);
    uint32_t r = fa_pick(exp == 0, sub, normal);
    r = fa_pick(exp == 0x7c00u, infnan, r);
    return sign | r;
}

static FA_INLINE uint16_t fa_f16_sr_bits(uint32_t b, uint32_t r) {
    uint32_t a = b & 0x7fffffffu, sign = (b >> 16) & 0x8000u;
    /* normal range: add 13 random bits below the kept ones, truncate; 2^16 and up -> inf */
    uint32_t normal = fa_min_u32((a - 0x38000000u + (r & 0x1fffu)) >> 13, 0x7c00u);
    /* |x| < 2^-14: y = |x| * 2^24 = m * 2^-s with s >= 14; t = floor(y), frac = fr / 2^s.
     * Round up iff r / 2^32 < frac, i.e. r < thr = ceil(fr * 2^(32 - s)). */
    uint32_t e = a >> 23;
    uint32_t m = (a & 0x7fffffu) | (e ? 0x800000u : 0u);
    /* 14 .. 125 (float32 subnormals: 125); e is clamped so that the lanes outside this
       range, whose result the select below drops, shift by less than 32 too */
    uint32_t s = 126u - fa_min_u32(e ? e : 1u, 112u);
    uint32_t sc = fa_min_u32(s, 31u);      /* m < 2^24, so a shift by 31 leaves 0 */
    uint32_t t = m >> sc;
    uint32_t fr = m & ((1u << sc) - 1u);
    uint32_t up_shift = s <= 32u ? 32u - s : 0u;
    uint32_t down_shift = s > 32u ? fa_min_u32(s - 32u, 31u) : 0u;
    uint32_t thr = s <= 32u ? fr << up_shift
                            : (fr + ((1u << down_shift) - 1u)) >> down_shift;
    uint32_t sub = t + (r < thr ? 1u : 0u);
    uint32_t h = a < 0x38800000u ? sub : normal;
    h = a > 0x7f800000u ? fa_f16_nan_bits(a) : h;
    return (uint16_t)(sign | h);
}

/* ---- arrays ------------------------------------------------------------------------ */

static FA_INLINE void fa_widen_bf16(const uint16_t* src, float* dst, ptrdiff_t n) {
    ptrdiff_t i;
    for (i = 0; i < n; i++) {
        uint32_t b = (uint32_t)src[i] << 16;
        memcpy(dst + i, &b, sizeof b);
    }
}

static FA_INLINE void fa_narrow_bf16(const float* src, uint16_t* dst, ptrdiff_t n) {
    ptrdiff_t i;
    for (i = 0; i < n; i++) {
        uint32_t b;
        memcpy(&b, src + i, sizeof b);
        dst[i] = fa_bf16_rne_bits(b);
    }
}

static FA_INLINE void fa_widen_f16(const uint16_t* src, float* dst, ptrdiff_t n) {
    ptrdiff_t i = 0;
#if defined(FA_HAVE_F16C)
    for (; i < (n & ~(ptrdiff_t)7); i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(src + i))));
#endif
    for (; i < n; i++) {
        uint32_t b = fa_f16_widen_bits(src[i]);
        memcpy(dst + i, &b, sizeof b);
    }
}

static FA_INLINE void fa_narrow_f16(const float* src, uint16_t* dst, ptrdiff_t n) {
    ptrdiff_t i = 0;
#if defined(FA_HAVE_F16C)
    for (; i < (n & ~(ptrdiff_t)7); i += 8)
        _mm_storeu_si128((__m128i*)(dst + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i),
                                         _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#endif
    for (; i < n; i++) {
        uint32_t b;
        memcpy(&b, src + i, sizeof b);
        dst[i] = fa_f16_rne_bits(b);
    }
}

/* Stochastic rounding: element j uses fa_random32(key, index0 + j). The loop runs in
 * pieces over which the index's high half is constant, so its body is 32-bit. */
#define FA_SR_LOOP(ELEMENT)                                                               \
    {                                                                                     \
        uint32_t k0 = fa_key0(key), k1 = fa_key1(key);                                    \
        ptrdiff_t done = 0;                                                               \
        while (done < n) {                                                                \
            uint64_t index = index0 + (uint64_t)done;                                     \
            uint32_t lo = (uint32_t)index, hi = (uint32_t)(index >> 32);                  \
            uint64_t room = 0x100000000ull - lo; /* until the low half wraps */           \
            ptrdiff_t m = (uint64_t)(n - done) < room ? n - done : (ptrdiff_t)room;       \
            const float* s = src + done;                                                  \
            uint16_t* d = dst + done;                                                     \
            ptrdiff_t j;                                                                  \
            for (j = 0; j < m; j++) {                                                     \
                uint32_t b;                                                               \
                memcpy(&b, s + j, sizeof b);                                              \
                d[j] = ELEMENT(b, fa_random32_k(k0, k1, lo + (uint32_t)j, hi));           \
            }                                                                             \
            done += m;                                                                    \
        }                                                                                 \
    }

static FA_INLINE void fa_narrow_bf16_sr(const float* src, uint16_t* dst, ptrdiff_t n,
                                     uint64_t key, uint64_t index0) {
    FA_SR_LOOP(fa_bf16_sr_bits)
}

static FA_INLINE void fa_narrow_f16_sr(const float* src, uint16_t* dst, ptrdiff_t n,
                                    uint64_t key, uint64_t index0) {
    FA_SR_LOOP(fa_f16_sr_bits)
}

#undef FA_SR_LOOP

#endif
