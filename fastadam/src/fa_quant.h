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

/* fastadam/quant.py: BLOCK, BUCKET_SHIFT, BUCKET_LO, NBUCKETS (a test checks they agree). */
#define FA_QBLOCK 256
#define FA_QSHIFT 15
#define FA_QLO ((127 - 23) << 8)
#define FA_QNB ((0x3F800000 >> FA_QSHIFT) - FA_QLO + 1)

#if defined(__AVX512F__) || defined(__AVX2__)
#  include <immintrin.h>
#endif

/* One element's code: the bucket of |y| (sign-magnitude bits b), then the switch. */
static FA_INLINE uint8_t fa_q_code(uint32_t b, const uint32_t* table) {
    uint32_t m = b & 0x7fffffffu, e;
    int32_t j = (int32_t)(m >> FA_QSHIFT) - FA_QLO;
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

static FA_INLINE void fa_q_widen(const uint8_t* codes, const float* qmap, float absmax,
                                 float* dst, ptrdiff_t n) {
    ptrdiff_t i = 0;
#if defined(__AVX512F__)
    const __m512 a = _mm512_set1_ps(absmax);
    for (; i + 16 <= n; i += 16) {
        __m512i idx = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)(codes + i)));
        _mm512_storeu_ps(dst + i, _mm512_mul_ps(_mm512_i32gather_ps(idx, qmap, 4), a));
    }
#elif defined(__AVX2__)
    const __m256 a = _mm256_set1_ps(absmax);
    for (; i + 8 <= n; i += 8) {
        __m256i idx = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)(codes + i)));
        _mm256_storeu_ps(dst + i, _mm256_mul_ps(_mm256_i32gather_ps(qmap, idx, 4), a));
    }
#endif
    for (; i < n; i++)
        dst[i] = qmap[codes[i]] * absmax;
}

/* Quantize a block: its absmax (returned), and each element's nearest code against it. */
static FA_INLINE float fa_q_narrow(const float* x, const uint32_t* table, uint8_t* codes,
                                   ptrdiff_t n) {
    float absmax = fa_q_absmax(x, n), inv;
    ptrdiff_t i = 0;
    if (absmax == 0.0f) {
        memset(codes, 0, (size_t)n);
        return absmax;
    }
    inv = 1.0f / absmax;
#if defined(__AVX512F__)
    {
        const __m512 vinv = _mm512_set1_ps(inv);
        const __m512i mag = _mm512_set1_epi32(0x7fffffff), lo = _mm512_set1_epi32(FA_QLO);
        const __m512i top = _mm512_set1_epi32(FA_QNB - 1), nb = _mm512_set1_epi32(FA_QNB);
        const __m512i low = _mm512_set1_epi32((1 << FA_QSHIFT) - 1);
        const __m512i byte = _mm512_set1_epi32(0xff), zero = _mm512_setzero_si512();
        for (; i + 16 <= n; i += 16) {
            __m512i b = _mm512_castps_si512(_mm512_mul_ps(_mm512_loadu_ps(x + i), vinv));
            __m512i m = _mm512_and_si512(b, mag);
            __m512i j = _mm512_sub_epi32(_mm512_srli_epi32(m, FA_QSHIFT), lo);
            __m512i e, code;
            __mmask16 hi;
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
    {
        const __m256 vinv = _mm256_set1_ps(inv);
        const __m256i mag = _mm256_set1_epi32(0x7fffffff), lo = _mm256_set1_epi32(FA_QLO);
        const __m256i top = _mm256_set1_epi32(FA_QNB - 1), nb = _mm256_set1_epi32(FA_QNB);
        const __m256i low = _mm256_set1_epi32((1 << FA_QSHIFT) - 1);
        const __m256i byte = _mm256_set1_epi32(0xff), zero = _mm256_setzero_si256();
        for (; i + 8 <= n; i += 8) {
            __m256i b = _mm256_castps_si256(_mm256_mul_ps(_mm256_loadu_ps(x + i), vinv));
            __m256i m = _mm256_and_si256(b, mag);
            __m256i j = _mm256_sub_epi32(_mm256_srli_epi32(m, FA_QSHIFT), lo);
            __m256i e, code, packed;
            __m128i w;
            j = _mm256_min_epi32(_mm256_max_epi32(j, zero), top);
            j = _mm256_add_epi32(j, _mm256_and_si256(_mm256_srai_epi32(b, 31), nb));
            e = _mm256_i32gather_epi32((const int*)table, j, 4);
            /* both sides below 2**16: a signed compare is an unsigned one */
            code = _mm256_blendv_epi8(
                _mm256_srli_epi32(e, 8), e,
                _mm256_cmpgt_epi32(_mm256_srli_epi32(e, 16), _mm256_and_si256(m, low)));
            packed = _mm256_and_si256(code, byte);
            w = _mm_packus_epi32(_mm256_castsi256_si128(packed),
                                 _mm256_extracti128_si256(packed, 1));
            _mm_storel_epi64((__m128i*)(codes + i), _mm_packus_epi16(w, w));
        }
    }
#endif
    for (; i < n; i++)
        codes[i] = fa_q_code(fa_f32_bits(x[i] * inv), table);
    return absmax;
}

#endif
