# Shared by every kernel file: the fused storage type and the exact square root.
# Included (with the kernel files) by the SIMD modules, which compile the loops, and by
# _core, which runs each kernel's ``prepare``.

from libc.math cimport fabs, fabsf, pow, sqrt, sqrtf

ctypedef fused real:
    float
    double


cdef inline real _sqrt(real x) noexcept nogil:
    if real is float:
        return sqrtf(x)
    else:
        return sqrt(x)


cdef inline real _abs(real x) noexcept nogil:
    if real is float:
        return fabsf(x)
    else:
        return fabs(x)


cdef inline real _lerp(real start, real end, real w, real one_minus_w, bint low) noexcept nogil:
    # torch's CPU lerp: from the nearer end, so that a weight of 1 gives ``end`` exactly
    if low:
        return start + w * (end - start)
    return end - (end - start) * one_minus_w
