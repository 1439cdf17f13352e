# Adamax (torch.optim.Adamax's rule).
# States: exp_avg (s[0]), exp_inf (s[1]).

cdef struct adamax_c:
    double weight_decay      # L2 term added to the gradient
    double w, one_minus_w    # exp_avg's lerp weight 1 - beta1, and 1 - that
    bint lerp_low            # w < 0.5: lerp from exp_avg's end
    double beta2, eps
    double neg_clr           # -lr / (1 - beta1**step)
    bint l2


cdef inline int adamax_prepare(adamax_c* c, const adamax_hp* h,
                              Py_ssize_t step) except -1:
    cdef double bc = 1.0 - pow(h.betas[0], <double>step)
    if bc == 0.0:
        raise ValueError(f"Invalid betas/step: bias correction 1 - beta1**step is 0 for "
                         f"betas={(h.betas[0], h.betas[1])!r}, step={step}")
    c.l2 = h.weight_decay != 0.0
    c.weight_decay = h.weight_decay
    c.w = 1.0 - h.betas[0]
    c.one_minus_w = 1.0 - c.w
    c.lerp_low = c.w < 0.5
    c.beta2 = h.betas[1]
    c.eps = h.eps
    c.neg_clr = -(h.lr / bc)
    return 0


cdef inline void adamax_loop(const adamax_c* c, double grad_mul, real* p, const real* g,
                             real* m, real* u, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef real wd = <real>c.weight_decay, gmul = <real>grad_mul
    cdef real w = <real>c.w, omw = <real>c.one_minus_w, b2 = <real>c.beta2
    cdef real eps = <real>c.eps, neg_clr = <real>c.neg_clr
    cdef bint l2 = c.l2, low = c.lerp_low
    cdef real gi, pi, mi, a, b
    cdef Py_ssize_t i
    for i in range(lo, hi):
        pi = p[i]
        gi = gmul * g[i]
        if l2:
            gi = gi + wd * pi
        mi = _lerp(m[i], gi, w, omw, low)
        m[i] = mi
        a = u[i] * b2
        b = _abs(gi) + eps
        # np.maximum's NaN rule: a NaN on either side propagates
        a = a if (a > b or a != a) else b
        u[i] = a
        p[i] = pi + neg_clr * mi / a
