# Adam / AdamW (Kingma & Ba; torch.optim.Adam's rule), with AMSGrad, optional bias
# correction and optional decoupled weight decay.
# States: exp_avg (s[0]), exp_avg_sq (s[1]), max_exp_avg_sq (s[2]).

cdef struct adam_c:
    double weight_decay      # L2 term added to the gradient (0 when decoupled)
    double decay             # p *= decay before the update: 1 - lr*wd when decoupled, else 1
    double beta1, one_minus_beta1, beta2, one_minus_beta2
    double step_size         # lr / bc1
    double inv_sqrt_bc2      # 1 / sqrt(bc2)
    double eps
    bint l2                  # weight_decay != 0 and not decoupled
    bint amsgrad


cdef inline int adam_prepare(adam_c* c, const adam_hp* h,
                            Py_ssize_t step) except -1:
    cdef double b1 = h.betas[0], b2 = h.betas[1], bc1 = 1.0, bc2 = 1.0
    if h.bias_correction:
        bc1 = 1.0 - pow(b1, <double>step)
        bc2 = 1.0 - pow(b2, <double>step)
        if bc1 == 0.0 or bc2 == 0.0:   # a beta of 0 never makes this 0; a tiny t*(1-b) does
            raise ValueError(f"Invalid betas/step: bias correction 1 - beta**step is 0 for "
                             f"betas={(b1, b2)!r}, step={step}")
    c.l2 = h.weight_decay != 0.0 and not h.decoupled_weight_decay
    c.weight_decay = h.weight_decay if c.l2 else 0.0
    c.decay = 1.0 - h.lr * h.weight_decay if h.decoupled_weight_decay else 1.0
    c.beta1 = b1
    c.one_minus_beta1 = 1.0 - b1
    c.beta2 = b2
    c.one_minus_beta2 = 1.0 - b2
    c.step_size = h.lr / bc1
    c.inv_sqrt_bc2 = 1.0 / sqrt(bc2)
    c.eps = h.eps
    c.amsgrad = h.amsgrad
    return 0


cdef inline void adam_loop(const adam_c* c, double grad_mul, real* p, const real* g, real* m,
                           real* v, real* vmax, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef real wd = <real>c.weight_decay, gmul = <real>grad_mul, decay = <real>c.decay
    cdef real b1 = <real>c.beta1, omb1 = <real>c.one_minus_beta1
    cdef real b2 = <real>c.beta2, omb2 = <real>c.one_minus_beta2
    cdef real step_size = <real>c.step_size, inv_sqrt_bc2 = <real>c.inv_sqrt_bc2
    cdef real eps = <real>c.eps
    cdef bint l2 = c.l2, amsgrad = c.amsgrad
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
