# Adagrad (torch.optim.Adagrad's rule).
# States: sum (s[0]), which a class fills with initial_accumulator_value.

cdef struct adagrad_c:
    double weight_decay      # L2 term added to the gradient
    double neg_clr           # -lr / (1 + (step-1)*lr_decay)
    double eps
    bint l2                  # weight_decay != 0


cdef inline int adagrad_prepare(adagrad_c* c, const adagrad_hp* h,
                               Py_ssize_t step) except -1:
    c.l2 = h.weight_decay != 0.0
    c.weight_decay = h.weight_decay
    c.neg_clr = -(h.lr / (1.0 + <double>(step - 1) * h.lr_decay))
    c.eps = h.eps
    return 0


cdef inline void adagrad_loop(const adagrad_c* c, double grad_mul, real* p, const real* g,
                              real* ssum, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef real wd = <real>c.weight_decay, gmul = <real>grad_mul
    cdef real neg_clr = <real>c.neg_clr, eps = <real>c.eps
    cdef bint l2 = c.l2
    cdef real gi, pi, si
    cdef Py_ssize_t i
    for i in range(lo, hi):
        pi = p[i]
        gi = gmul * g[i]
        if l2:
            gi = gi + wd * pi
        si = ssum[i] + gi * gi
        ssum[i] = si
        p[i] = pi + neg_clr * gi / (_sqrt(si) + eps)
