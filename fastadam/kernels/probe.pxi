# The bandwidth probe (fastadam._core.roofline_): Adam's memory traffic (read p, g, m, v;
# write p, m, v) with one add per stream, the roofline the benchmark compares every kernel
# with. No hyperparameters and no constants.
# States: exp_avg (s[0]), exp_avg_sq (s[1]).

cdef struct probe_c:
    char unused             # (a C struct needs a member)


cdef inline int probe_prepare(probe_c* c, const probe_hp* h,
                             Py_ssize_t step) except -1:
    return 0


cdef inline void probe_loop(const probe_c* c, double grad_mul, real* p, const real* g,
                            real* m, real* v, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef real gi
    cdef Py_ssize_t i
    for i in range(lo, hi):
        gi = g[i]
        p[i] = p[i] + gi
        m[i] = m[i] + gi
        v[i] = v[i] + gi
