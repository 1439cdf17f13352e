# SGD with momentum, dampening and Nesterov momentum (torch.optim.SGD's rule).
# States: momentum_buffer (s[0]).

cdef struct sgd_c:
    double lr
    double weight_decay      # L2 term added to the gradient
    double momentum, one_minus_dampening
    bint l2                  # weight_decay != 0
    bint use_momentum        # momentum != 0
    bint first_step          # momentum_buffer = grad instead of the running average
    bint nesterov


cdef inline int sgd_check(const sgd_hp* h) except -1:
    if h.nesterov and (h.momentum <= 0.0 or h.dampening != 0.0):
        raise ValueError("Invalid nesterov: nesterov=True requires momentum > 0 and "
                         "dampening == 0")
    return 0


cdef inline int sgd_prepare(sgd_c* c, const sgd_hp* h,
                           Py_ssize_t step) except -1:
    c.lr = h.lr
    c.l2 = h.weight_decay != 0.0
    c.weight_decay = h.weight_decay if c.l2 else 0.0
    c.momentum = h.momentum
    c.one_minus_dampening = 1.0 - h.dampening
    c.use_momentum = h.momentum != 0.0
    c.first_step = step == 1
    c.nesterov = h.nesterov
    return 0


cdef inline void sgd_loop(const sgd_c* c, double grad_mul, real* p, const real* g,
                          real* buf, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef real lr = <real>c.lr, wd = <real>c.weight_decay, gmul = <real>grad_mul
    cdef real mom = <real>c.momentum, omd = <real>c.one_minus_dampening
    cdef bint l2 = c.l2, use_mom = c.use_momentum, first = c.first_step, nesterov = c.nesterov
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
