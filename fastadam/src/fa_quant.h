/* 8-bit block-wise states (fastadam/quant.py states the rule): a block of up to 256
 * elements is `qmap[code] * absmax`; after a step it is requantized against its new absmax.
 *
 * Integer compares, one float multiply per element and table loads (gathers on AVX2 and
 * AVX-512): every build gives the same bits. The nearest code comes from the map's bucket
 * table (fastadam/quant.py bucket_table): the bucket of |y| by its float bits, and within
 * the bucket at most one switch to the next code, at a known value of the low 15 bits. */
#ifndef FA_QUANT_H
#define FA_QUANT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fa_half.h"

/* fastadam/quant.py's BUCKET_SHIFT, BUCKET_LO, NBUCKETS (tests/c/quant_check.c reads
 * tables built with those: a difference fails it). */
#define FA_QSHIFT 15
#define FA_QLO ((127 - 23) << 8)
#define FA_QNB ((0x3F800000 >> FA_QSHIFT) - FA_QLO + 1)

#if defined(__AVX512F__) || defined(__AVX2__)
#  include <immintrin.h>
#endif

/* A map's words for the kernels (fastadam/quant.py kernel_words): the arithmetic-code level
 * tables (llo[0] == -1: none; every element then takes the bucket table), then the map as
 * four byte planes. */
typedef struct {
    int32_t llo[32];        /* [binade of |y|]: the level at the binade's start */
    float bnd[32];          /* the one level boundary inside the binade (inf: none) */
    float a[16], invd[16], base[16], cnt1[16];     /* [level] */
    float bound, mirror;    /* |t - round(t)| >= bound: next to a switch */
    float pad[14];
    uint8_t planes[4][256];
} fa_q_words;

#define FA_QLEVEL_E0 103

/* Whether the AVX-512 path may use AVX512_VBMI (set once by fa_q_init at module import). */
static int fa_q_vbmi = 0;

/* One element's code: the bucket of |y| (sign-magnitude bits b), then the switch. A NaN
 * (inf * 0: an infinite value in a block whose absmax is inf) takes the code of 0. */
static FA_INLINE uint8_t fa_q_code(uint32_t b, const uint32_t* table) {
    uint32_t m, e;
    int32_t j;
    b = (b & 0x7fffffffu) > 0x7f800000u ? 0u : b;
    m = b & 0x7fffffffu;
    j = (int32_t)(m >> FA_QSHIFT) - FA_QLO;
    j = j < 0 ? 0 : j;
    j = j > FA_QNB - 1 ? FA_QNB - 1 : j;
    e = table[j + (int32_t)(b >> 31) * FA_QNB];
    return (uint8_t)((m & ((1u << FA_QSHIFT) - 1)) >= (e >> 16) ? (e >> 8) : e);
}

/* The largest |x| of a block, as a float: the largest magnitude bits, so a NaN wins and the
 * order of the lanes cannot matter. */
static FA_INLINE float fa_q_absmax(const float* x, ptrdiff_t n) {
    uint32_t m = 0;
    ptrdiff_t i = 0;
#if defined(__AVX512F__)
    __m512i vm = _mm512_setzero_si512();
    const __m512i mag = _mm512_set1_epi32(0x7fffffff);
    for (; i + 16 <= n; i += 16)
        vm = _mm512_max_epu32(vm, _mm512_and_si512(_mm512_loadu_si512((const void*)(x + i)),
                                                   mag));
    m = (uint32_t)_mm512_reduce_max_epu32(vm);
#elif defined(__AVX2__)
    __m256i vm = _mm256_setzero_si256();
    const __m256i mag = _mm256_set1_epi32(0x7fffffff);
    uint32_t lanes[8];
    int k;
    for (; i + 8 <= n; i += 8)
        vm = _mm256_max_epu32(vm, _mm256_and_si256(_mm256_loadu_si256((const __m256i*)(x + i)),
                                                   mag));
    _mm256_storeu_si256((__m256i*)lanes, vm);
    for (k = 0; k < 8; k++)
        m = lanes[k] > m ? lanes[k] : m;
#endif
    for (; i < n; i++) {
        uint32_t b = fa_f32_bits(x[i]) & 0x7fffffffu;
        m = b > m ? b : m;
    }
    return fa_bits_f32(m);
}

