# NAdam (Dozat 2016; torch.optim.NAdam's rule), with L2 or decoupled weight decay.
# States: exp_avg (s[0]), exp_avg_sq (s[1]); per-tensor scalar: mu_product (sc.v[0]).

cdef struct nadam_c:
    double weight_decay      # L2 term added to the gradient (0 when decoupled)
    double decay             # p *= decay first: 1 - lr*wd when decoupled, else 1
    double w, one_minus_w    # the lerp weight 1 - b1, and 1 - w
    bint low                 # w < 0.5: torch's lerp computes from exp_avg's end
    double beta2, one_minus_beta2
    double bc2               # 1 - b2**step
    double eps
    double c_grad            # -lr*(1 - mu)/(1 - mu_product)
    double c_avg             # -lr*mu_next/(1 - mu_product*mu_next)
    bint l2


cdef inline int nadam_prepare(nadam_c* c, const nadam_hp* h, Py_ssize_t step,
                              ScalarState* sc) except -1:
    cdef double b1 = h.betas[0], b2 = h.betas[1], prod, d1, d2
    cdef double mu = b1 * (1.0 - 0.5 * pow(0.96, <double>step * h.momentum_decay))
    cdef double mu_next = b1 * (1.0 - 0.5 * pow(0.96, <double>(step + 1) * h.momentum_decay))
    # mu_product *= mu, in mu_product's dtype (mu rounded to it first, as torch's and
    # NumPy's in-place product with a Python float)
    prod = _scalar_round(sc, 0, sc.v[0] * _scalar_round(sc, 0, mu))
    d1 = 1.0 - prod
    d2 = 1.0 - prod * mu_next
    if d1 == 0.0 or d2 == 0.0:
        raise ValueError(f"Invalid mu_product: {sc.v[0]!r} makes 1 - mu_product 0 at "
                         f"step {step}")
    sc.v[0] = prod
    c.l2 = h.weight_decay != 0.0 and not h.decoupled_weight_decay
    c.weight_decay = h.weight_decay if c.l2 else 0.0
    c.decay = 1.0 - h.lr * h.weight_decay if h.decoupled_weight_decay else 1.0
    c.w = 1.0 - b1
    c.one_minus_w = 1.0 - c.w
    c.low = c.w < 0.5
    c.beta2 = b2
    c.one_minus_beta2 = 1.0 - b2
    c.bc2 = 1.0 - pow(b2, <double>step)
    c.eps = h.eps
    c.c_grad = -h.lr * (1.0 - mu) / d1
    c.c_avg = (-h.lr * mu_next) / d2
    return 0


cdef inline void nadam_loop(const nadam_c* c, double grad_mul, real* p, const real* g, real* m,
                            real* v, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef real wd = <real>c.weight_decay, gmul = <real>grad_mul, decay = <real>c.decay
    cdef real w = <real>c.w, omw = <real>c.one_minus_w
    cdef real b2 = <real>c.beta2, omb2 = <real>c.one_minus_beta2
    cdef real bc2 = <real>c.bc2, eps = <real>c.eps
    cdef real c_grad = <real>c.c_grad, c_avg = <real>c.c_avg
    cdef bint l2 = c.l2, low = c.low
    cdef real gi, pi, mi, vi, denom
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
        denom = _sqrt(vi / bc2) + eps
        pi = pi + c_grad * gi / denom
        p[i] = pi + c_avg * mi / denom
