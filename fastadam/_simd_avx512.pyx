# The kernels compiled for the avx512 instruction set (flags in setup.py).
include "_kernels.pxi"