#if defined(__AVX512F__) && defined(__GNUC__)
#  include "fa_cpu.h"
static void fa_q_init(void) { fa_q_vbmi = fa_cpu_has_avx512vbmi(); }

/* 64 codes at a time: each byte of the 64 floats from its plane by two 128-byte permutes
 * and a blend on the code's top bit, then the four bytes interleaved. The codes are
 * reordered first so that the in-lane unpacks leave the floats in order. */
__attribute__((target("avx512f,avx512bw,avx512vbmi")))
static ptrdiff_t fa_q_widen_vbmi(const uint8_t* codes, const fa_q_words* w, float absmax,
                                 float* dst, ptrdiff_t n) {
    const __m512 a = _mm512_set1_ps(absmax);
    const __m512i order = _mm512_set_epi8(
        63, 62, 61, 60, 47, 46, 45, 44, 31, 30, 29, 28, 15, 14, 13, 12,
        59, 58, 57, 56, 43, 42, 41, 40, 27, 26, 25, 24, 11, 10, 9, 8,
        55, 54, 53, 52, 39, 38, 37, 36, 23, 22, 21, 20, 7, 6, 5, 4,
        51, 50, 49, 48, 35, 34, 33, 32, 19, 18, 17, 16, 3, 2, 1, 0);
    __m512i p[4][4];
    ptrdiff_t i = 0;
    int k, r;
    for (k = 0; k < 4; k++)
        for (r = 0; r < 4; r++)
            p[k][r] = _mm512_loadu_si512((const void*)(w->planes[k] + 64 * r));
    for (; i + 64 <= n; i += 64) {
        __m512i idx = _mm512_permutexvar_epi8(
            order, _mm512_loadu_si512((const void*)(codes + i)));
        __mmask64 top = _mm512_movepi8_mask(idx);
        __m512i b[4], t01l, t01h, t23l, t23h;
        for (k = 0; k < 4; k++)
            b[k] = _mm512_mask_blend_epi8(top, _mm512_permutex2var_epi8(p[k][0], idx, p[k][1]),
                                          _mm512_permutex2var_epi8(p[k][2], idx, p[k][3]));
        t01l = _mm512_unpacklo_epi8(b[0], b[1]);
        t01h = _mm512_unpackhi_epi8(b[0], b[1]);
        t23l = _mm512_unpacklo_epi8(b[2], b[3]);
        t23h = _mm512_unpackhi_epi8(b[2], b[3]);
        _mm512_storeu_ps(dst + i, _mm512_mul_ps(
            _mm512_castsi512_ps(_mm512_unpacklo_epi16(t01l, t23l)), a));
        _mm512_storeu_ps(dst + i + 16, _mm512_mul_ps(
            _mm512_castsi512_ps(_mm512_unpackhi_epi16(t01l, t23l)), a));
        _mm512_storeu_ps(dst + i + 32, _mm512_mul_ps(
            _mm512_castsi512_ps(_mm512_unpacklo_epi16(t01h, t23h)), a));
        _mm512_storeu_ps(dst + i + 48, _mm512_mul_ps(
            _mm512_castsi512_ps(_mm512_unpackhi_epi16(t01h, t23h)), a));
    }
    return i;
}
#else
static void fa_q_init(void) {}
#endif

static FA_INLINE void fa_q_widen(const uint8_t* codes, const float* qmap, const fa_q_words* w,
                                 float absmax, float* dst, ptrdiff_t n) {
    ptrdiff_t i = 0;
#if defined(__AVX512F__)
    const __m512 a = _mm512_set1_ps(absmax);
#  if defined(__GNUC__)
    if (fa_q_vbmi)
        i = fa_q_widen_vbmi(codes, w, absmax, dst, n);
#  endif
    for (; i + 16 <= n; i += 16) {
        __m512i idx = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)(codes + i)));
        _mm512_storeu_ps(dst + i, _mm512_mul_ps(_mm512_i32gather_ps(idx, qmap, 4), a));
    }
#elif defined(__AVX2__)
    const __m256 a = _mm256_set1_ps(absmax);
    (void)w;
    for (; i + 8 <= n; i += 8) {
        __m256i idx = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)(codes + i)));
        _mm256_storeu_ps(dst + i, _mm256_mul_ps(_mm256_i32gather_ps(qmap, idx, 4), a));
    }
#endif
#if !defined(__AVX512F__) && !defined(__AVX2__)
    (void)w;
