# Rprop (torch.optim.Rprop's rule): per-element step sizes that grow by etaplus while the
# gradient keeps its sign and shrink by etaminus when it flips; the param moves by the
# step size against the gradient's sign, and not at all on a flip.
# States: prev (s[0], the last step's gradient), step_size (s[1], the classes fill it with lr).

cdef struct rprop_c:
    double etaminus, etaplus
    double step_min, step_max
    # 1.0, read from here: with a literal 1 in the loop's first select GCC 12 gives up
    # if-converting it (the loop then does not vectorise)
    double one


cdef inline int rprop_check(const rprop_hp* h) except -1:
    # torch.optim.Rprop's check (its ValueError reads "Invalid eta values")
    if not (0.0 < h.etas[0] < 1.0 < h.etas[1]):
        raise ValueError(f"Invalid etas: {(h.etas[0], h.etas[1])!r} (must satisfy "
                         f"0 < etaminus < 1 < etaplus)")
    return 0


cdef inline int rprop_prepare(rprop_c* c, const rprop_hp* h,
                             Py_ssize_t step) except -1:
    c.etaminus = h.etas[0]
    c.etaplus = h.etas[1]
    c.step_min = h.step_sizes[0]
    c.step_max = h.step_sizes[1]
    c.one = 1.0
    return 0


cdef inline void rprop_loop(const rprop_c* c, double grad_mul, real* p, const real* g,
                            real* prev, real* size, Py_ssize_t lo,
                            Py_ssize_t hi) noexcept nogil:
    cdef real gmul = <real>grad_mul
    cdef real etaminus = <real>c.etaminus, etaplus = <real>c.etaplus
    cdef real smin = <real>c.step_min, smax = <real>c.step_max, one = <real>c.one
    cdef real gi, prod, eta, s, sgn
    cdef Py_ssize_t i
    for i in range(lo, hi):
        gi = gmul * g[i]
        prod = gi * prev[i]
        # eta by sign(g*prev): etaplus, etaminus or 1, and 1 for a NaN (torch's sign(NaN)
        # is 0 on the CPU). Selects, so that the loop vectorises.
        eta = etaminus if prod < 0 else one
        eta = etaplus if prod > 0 else eta
        # np.clip / torch's clamp: max with step_min first, then min with step_max; an
        # equal value and a NaN stay
        s = size[i] * eta
        s = smin if s < smin else s
        s = smax if s > smax else s
        size[i] = s
        # no move on a sign flip, and the gradient remembered as 0
        gi = <real>0 if eta == etaminus else gi
        # torch's sign: +0 for +-0 and for NaN, so a NaN gradient element moves nothing
        # (it is remembered in prev, as torch.optim.Rprop does)
        sgn = <real>(gi > 0) - <real>(gi < 0)
        p[i] = p[i] - sgn * s
        prev[i] = gi
