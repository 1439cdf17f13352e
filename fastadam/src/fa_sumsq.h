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
 */
#ifndef FA_SUMSQ_H
#define FA_SUMSQ_H

#include <string.h>

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

#endif
