# RAdam (torch.optim.RAdam's rule), with L2 or decoupled weight decay.
# States: exp_avg (s[0]), exp_avg_sq (s[1]).

cdef struct radam_c:
    double weight_decay      # L2 term added to the gradient (0 when decoupled)
    double decay             # p *= decay first: 1 - lr*wd when decoupled, else 1
    double w, one_minus_w    # exp_avg's lerp weight 1 - beta1, and 1 - that
    bint lerp_low
    double beta2, one_minus_beta2
    double bc1, lr, sqrt_bc2, eps, rect
    bint rectified           # rho_t > 5: the variance is tractable
    bint l2


cdef inline int radam_prepare(radam_c* c, const radam_hp* h,
                             Py_ssize_t step) except -1:
    cdef double b1 = h.betas[0], b2 = h.betas[1], t = <double>step
    cdef double bc1 = 1.0 - pow(b1, t), bc2 = 1.0 - pow(b2, t)
    cdef double rho_inf, rho_t
    if bc1 == 0.0 or bc2 == 0.0:
        raise ValueError(f"Invalid betas/step: bias correction 1 - beta**step is 0 for "
                         f"betas={(b1, b2)!r}, step={step}")
    c.l2 = h.weight_decay != 0.0 and not h.decoupled_weight_decay
    c.weight_decay = h.weight_decay if c.l2 else 0.0
    c.decay = 1.0 - h.lr * h.weight_decay if h.decoupled_weight_decay else 1.0
    c.w = 1.0 - b1
    c.one_minus_w = 1.0 - c.w
    c.lerp_low = c.w < 0.5
    c.beta2 = b2
    c.one_minus_beta2 = 1.0 - b2
    c.bc1 = bc1
    c.lr = h.lr
    c.sqrt_bc2 = pow(bc2, 0.5)     # as the rule's bc2**0.5 (pow, not sqrt: the same bits)
    c.eps = h.eps
    rho_inf = 2.0 / (1.0 - b2) - 1.0
    rho_t = rho_inf - 2.0 * t * pow(b2, t) / bc2
    c.rectified = rho_t > 5.0
    c.rect = pow((rho_t - 4.0) * (rho_t - 2.0) * rho_inf
                  / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t), 0.5) if c.rectified else 1.0
    return 0


cdef inline void radam_loop(const radam_c* c, double grad_mul, real* p, const real* g,
                            real* m, real* v, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef real wd = <real>c.weight_decay, gmul = <real>grad_mul, decay = <real>c.decay
    cdef real w = <real>c.w, omw = <real>c.one_minus_w
    cdef real b2 = <real>c.beta2, omb2 = <real>c.one_minus_beta2
    cdef real bc1 = <real>c.bc1, lr = <real>c.lr, sqrt_bc2 = <real>c.sqrt_bc2
    cdef real eps = <real>c.eps, rect = <real>c.rect
    cdef bint l2 = c.l2, low = c.lerp_low, rectified = c.rectified
    cdef real gi, pi, mi, vi, corrected
    cdef Py_ssize_t i
    for i in range(lo, hi):
        pi = p[i]
        gi = gmul * g[i]
        if l2:
            gi = gi + wd * pi
        pi = pi * decay
        mi = _lerp(m[i], gi, w, omw, low)
        vi = v[i] * b2 + omb2 * gi * gi
        m[i] = mi
        v[i] = vi
        corrected = mi / bc1
        if rectified:
            p[i] = pi - corrected * lr * (sqrt_bc2 / (_sqrt(vi) + eps)) * rect
        else:
            p[i] = pi - corrected * lr
