/* The gradient pre-pass kernel: the sum of squares, in float64, of g[lo:hi], added into
 * FA_LANES = 32 fixed lanes acc[0:32] (SUMSQ_LANES in fastadam/_kernels.pxd).
 *
 * Lane k adds the elements lo+k, lo+k+32, ... in order, so the result is the same bits
 * whatever the vector width: GCC and Clang run the lanes as native-width vector-extension
 * arithmetic (4 zmm, 8 ymm or 16 xmm accumulators: enough independent adds to hide their
 * latency), other compilers (MSVC) as scalars; -DFA_SUMSQ_NO_VECTOR forces the scalar
 * lanes, to check that they give the same bits. Build with contraction off
 * (-ffp-contract=off) so s + x*x is never fused.
 *
 * No separate non-finite check is needed: a NaN or inf element makes its lane, and so the
 * total, NaN or inf. A float32 square cannot overflow a double; a float64 one can, so for
 * float64 the caller confirms a non-finite total element by element.
 *
 * bfloat16 and float16 gradients are widened (exactly) to float32 a block at a time and
 * summed by fa_sumsq_f32: a block holds a multiple of FA_LANES elements, so lane k still
 * adds the elements lo+k, lo+k+32, ... and the bits are those of fa_sumsq_f32 on the
 * widened array.
 */
#ifndef FA_SUMSQ_H
#define FA_SUMSQ_H

#include <string.h>

#include "fa_half.h"

#define FA_LANES 32

#if (defined(__GNUC__) || defined(__clang__)) && !defined(FA_SUMSQ_NO_VECTOR)
#  if defined(__AVX512F__)
#    define FA_W 8
#  elif defined(__AVX__)
#    define FA_W 4
#  else
#    define FA_W 2      /* SSE2, NEON, and any other GCC target: lowered as needed */
#  endif
#  if defined(__x86_64__) || defined(__i386__)
#    include <immintrin.h>
#  endif
typedef double fa_vd __attribute__((vector_size(8 * FA_W)));
/* One read-only stream leaves the memory system idle between the hardware prefetcher's
 * requests: asking for each cache line FA_AHEAD bytes early keeps more of them in flight
 * (16 -> 23 GB/s on one core here for a 40 MB float32 array). A prefetch never faults. */
#  ifndef FA_AHEAD
#    define FA_AHEAD 4096
#  endif
#  define FA_PREFETCH(p) __builtin_prefetch(p)
typedef float fa_vf __attribute__((vector_size(4 * FA_W)));

/* FA_W floats at p, widened to doubles. GCC 12 lowers __builtin_convertvector between
 * these widths poorly on x86 (it splits and shuffles), so x86 gets the instruction. */
static inline fa_vd fa_widen(const float* p) {
#  if FA_W == 8
    return (fa_vd)_mm512_cvtps_pd(_mm256_loadu_ps(p));
#  elif FA_W == 4 && defined(__AVX__)
    return (fa_vd)_mm256_cvtps_pd(_mm_loadu_ps(p));
#  elif defined(__SSE2__)
    return (fa_vd)_mm_cvtps_pd(_mm_castsi128_ps(_mm_loadl_epi64((const __m128i*)p)));
#  else
    fa_vf xf;
    memcpy(&xf, p, sizeof xf);
    return __builtin_convertvector(xf, fa_vd);
#  endif
}

#  define FA_SUMSQ_BODY(LOAD)                                                 \
    {                                                                         \
        fa_vd s[FA_LANES / FA_W], x;                                          \
        int j;                                                                \
        memcpy(s, acc, sizeof s);                                             \
        for (; i + FA_LANES <= hi; i += FA_LANES) {                           \
            for (j = 0; j < (int)(FA_LANES * sizeof *g); j += 64)             \
                FA_PREFETCH((const char*)(g + i) + FA_AHEAD + j);             \
            for (j = 0; j < FA_LANES / FA_W; j++) {                           \
                LOAD(i + FA_W * j);                                           \
                s[j] = s[j] + x * x;                                          \
            }                                                                 \
        }                                                                     \
        memcpy(acc, s, sizeof s);                                             \
    }
#  define FA_LOAD_F64(at) memcpy(&x, g + (at), sizeof x)
#  define FA_LOAD_F32(at) (x = fa_widen(g + (at)))
#else
#  define FA_SUMSQ_BODY(LOAD)
#endif

/* What the vector body left (all of it without one), lane by lane. */
#define FA_SUMSQ_SCALAR                                                       \
    for (; i < hi; i++) {                                                     \
        double xs = (double)g[i];                                             \
        int k = (int)((i - lo) % FA_LANES);                                   \
        acc[k] = acc[k] + xs * xs;                                            \
    }

static void fa_sumsq_f64(const void* gv, Py_ssize_t lo, Py_ssize_t hi, double* acc) {
    const double* g = (const double*)gv;
    Py_ssize_t i = lo;
    FA_SUMSQ_BODY(FA_LOAD_F64)
    FA_SUMSQ_SCALAR
}

static void fa_sumsq_f32(const void* gv, Py_ssize_t lo, Py_ssize_t hi, double* acc) {
    const float* g = (const float*)gv;
    Py_ssize_t i = lo;
    FA_SUMSQ_BODY(FA_LOAD_F32)
    FA_SUMSQ_SCALAR
}

/* A multiple of FA_LANES; 2 KB of float32 on the stack. fa_sumsq_f32 prefetches ahead
 * of the block, not of g, so g is prefetched here. */
#define FA_SUMSQ_BLOCK16 512

#ifdef FA_PREFETCH
#  define FA_PREFETCH16(p)                                                    \
    {                                                                         \
        int j16;                                                              \
        for (j16 = 0; j16 < FA_SUMSQ_BLOCK16 * 2; j16 += 64)                  \
            FA_PREFETCH((const char*)(p) + FA_AHEAD + j16);                   \
    }
#else
#  define FA_PREFETCH16(p)
#endif

#define FA_SUMSQ_HALF(WIDEN)                                                  \
    {                                                                         \
        const uint16_t* g = (const uint16_t*)gv;                              \
        float block[FA_SUMSQ_BLOCK16];                                        \
        Py_ssize_t i, m;                                                      \
        for (i = lo; i < hi; i += m) {                                        \
            m = hi - i < FA_SUMSQ_BLOCK16 ? hi - i : FA_SUMSQ_BLOCK16;        \
            FA_PREFETCH16(g + i);                                             \
            WIDEN(g + i, block, (ptrdiff_t)m);                                \
            fa_sumsq_f32(block, 0, m, acc);                                   \
        }                                                                     \
    }

/* inline: no unused-function warning in a module that sums no 16-bit gradients */
static FA_INLINE void fa_sumsq_bf16(const void* gv, Py_ssize_t lo, Py_ssize_t hi,
                                    double* acc) {
    FA_SUMSQ_HALF(fa_widen_bf16)
}

static FA_INLINE void fa_sumsq_f16(const void* gv, Py_ssize_t lo, Py_ssize_t hi,
                                   double* acc) {
    FA_SUMSQ_HALF(fa_widen_f16)
}

#endif