#endif
    for (; i < n; i++)
        dst[i] = qmap[codes[i]] * absmax;
}

#if defined(__AVX512F__)
/* The codes of 16 elements by the level tables (fastadam/quant.py level_tables); the lanes
 * near a switch (and NaN) take the bucket table's. */
static FA_INLINE void fa_q_codes16(const float* x, __m512 vinv, const fa_q_words* w,
                                   const uint32_t* table, uint8_t* codes) {
    const __m512i mag = _mm512_set1_epi32(0x7fffffff), e0 = _mm512_set1_epi32(FA_QLEVEL_E0);
    const __m512i zero = _mm512_setzero_si512(), last = _mm512_set1_epi32(31);
    const __m512i one = _mm512_set1_epi32(1);
    const __m512 fzero = _mm512_setzero_ps();
    __m512 y = _mm512_mul_ps(_mm512_loadu_ps(x), vinv), my, bnd, t, r, off, code;
    __m512i b = _mm512_castps_si512(y), m = _mm512_and_si512(b, mag), e, lev;
    __mmask16 neg = _mm512_movepi32_mask(b), flag;
    my = _mm512_castsi512_ps(m);
    e = _mm512_min_epi32(_mm512_max_epi32(_mm512_sub_epi32(_mm512_srli_epi32(m, 23), e0),
                                          zero), last);
    bnd = _mm512_permutex2var_ps(_mm512_loadu_ps(w->bnd), e, _mm512_loadu_ps(w->bnd + 16));
    lev = _mm512_permutex2var_epi32(_mm512_loadu_si512(w->llo), e,
                                    _mm512_loadu_si512(w->llo + 16));
    lev = _mm512_mask_add_epi32(lev, _mm512_cmp_ps_mask(my, bnd, _CMP_GE_OQ), lev, one);
    t = _mm512_mul_ps(_mm512_sub_ps(my, _mm512_permutexvar_ps(lev, _mm512_loadu_ps(w->a))),
                      _mm512_permutexvar_ps(lev, _mm512_loadu_ps(w->invd)));
    r = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    /* next to a switch (t near a half-integer), or NaN: not below the bound */
    flag = _mm512_cmp_ps_mask(_mm512_castsi512_ps(_mm512_and_si512(
                                  _mm512_castps_si512(_mm512_sub_ps(t, r)), mag)),
                              _mm512_set1_ps(w->bound), _CMP_NLT_UQ);
    /* a negative lane one float below a level boundary: its switch may be there */
    flag |= _mm512_mask_cmpeq_epi32_mask(neg, m, _mm512_sub_epi32(_mm512_castps_si512(bnd), one));
    off = _mm512_min_ps(_mm512_max_ps(r, fzero),
                        _mm512_permutexvar_ps(lev, _mm512_loadu_ps(w->cnt1)));
    code = _mm512_add_ps(_mm512_permutexvar_ps(lev, _mm512_loadu_ps(w->base)), off);
    code = _mm512_mask_max_ps(code, neg, _mm512_sub_ps(_mm512_set1_ps(w->mirror), code), fzero);
    _mm_storeu_si128((__m128i*)codes, _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(code)));
    if (flag) {
        uint32_t bits[16];
        int l;
        _mm512_storeu_si512((void*)bits, b);
        for (l = 0; l < 16; l++)
            if (flag >> l & 1)
                codes[l] = fa_q_code(bits[l], table);
    }
}
#endif

