# The kernels compiled for the avx2 instruction set (flags in setup.py).
include "_kernels.pxi"
