# The update rules of SPEC §1 as fused-type loops on raw pointers: float32 and float64 come
# from this one source. It is included by _simd_baseline/_avx2/_avx512.pyx, which compile it
# with different target flags; _core chooses one table at import.
#
# Each loop reads every input element once and writes every output once. The option flags
# are loop-invariant: the compiler unswitches them (at most four per loop, its default limit)
# and vectorises every version; check with -fopt-info-vec after any change here. The
# operation order is the reference's (fastadam/reference.py), and the build disables FMA
# contraction, so all instruction sets give the same bits.

from cpython.pycapsule cimport PyCapsule_New
from libc.math cimport sqrt, sqrtf

from fastadam._kernels cimport (
    F32, F64, Hyper, K_ADAM, K_PROBE, K_RMSPROP, K_SGD, KernelTable, Seg,
)

ctypedef fused real:
    float
    double


cdef inline real _sqrt(real x) noexcept nogil:
    if real is float:
        return sqrtf(x)
    else:
        return sqrt(x)


cdef inline void _sgd(const Hyper* h, real* p, const real* g, real* buf,
                      Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef real lr = <real>h.lr, wd = <real>h.weight_decay, gmul = <real>h.grad_mul
    cdef real mom = <real>h.momentum, omd = <real>h.one_minus_dampening
    cdef bint l2 = h.l2, use_mom = h.use_momentum, first = h.first_step, nesterov = h.nesterov
    cdef real gi, pi, b
    cdef Py_ssize_t i
    for i in range(lo, hi):
        pi = p[i]
        gi = gmul * g[i]
        if l2:
            gi = gi + wd * pi
        if use_mom:
            if first:
                b = gi
            else:
                b = mom * buf[i] + omd * gi
            buf[i] = b
            if nesterov:
                gi = gi + mom * b
            else:
                gi = b
        p[i] = pi - lr * gi


cdef inline void _rmsprop_loop(const Hyper* h, real* p, const real* g, real* sq, real* buf,
                               real* gavg, Py_ssize_t lo, Py_ssize_t hi, const bint centered,
                               const bint use_mom) noexcept nogil:
    cdef real lr = <real>h.lr, wd = <real>h.weight_decay, gmul = <real>h.grad_mul
    cdef real alpha = <real>h.alpha, oma = <real>h.one_minus_alpha, eps = <real>h.eps
    cdef real mom = <real>h.momentum
    cdef bint l2 = h.l2
    cdef real gi, pi, s, a, avg, b
    cdef Py_ssize_t i
    for i in range(lo, hi):
        pi = p[i]
        gi = gmul * g[i]
        if l2:
            gi = gi + wd * pi
        s = alpha * sq[i] + oma * gi * gi
        sq[i] = s
        if centered:
            a = alpha * gavg[i] + oma * gi
            gavg[i] = a
            avg = _sqrt(s - a * a) + eps
        else:
            avg = _sqrt(s) + eps
        if use_mom:
            b = mom * buf[i] + gi / avg
            buf[i] = b
            p[i] = pi - lr * b
        else:
            p[i] = pi - lr * gi / avg


cdef inline void _rmsprop(const Hyper* h, real* p, const real* g, real* sq, real* buf,
                          real* gavg, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    # Too big a loop for the compiler to unswitch all of its options itself: pass two of
    # them as constants, one specialised copy each.
    if h.centered:
        if h.use_momentum:
            _rmsprop_loop(h, p, g, sq, buf, gavg, lo, hi, True, True)
        else:
            _rmsprop_loop(h, p, g, sq, buf, gavg, lo, hi, True, False)
    elif h.use_momentum:
        _rmsprop_loop(h, p, g, sq, buf, gavg, lo, hi, False, True)
    else:
        _rmsprop_loop(h, p, g, sq, buf, gavg, lo, hi, False, False)


cdef inline void _adam(const Hyper* h, real* p, const real* g, real* m, real* v, real* vmax,
                       Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef real wd = <real>h.weight_decay, gmul = <real>h.grad_mul, decay = <real>h.decay
    cdef real b1 = <real>h.beta1, omb1 = <real>h.one_minus_beta1
    cdef real b2 = <real>h.beta2, omb2 = <real>h.one_minus_beta2
    cdef real step_size = <real>h.step_size, inv_sqrt_bc2 = <real>h.inv_sqrt_bc2
    cdef real eps = <real>h.eps
    cdef bint l2 = h.l2, amsgrad = h.amsgrad
    cdef real gi, pi, mi, vi, wi
    cdef Py_ssize_t i
    for i in range(lo, hi):
        pi = p[i]
        gi = gmul * g[i]
        if l2:
            gi = gi + wd * pi
        pi = pi * decay
        mi = b1 * m[i] + omb1 * gi
        vi = b2 * v[i] + omb2 * gi * gi
        m[i] = mi
        v[i] = vi
        if amsgrad:
            wi = vmax[i]
            # np.maximum's NaN rule: a NaN on either side propagates
            wi = wi if (wi > vi or wi != wi) else vi
            vmax[i] = wi
            vi = wi
        p[i] = pi - step_size * mi / (_sqrt(vi) * inv_sqrt_bc2 + eps)


cdef inline void _probe(const Hyper* h, real* p, const real* g, real* m, real* v,
                        Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    # Adam's memory traffic (read p, g, m, v; write p, m, v) with one add per stream:
    # the bandwidth roofline the benchmark compares every kernel with.
    cdef real gi
    cdef Py_ssize_t i
    for i in range(lo, hi):
        gi = g[i]
        p[i] = p[i] + gi
        m[i] = m[i] + gi
        v[i] = v[i] + gi


cdef extern from "fa_sumsq.h":
    # The pre-pass (see _kernels.pxd); in C for GCC/Clang vector extensions.
    void fa_sumsq_f32(const void* g, Py_ssize_t lo, Py_ssize_t hi, double* acc) noexcept nogil
    void fa_sumsq_f64(const void* g, Py_ssize_t lo, Py_ssize_t hi, double* acc) noexcept nogil


# Uniform entry points for the table: cast the segment's pointers to the dtype.
cdef void sgd_f32(const Hyper* h, const Seg* s, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    _sgd(h, <float*>s.p, <const float*>s.g, <float*>s.s0, lo, hi)

cdef void sgd_f64(const Hyper* h, const Seg* s, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    _sgd(h, <double*>s.p, <const double*>s.g, <double*>s.s0, lo, hi)

cdef void rmsprop_f32(const Hyper* h, const Seg* s, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    _rmsprop(h, <float*>s.p, <const float*>s.g, <float*>s.s0, <float*>s.s1, <float*>s.s2, lo, hi)

cdef void rmsprop_f64(const Hyper* h, const Seg* s, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    _rmsprop(h, <double*>s.p, <const double*>s.g, <double*>s.s0, <double*>s.s1, <double*>s.s2,
             lo, hi)

cdef void adam_f32(const Hyper* h, const Seg* s, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    _adam(h, <float*>s.p, <const float*>s.g, <float*>s.s0, <float*>s.s1, <float*>s.s2, lo, hi)

cdef void adam_f64(const Hyper* h, const Seg* s, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    _adam(h, <double*>s.p, <const double*>s.g, <double*>s.s0, <double*>s.s1, <double*>s.s2,
          lo, hi)

cdef void probe_f32(const Hyper* h, const Seg* s, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    _probe(h, <float*>s.p, <const float*>s.g, <float*>s.s0, <float*>s.s1, lo, hi)

cdef void probe_f64(const Hyper* h, const Seg* s, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    _probe(h, <double*>s.p, <const double*>s.g, <double*>s.s0, <double*>s.s1, lo, hi)

cdef KernelTable _TABLE
_TABLE.fn[K_SGD][F32] = sgd_f32
_TABLE.fn[K_SGD][F64] = sgd_f64
_TABLE.fn[K_RMSPROP][F32] = rmsprop_f32
_TABLE.fn[K_RMSPROP][F64] = rmsprop_f64
_TABLE.fn[K_ADAM][F32] = adam_f32
_TABLE.fn[K_ADAM][F64] = adam_f64
_TABLE.fn[K_PROBE][F32] = probe_f32
_TABLE.fn[K_PROBE][F64] = probe_f64
_TABLE.sumsq[F32] = fa_sumsq_f32
_TABLE.sumsq[F64] = fa_sumsq_f64


def table():
    """A capsule holding this module's KernelTable (for fastadam._core only)."""
    return PyCapsule_New(<void*>&_TABLE, b"fastadam.KernelTable", NULL)
