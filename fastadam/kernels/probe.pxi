# The bandwidth probe (fastadam._core.roofline_): Adam's memory traffic (read p, g, m, v;
# write p, m, v) with one add per stream, the roofline the benchmark compares every kernel
# with. No constants.
# States: exp_avg (s[0]), exp_avg_sq (s[1]), copy_words (s[2], with offload).
#
# The 16-bit layouts move 16-bit words with integer adds and no conversion, so that a
# mixed-dtype step (fastadam/_kernels.pxi.tp's block converter) is set against a pure memory
# pass over the same streams: a ``real`` array passed as 16-bit words is accessed over the
# first 2*n bytes only (element i is word i), so the caller passes arrays at least that big
# and the probe's traffic is that of the 16-bit arrays it stands for.
#   half_states: exp_avg and exp_avg_sq are 16-bit words (float32 params, 16-bit states);
#   offload: grad is 16-bit words, read, and copy_words 16-bit words, written only (a
#   float32 step with a 16-bit grad and a 16-bit param_copy).
# The 8-bit layout stands for a step with 8-bit block-wise states (fastadam/quant.py):
#   byte_states: exp_avg and exp_avg_sq are bytes over the first n bytes of each array, read
#   and written (+1, no conversion); copy_words holds their float32 block scales, words 2b
#   and 2b+1 for block b (256 elements), read and written (+1) by the part in which the
#   block starts, so that parts never share a word.

cdef struct probe_c:
    bint half_states
    bint offload
    bint byte_states


cdef inline int probe_prepare(probe_c* c, const probe_hp* h,
                             Py_ssize_t step) except -1:
    if h.byte_states and (h.half_states or h.offload):
        raise ValueError("Invalid byte_states: not with half_states or offload")
    c.half_states = h.half_states
    c.offload = h.offload
    c.byte_states = h.byte_states
    return 0


cdef inline void probe_loop(const probe_c* c, double grad_mul, real* p, const real* g,
                            real* m, real* v, real* copy, Py_ssize_t lo,
                            Py_ssize_t hi) noexcept nogil:
    cdef real gi
    cdef uint16_t wi
    cdef Py_ssize_t i
    cdef const uint16_t* g16 = <const uint16_t*>g
    cdef uint16_t* m16 = <uint16_t*>m
    cdef uint16_t* v16 = <uint16_t*>v
    cdef uint16_t* c16 = <uint16_t*>copy
    cdef uint8_t* m8 = <uint8_t*>m
    cdef uint8_t* v8 = <uint8_t*>v
    cdef float* scale = <float*>copy
    if c.byte_states:
        for i in range(lo, hi):
            gi = g[i]
            p[i] = p[i] + gi
            m8[i] = m8[i] + 1
            v8[i] = v8[i] + 1
        # the blocks that start in [lo, hi)
        for i in range((lo + 255) >> 8, (hi + 255) >> 8):
            scale[2 * i] = scale[2 * i] + 1
            scale[2 * i + 1] = scale[2 * i + 1] + 1
    elif c.offload:
        for i in range(lo, hi):
            wi = g16[i]
            c16[i] = wi
            p[i] = p[i] + 1
            m[i] = m[i] + 1
            v[i] = v[i] + 1
    elif c.half_states:
        for i in range(lo, hi):
            gi = g[i]
            wi = <uint16_t>gi
            p[i] = p[i] + gi
            m16[i] = m16[i] + wi
            v16[i] = v16[i] + wi
    else:
        for i in range(lo, hi):
            gi = g[i]
            p[i] = p[i] + gi
            m[i] = m[i] + gi
            v[i] = v[i] + gi
