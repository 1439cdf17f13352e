# Adadelta (torch.optim.Adadelta's rule).
# States: square_avg (s[0]), acc_delta (s[1]).

cdef struct adadelta_c:
    double weight_decay      # L2 term added to the gradient
    double neg_lr
    double rho, one_minus_rho, eps
    bint l2                  # weight_decay != 0


cdef inline int adadelta_check(const adadelta_hp* h) except -1:
    # rho is validated as a finite number >= 0; torch.optim.Adadelta allows up to 1
    if h.rho > 1.0:
        raise ValueError(f"Invalid rho: {h.rho!r} (must be in [0, 1])")
    return 0


cdef inline int adadelta_prepare(adadelta_c* c, const adadelta_hp* h,
                                Py_ssize_t step) except -1:
    c.l2 = h.weight_decay != 0.0
    c.weight_decay = h.weight_decay
    c.neg_lr = -h.lr
    c.rho = h.rho
    c.one_minus_rho = 1.0 - h.rho
    c.eps = h.eps
    return 0


cdef inline void adadelta_loop(const adadelta_c* c, double grad_mul, real* p, const real* g,
                               real* sq, real* acc, Py_ssize_t lo,
                               Py_ssize_t hi) noexcept nogil:
    cdef real wd = <real>c.weight_decay, gmul = <real>grad_mul, neg_lr = <real>c.neg_lr
    cdef real rho = <real>c.rho, omr = <real>c.one_minus_rho, eps = <real>c.eps
    cdef bint l2 = c.l2
    cdef real gi, pi, s, a, delta
    cdef Py_ssize_t i
    for i in range(lo, hi):
        pi = p[i]
        gi = gmul * g[i]
        a = acc[i]
        if l2:
            gi = gi + wd * pi
        s = sq[i] * rho + omr * gi * gi
        sq[i] = s
        delta = _sqrt(a + eps) / _sqrt(s + eps) * gi
        acc[i] = a * rho + omr * delta * delta
        p[i] = pi + neg_lr * delta
