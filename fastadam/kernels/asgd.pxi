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


cdef inline void asgd_loop(const asgd_c* c, double grad_mul, real* p, const real* g, real* ax,
                           Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef real wd = <real>c.weight_decay, gmul = <real>grad_mul, decay = <real>c.decay
    cdef real neg_eta = <real>c.neg_eta, mu = <real>c.mu
    cdef bint l2 = c.l2, average = c.average
    cdef real gi, pi, ai
    cdef Py_ssize_t i
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
