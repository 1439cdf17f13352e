# Shared by every kernel file: the fused storage type and the exact square root.
# Included (with the kernel files) by the SIMD modules, which compile the loops, and by
# _core, which runs each kernel's ``prepare``.

from libc.math cimport pow, sqrt, sqrtf

ctypedef fused real:
    float
    double


cdef inline real _sqrt(real x) noexcept nogil:
    if real is float:
        return sqrtf(x)
    else:
        return sqrt(x)
