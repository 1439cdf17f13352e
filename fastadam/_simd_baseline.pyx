# The kernels compiled for the baseline instruction set (flags in setup.py).
include "_kernels.pxi"
