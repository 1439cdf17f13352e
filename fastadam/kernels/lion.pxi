# Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"):
# c = b1*m + (1-b1)*g; p = p*(1 - lr*wd) - lr*sign(c); m = b2*m + (1-b2)*g.
# sign(0) = 0 and a NaN propagates, as np.sign. States: exp_avg (s[0]).

cdef struct lion_c:
    double lr
    double decay             # p *= decay first: 1 - lr*weight_decay
    double beta1, one_minus_beta1, beta2, one_minus_beta2


cdef inline int lion_prepare(lion_c* c, const lion_hp* h, Py_ssize_t step) except -1:
    c.lr = h.lr
    c.decay = 1.0 - h.lr * h.weight_decay
    c.beta1 = h.betas[0]
    c.one_minus_beta1 = 1.0 - h.betas[0]
    c.beta2 = h.betas[1]
    c.one_minus_beta2 = 1.0 - h.betas[1]
    return 0


cdef inline void lion_loop(const lion_c* c, double grad_mul, real* p, const real* g, real* m,
                           Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef real lr = <real>c.lr, decay = <real>c.decay, gmul = <real>grad_mul
    cdef real b1 = <real>c.beta1, omb1 = <real>c.one_minus_beta1
    cdef real b2 = <real>c.beta2, omb2 = <real>c.one_minus_beta2
    cdef real gi, mi, ci, si
    cdef Py_ssize_t i
    for i in range(lo, hi):
        gi = gmul * g[i]
        mi = m[i]
        ci = b1 * mi + omb1 * gi
        # sign(c) as selects the compiler vectorises: +0 for +-0, c itself for NaN
        si = <real>(ci > 0) - <real>(ci < 0)
        if ci != ci:
            si = ci
        p[i] = p[i] * decay - lr * si
        m[i] = b2 * mi + omb2 * gi
