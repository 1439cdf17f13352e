# fastadam's compiled core: validation, SIMD dispatch, threads, the functional kernels and
# the multi-tensor plan the optimizer classes run on. The parts are split into .pxi files
# by concern; they are one extension module so that a call crosses no module boundary.

cimport numpy as cnp
import numpy as np
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.long cimport PyLong_AsSsize_t
from cpython.number cimport PyNumber_Check
from cpython.ref cimport PyObject
from cpython.pycapsule cimport PyCapsule_GetPointer
from libc.math cimport NAN, isfinite, pow, sqrt
from libc.stdlib cimport free, malloc, qsort
from libc.string cimport memcmp

from fastadam._kernels cimport (
    F32, F64, Hyper, K_ADAM, K_PROBE, K_RMSPROP, K_SGD, KernelTable, Seg, SUMSQ_LANES,
    kernel_fn, sumsq_fn,
)

cnp.import_array()

include "_dispatch.pxi"
include "_validate.pxi"
include "_functional.pxi"
include "_plan.pxi"

# Kernel ids for the optimizer classes (fastadam/optim.py).
KERNEL_SGD, KERNEL_RMSPROP, KERNEL_ADAM = K_SGD, K_RMSPROP, K_ADAM
