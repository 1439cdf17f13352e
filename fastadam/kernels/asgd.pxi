# ASGD (Polyak & Juditsky averaging; torch.optim.ASGD's rule).
# States: ax (s[0]), the averaged params; per-tensor scalars: eta (sc.v[0]), mu (sc.v[1]).

cdef struct asgd_c:
    double weight_decay
    double decay             # p *= decay first: 1 - lambd*eta
    double neg_eta           # then p += -eta*g
    double mu                # ax += (p - ax)*mu; ...
    bint average             # ... when mu != 1, else ax = p
    bint l2


cdef inline int asgd_prepare(asgd_c* c, const asgd_hp* h, Py_ssize_t step,
                             ScalarState* sc) except -1:
    cdef double eta = sc.v[0], mu = sc.v[1], d
    cdef double base = 1.0 + h.lambd * h.lr * <double>step
    if not base > 0.0:
        raise ValueError(f"Invalid lambd: {h.lambd!r} makes 1 + lambd*lr*step <= 0 at "
                         f"step {step} (its power alpha is then no real number)")
    c.l2 = h.weight_decay != 0.0
    c.weight_decay = h.weight_decay
    c.decay = 1.0 - h.lambd * eta
    c.neg_eta = -eta
    c.mu = mu
    c.average = mu != 1.0
    # the values after this step, in their own dtype
    d = <double>step - h.t0
    sc.v[0] = _scalar_round(sc, 0, h.lr / pow(base, h.alpha))
    sc.v[1] = _scalar_round(sc, 1, 1.0 / (d if d > 1.0 else 1.0))
    return 0


