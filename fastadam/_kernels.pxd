# Shared declarations between the kernel modules (_simd_*) and the dispatcher (_core).

cdef enum:
    F32 = 0
    F64 = 1

# Per-call scalars, computed once in float64 by _core; the float32 kernels round them to
# float32 once per call (as NumPy does with a Python float next to a float32 array).
cdef struct Hyper:
    double lr
    double weight_decay      # L2 term added to the gradient (0 when decoupled)
    double decay             # p *= decay before the update: 1 - lr*wd for AdamW, else 1
    double grad_mul          # every grad element is multiplied by this first: -1 for
                             # maximize, else 1, times the clipping/unscaling factor of
                             # an optimizer step (exactly +-1 when there is none)
    double beta1, one_minus_beta1, beta2, one_minus_beta2
    double step_size         # lr / bc1
    double inv_sqrt_bc2      # 1 / sqrt(bc2)
    double eps
    double momentum, one_minus_dampening
    double alpha, one_minus_alpha
    bint l2                  # weight_decay != 0 and not decoupled
    bint amsgrad
    bint nesterov
    bint centered
    bint use_momentum        # momentum != 0
    bint first_step          # SGD: momentum_buffer = grad instead of the running average

# One tensor: raw pointers to its param, grad and up to three state arrays.
#   SGD:     s0 = momentum_buffer
#   RMSprop: s0 = square_avg, s1 = momentum_buffer, s2 = grad_avg
#   Adam:    s0 = exp_avg,   s1 = exp_avg_sq,      s2 = max_exp_avg_sq
#   probe:   s0, s1 as Adam's (the roofline: Adam's memory traffic, trivial arithmetic)
cdef struct Seg:
    void* p
    const void* g
    void* s0
    void* s1
    void* s2
    Py_ssize_t n

# A kernel updates elements [lo, hi) of one tensor.
ctypedef void (*kernel_fn)(const Hyper* h, const Seg* s, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil

cdef enum:
    K_SGD = 0
    K_RMSPROP = 1
    K_ADAM = 2
    K_PROBE = 3
    N_KERNELS = 4

# The gradient pre-pass (fastadam/src/fa_sumsq.h): adds the squares of g[lo:hi], in
# float64, into acc[0:32], lane by lane: lane k takes the elements lo+k, lo+k+32, ...
# The fixed lanes give the same bits on every SIMD path; the caller fixes the blocks, so
# the thread count does not change them either.
ctypedef void (*sumsq_fn)(const void* g, Py_ssize_t lo, Py_ssize_t hi, double* acc) noexcept nogil

cdef enum:
    SUMSQ_LANES = 32

cdef struct KernelTable:
    kernel_fn fn[4][2]       # [kernel][dtype]
    sumsq_fn sumsq[2]        # [dtype]
