# fastadam's compiled core: validation, SIMD dispatch, threads, the functional kernels and
# the multi-tensor plan the optimizer classes run on. The parts are split into .pxi files
# by concern; they are one extension module so that a call crosses no module boundary.
# _optimizers.pxi (every optimizer's validation, ``prepare`` and functional wrapper) is
# generated from fastadam/_registry.py by fastadam/_generate.py.

cimport numpy as cnp
import numpy as np
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.long cimport PyLong_AsSsize_t
from cpython.number cimport PyNumber_Check
from cpython.ref cimport PyObject
from cpython.pycapsule cimport PyCapsule_GetPointer
from libc.math cimport NAN, isfinite, pow, sqrt
from libc.stdlib cimport calloc, free, malloc, qsort
from libc.string cimport memcmp

from fastadam._kernels cimport *

from fastadam.quant import (QuantizedState as _QuantizedState, bucket_table as _bucket_table,
                            kernel_words as _kernel_words)

cnp.import_array()

include "_dispatch.pxi"
include "_validate.pxi"
include "_optimizers.pxi"
include "_plan.pxi"