# While mu == 1, ax is only written (ax = p). A plain store to a line not in the cache first
# reads it (read for ownership), and the hardware prefetchers, which follow loads, do not
# fetch those lines ahead: the step then ran at the probe's speed with two fewer streams.
# Over a range too large for L1 the stores to ax are therefore streamed (non-temporal:
# around the caches, no read); nothing reads ax again while mu == 1. The operations and
# their order are asgd_loop's, so the bits are the same. x86-64 only (SSE2, AVX2 or
# AVX-512, as the module's target flags allow); elsewhere FA_ASGD_STREAM is 0.
cdef extern from *:
    """
    #include <stdint.h>
    #if defined(__AVX512F__)
    #include <immintrin.h>
    #define FA_ASGD_STREAM 1
    #define FA_VBYTES 64
    #define FA_V(op, sfx) _mm512_##op##_##sfx
    typedef __m512 fa_vps;
    typedef __m512d fa_vpd;
    #elif defined(__AVX2__)
    #include <immintrin.h>
    #define FA_ASGD_STREAM 1
    #define FA_VBYTES 32
    #define FA_V(op, sfx) _mm256_##op##_##sfx
    typedef __m256 fa_vps;
    typedef __m256d fa_vpd;
    #elif defined(__SSE2__) || defined(_M_X64) || defined(_M_AMD64)
    #include <emmintrin.h>
    #define FA_ASGD_STREAM 1
    #define FA_VBYTES 16
    #define FA_V(op, sfx) _mm_##op##_##sfx
    typedef __m128 fa_vps;
    typedef __m128d fa_vpd;
    #else
    #define FA_ASGD_STREAM 0
    #endif

    /* asgd_loop's body for one element with ax = p */
    #define FA_ASGD_ONE(T, i) do {                                              \\
            T pi_ = p[i], gi_ = gmul * g[i];                                    \\
            if (l2) gi_ = gi_ + wd * pi_;                                        \\
            pi_ = pi_ * decay;                                                  \\
            pi_ = pi_ + neg_eta * gi_;                                          \\
            p[i] = pi_;                                                         \\
            ax[i] = pi_;                                                        \\
        } while (0)

    #if FA_ASGD_STREAM
    /* Elements [i, hi): one at a time up to ax's first vector-aligned element (streamed
       stores need alignment), then whole vectors, then the rest one at a time. */
    #define FA_ASGD_STREAM_FN(name, T, V, sfx)                                  \\
    static CYTHON_INLINE void name(T* p, const T* g, T* ax, Py_ssize_t i, Py_ssize_t hi,   \\
                            T gmul, T wd, T decay, T neg_eta, int l2) {          \\
        const Py_ssize_t w = FA_VBYTES / (Py_ssize_t)sizeof(T);                 \\
        V vgmul = FA_V(set1, sfx)(gmul), vwd = FA_V(set1, sfx)(wd);             \\
        V vdecay = FA_V(set1, sfx)(decay), vneg_eta = FA_V(set1, sfx)(neg_eta);  \\
        V pi, gi;                                                               \\
        for (; i < hi && (uintptr_t)(ax + i) % FA_VBYTES != 0; i++)             \\
            FA_ASGD_ONE(T, i);                                                  \\
        for (; i + w <= hi; i += w) {                                           \\
            pi = FA_V(loadu, sfx)(p + i);                                       \\
            gi = FA_V(mul, sfx)(vgmul, FA_V(loadu, sfx)(g + i));                \\
            if (l2) gi = FA_V(add, sfx)(gi, FA_V(mul, sfx)(vwd, pi));           \\
            pi = FA_V(mul, sfx)(pi, vdecay);                                    \\
            pi = FA_V(add, sfx)(pi, FA_V(mul, sfx)(vneg_eta, gi));              \\
            FA_V(storeu, sfx)(p + i, pi);                                       \\
            FA_V(stream, sfx)(ax + i, pi);                                      \\
        }                                                                       \\
        for (; i < hi; i++)                                                     \\
            FA_ASGD_ONE(T, i);                                                  \\
        _mm_sfence();   /* streamed stores are visible before the hand-back */   \\
    }
    #else
    #define FA_ASGD_STREAM_FN(name, T, V, sfx)                                  \\
    static CYTHON_INLINE void name(T* p, const T* g, T* ax, Py_ssize_t i, Py_ssize_t hi,   \\
                            T gmul, T wd, T decay, T neg_eta, int l2) {}
    #endif
    FA_ASGD_STREAM_FN(fa_asgd_stream_f32, float, fa_vps, ps)
    FA_ASGD_STREAM_FN(fa_asgd_stream_f64, double, fa_vpd, pd)
    """
    bint FA_ASGD_STREAM
    void fa_asgd_stream_f32(float* p, const float* g, float* ax, Py_ssize_t lo, Py_ssize_t hi,
                            float gmul, float wd, float decay, float neg_eta,
                            bint l2) noexcept nogil
    void fa_asgd_stream_f64(double* p, const double* g, double* ax, Py_ssize_t lo,
                            Py_ssize_t hi, double gmul, double wd, double decay,
                            double neg_eta, bint l2) noexcept nogil

# From this many bytes of ax per call on, the streamed stores pay (below, ax stays in L1
# and plain stores are cheaper than the streamed ones' trip to memory).
cdef enum:
    ASGD_STREAM_MIN_BYTES = 1 << 15


cdef inline void asgd_loop(const asgd_c* c, double grad_mul, real* p, const real* g, real* ax,
                           Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef real wd = <real>c.weight_decay, gmul = <real>grad_mul, decay = <real>c.decay
    cdef real neg_eta = <real>c.neg_eta, mu = <real>c.mu
    cdef bint l2 = c.l2, average = c.average
    cdef real gi, pi, ai
    cdef Py_ssize_t i
    if FA_ASGD_STREAM and not average and \
            (hi - lo) * <Py_ssize_t>sizeof(real) >= ASGD_STREAM_MIN_BYTES:
        if real is float:
            fa_asgd_stream_f32(p, g, ax, lo, hi, gmul, wd, decay, neg_eta, l2)
        else:
            fa_asgd_stream_f64(p, g, ax, lo, hi, gmul, wd, decay, neg_eta, l2)
        return
    for i in range(lo, hi):
        pi = p[i]
        gi = gmul * g[i]
        if l2:
            gi = gi + wd * pi
        pi = pi * decay
        pi = pi + neg_eta * gi
        p[i] = pi
        if average:
            ai = ax[i]
            pi = ai + (pi - ai) * mu
        ax[i] = pi
