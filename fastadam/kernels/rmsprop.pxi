# RMSprop, optionally centered and with momentum (torch.optim.RMSprop's rule).
# States: square_avg (s[0]), momentum_buffer (s[1]), grad_avg (s[2]).

cdef struct rmsprop_c:
    double lr
    double weight_decay      # L2 term added to the gradient
    double alpha, one_minus_alpha, eps, momentum
    bint l2                  # weight_decay != 0
    bint centered
    bint use_momentum        # momentum != 0


cdef inline int rmsprop_prepare(rmsprop_c* c, const rmsprop_hp* h,
                               Py_ssize_t step) except -1:
    c.lr = h.lr
    c.l2 = h.weight_decay != 0.0
    c.weight_decay = h.weight_decay if c.l2 else 0.0
    c.alpha = h.alpha
    c.one_minus_alpha = 1.0 - h.alpha
    c.eps = h.eps
    c.momentum = h.momentum
    c.use_momentum = h.momentum != 0.0
    c.centered = h.centered
    return 0


cdef inline void _rmsprop_loop(const rmsprop_c* c, double grad_mul, real* p, const real* g,
                               real* sq, real* buf, real* gavg, Py_ssize_t lo, Py_ssize_t hi,
                               const bint centered, const bint use_mom) noexcept nogil:
    cdef real lr = <real>c.lr, wd = <real>c.weight_decay, gmul = <real>grad_mul
    cdef real alpha = <real>c.alpha, oma = <real>c.one_minus_alpha, eps = <real>c.eps
    cdef real mom = <real>c.momentum
    cdef bint l2 = c.l2
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


cdef inline void rmsprop_loop(const rmsprop_c* c, double grad_mul, real* p, const real* g,
                              real* sq, real* buf, real* gavg, Py_ssize_t lo,
                              Py_ssize_t hi) noexcept nogil:
    # Too big a loop for the compiler to unswitch all of its options itself: pass two of
    # them as constants, one specialised copy each.
    if c.centered:
        if c.use_momentum:
            _rmsprop_loop(c, grad_mul, p, g, sq, buf, gavg, lo, hi, True, True)
        else:
            _rmsprop_loop(c, grad_mul, p, g, sq, buf, gavg, lo, hi, True, False)
    elif c.use_momentum:
        _rmsprop_loop(c, grad_mul, p, g, sq, buf, gavg, lo, hi, False, True)
    else:
        _rmsprop_loop(c, grad_mul, p, g, sq, buf, gavg, lo, hi, False, False)