/* The codes of x[0:n] * inv (inv: 1 / the block's absmax). */
static FA_INLINE void fa_q_codes(const float* x, float inv, const uint32_t* table,
                                 const fa_q_words* w, uint8_t* codes, ptrdiff_t n) {
    ptrdiff_t i = 0;
#if defined(__AVX512F__)
    const __m512 vinv = _mm512_set1_ps(inv);
    if (w->llo[0] >= 0) {
        for (; i + 16 <= n; i += 16)
            fa_q_codes16(x + i, vinv, w, table, codes + i);
    } else {
        const __m512i mag = _mm512_set1_epi32(0x7fffffff), lo = _mm512_set1_epi32(FA_QLO);
        const __m512i top = _mm512_set1_epi32(FA_QNB - 1), nb = _mm512_set1_epi32(FA_QNB);
        const __m512i low = _mm512_set1_epi32((1 << FA_QSHIFT) - 1);
        const __m512i byte = _mm512_set1_epi32(0xff), zero = _mm512_setzero_si512();
        const __m512i inf = _mm512_set1_epi32(0x7f800000);
        for (; i + 16 <= n; i += 16) {
            __m512i b = _mm512_castps_si512(_mm512_mul_ps(_mm512_loadu_ps(x + i), vinv));
            __m512i m = _mm512_and_si512(b, mag);
            __m512i j, e, code;
            __mmask16 hi, nan = _mm512_cmpgt_epi32_mask(m, inf);
            b = _mm512_mask_mov_epi32(b, nan, zero);          /* a NaN: as 0 */
            m = _mm512_mask_mov_epi32(m, nan, zero);
            j = _mm512_sub_epi32(_mm512_srli_epi32(m, FA_QSHIFT), lo);
            j = _mm512_min_epi32(_mm512_max_epi32(j, zero), top);
            j = _mm512_add_epi32(j, _mm512_and_si512(_mm512_srai_epi32(b, 31), nb));
            e = _mm512_i32gather_epi32(j, (const void*)table, 4);
            hi = _mm512_cmpge_epu32_mask(_mm512_and_si512(m, low), _mm512_srli_epi32(e, 16));
            code = _mm512_mask_blend_epi32(hi, e, _mm512_srli_epi32(e, 8));
            _mm_storeu_si128((__m128i*)(codes + i), _mm512_cvtepi32_epi8(
                _mm512_and_si512(code, byte)));
        }
    }
#elif defined(__AVX2__)
    const __m256 vinv = _mm256_set1_ps(inv);
    const __m256i mag = _mm256_set1_epi32(0x7fffffff), lo = _mm256_set1_epi32(FA_QLO);
    const __m256i top = _mm256_set1_epi32(FA_QNB - 1), nb = _mm256_set1_epi32(FA_QNB);
    const __m256i low = _mm256_set1_epi32((1 << FA_QSHIFT) - 1);
    const __m256i byte = _mm256_set1_epi32(0xff), zero = _mm256_setzero_si256();
    (void)w;
    const __m256i inf = _mm256_set1_epi32(0x7f800000);
    for (; i + 8 <= n; i += 8) {
        __m256i b = _mm256_castps_si256(_mm256_mul_ps(_mm256_loadu_ps(x + i), vinv));
        __m256i m = _mm256_and_si256(b, mag);
        __m256i nan = _mm256_cmpgt_epi32(m, inf), j, e, code, packed;     /* a NaN: as 0 */
        __m128i h;
        b = _mm256_andnot_si256(nan, b);
        m = _mm256_andnot_si256(nan, m);
        j = _mm256_sub_epi32(_mm256_srli_epi32(m, FA_QSHIFT), lo);
        j = _mm256_min_epi32(_mm256_max_epi32(j, zero), top);
        j = _mm256_add_epi32(j, _mm256_and_si256(_mm256_srai_epi32(b, 31), nb));
        e = _mm256_i32gather_epi32((const int*)table, j, 4);
        /* both sides below 2**16: a signed compare is an unsigned one */
        code = _mm256_blendv_epi8(
            _mm256_srli_epi32(e, 8), e,
            _mm256_cmpgt_epi32(_mm256_srli_epi32(e, 16), _mm256_and_si256(m, low)));
        packed = _mm256_and_si256(code, byte);
        h = _mm_packus_epi32(_mm256_castsi256_si128(packed),
                             _mm256_extracti128_si256(packed, 1));
        _mm_storel_epi64((__m128i*)(codes + i), _mm_packus_epi16(h, h));
    }
#else
    (void)w;
#endif
    for (; i < n; i++)
        codes[i] = fa_q_code(fa_f32_bits(x[i] * inv), table);
}

/* Quantize a block: its absmax (returned), and each element's nearest code against it. A
 * block whose absmax is 0 or NaN gets code 0 everywhere (every element of a NaN block
 * dequantizes to NaN whatever its code). */
static FA_INLINE float fa_q_narrow(const float* x, const uint32_t* table, const fa_q_words* w,
                                   uint8_t* codes, ptrdiff_t n) {
    float absmax = fa_q_absmax(x, n);
    if (!(absmax > 0.0f))
        memset(codes, 0, (size_t)n);
    else
        fa_q_codes(x, 1.0f / absmax, table, w, codes, n);
    return absmax;
}

#endif
