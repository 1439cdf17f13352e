# The functional API: validate, then one fused pass over memory with the GIL released.


cdef inline int _run1(int kernel, int dtype, const Hyper* h, const Seg* s) except -1:
    with nogil:
        _run(kernel, dtype, h, s, 1, s.n)
    return 0


def sgd_(param, grad, *, momentum_buffer=None, lr=1e-3, momentum=0.0, dampening=0.0,
         nesterov=False, weight_decay=0.0, maximize=False, step=None):
    """One SGD step, in place.

    ``g = -grad if maximize else grad``; ``g += weight_decay * param``;
    with momentum: ``buf = g`` at ``step=1``, else ``buf = momentum*buf + (1-dampening)*g``,
    then ``d = g + momentum*buf`` (nesterov) or ``d = buf``; without: ``d = g``;
    ``param -= lr * d``.

    ``momentum_buffer`` is required when ``momentum != 0``. ``step`` (1-based, optional)
    only matters for momentum: at step 1 the buffer is set to the gradient, as torch.optim
    does; otherwise it is treated as a running average (a zero buffer then gives the same
    result when dampening is 0).
    """
    cdef Hyper h
    cdef Seg s
    cdef bint first = step is not None and _step(step) == 1
    _sgd_hyper(&h, lr, momentum, dampening, nesterov, weight_decay, maximize, first)
    if h.use_momentum and momentum_buffer is None:
        raise ValueError("Invalid momentum_buffer: required when momentum != 0, got None")
    dtype = _check_tensor(&s, REQ_GRAD, param, grad, momentum_buffer, "momentum_buffer",
                          None, "", None, "")
    _run1(K_SGD, dtype, &h, &s)


def rmsprop_(param, grad, square_avg, *, momentum_buffer=None, grad_avg=None, lr=1e-2,
             alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False,
             maximize=False):
    """One RMSprop step, in place.

    ``g = -grad if maximize else grad``; ``g += weight_decay * param``;
    ``square_avg = alpha*square_avg + (1-alpha)*g*g``;
    centered: ``grad_avg = alpha*grad_avg + (1-alpha)*g``,
    ``avg = sqrt(square_avg - grad_avg**2) + eps``; else ``avg = sqrt(square_avg) + eps``;
    with momentum: ``buf = momentum*buf + g/avg``, ``param -= lr*buf``;
    without: ``param -= lr*g/avg``.

    ``momentum_buffer`` is required when ``momentum != 0``, ``grad_avg`` when ``centered``.
    """
    cdef Hyper h
    cdef Seg s
    _rmsprop_hyper(&h, lr, alpha, eps, weight_decay, momentum, centered, maximize)
    if h.use_momentum and momentum_buffer is None:
        raise ValueError("Invalid momentum_buffer: required when momentum != 0, got None")
    if h.centered and grad_avg is None:
        raise ValueError("Invalid grad_avg: required when centered=True, got None")
    dtype = _check_tensor(&s, REQ_GRAD | REQ_S0, param, grad, square_avg, "square_avg",
                          momentum_buffer, "momentum_buffer", grad_avg, "grad_avg")
    _run1(K_RMSPROP, dtype, &h, &s)


cdef int _adam(param, grad, exp_avg, exp_avg_sq, step, lr, betas, eps, weight_decay,
               amsgrad, max_exp_avg_sq, maximize, bias_correction, bint decoupled) except -1:
    cdef Hyper h
    cdef Seg s
    _adam_hyper(&h, step, lr, betas, eps, weight_decay, amsgrad, maximize, bias_correction,
                decoupled)
    if h.amsgrad and max_exp_avg_sq is None:
        raise ValueError("Invalid max_exp_avg_sq: required when amsgrad=True, got None")
    dtype = _check_tensor(&s, REQ_GRAD | REQ_S0 | REQ_S1, param, grad, exp_avg, "exp_avg",
                          exp_avg_sq, "exp_avg_sq", max_exp_avg_sq, "max_exp_avg_sq")
    return _run1(K_ADAM, dtype, &h, &s)


def adam_(param, grad, exp_avg, exp_avg_sq, *, step, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
          weight_decay=0.0, amsgrad=False, max_exp_avg_sq=None, maximize=False,
          bias_correction=True, decoupled_weight_decay=False):
    """One Adam step (AdamW with ``decoupled_weight_decay=True``), in place.

    ``g = -grad if maximize else grad``; weight decay: ``g += weight_decay*param`` (L2) or
    ``param *= 1 - lr*weight_decay`` (decoupled);
    ``exp_avg = b1*exp_avg + (1-b1)*g``; ``exp_avg_sq = b2*exp_avg_sq + (1-b2)*g*g``;
    ``bc1 = 1 - b1**step``, ``bc2 = 1 - b2**step`` (1 without bias correction);
    amsgrad: ``max_exp_avg_sq = maximum(max_exp_avg_sq, exp_avg_sq)`` replaces exp_avg_sq in
    ``param -= (lr/bc1) * exp_avg / (sqrt(exp_avg_sq)/sqrt(bc2) + eps)``.

    ``step`` is the 1-based number of this step; ``max_exp_avg_sq`` is required with amsgrad.
    """
    _adam(param, grad, exp_avg, exp_avg_sq, step, lr, betas, eps, weight_decay, amsgrad,
          max_exp_avg_sq, maximize, bias_correction,
          _flag(decoupled_weight_decay, "decoupled_weight_decay"))


def adamw_(param, grad, exp_avg, exp_avg_sq, *, step, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
           weight_decay=1e-2, amsgrad=False, max_exp_avg_sq=None, maximize=False,
           bias_correction=True):
    """One AdamW step, in place: :func:`adam_` with ``decoupled_weight_decay=True`` and
    weight_decay 1e-2.

    ``g = -grad if maximize else grad``; ``param *= 1 - lr*weight_decay``;
    ``exp_avg = b1*exp_avg + (1-b1)*g``; ``exp_avg_sq = b2*exp_avg_sq + (1-b2)*g*g``;
    ``bc1 = 1 - b1**step``, ``bc2 = 1 - b2**step`` (1 without bias correction); amsgrad:
    ``max_exp_avg_sq = maximum(max_exp_avg_sq, exp_avg_sq)`` replaces exp_avg_sq in
    ``param -= (lr/bc1) * exp_avg / (sqrt(exp_avg_sq)/sqrt(bc2) + eps)``."""
    _adam(param, grad, exp_avg, exp_avg_sq, step, lr, betas, eps, weight_decay, amsgrad,
          max_exp_avg_sq, maximize, bias_correction, True)


def roofline_(param, grad, exp_avg, exp_avg_sq):
    """The bandwidth probe: Adam's memory traffic with trivial arithmetic,
    ``param += grad``, ``exp_avg += grad``, ``exp_avg_sq += grad`` (reads all four arrays,
    writes three), compiled like the kernels. Benchmarks divide by its time; the values it
    leaves are meaningless."""
    cdef Hyper h
    cdef Seg s
    dtype = _check_tensor(&s, REQ_GRAD | REQ_S0 | REQ_S1, param, grad, exp_avg, "exp_avg",
                          exp_avg_sq, "exp_avg_sq", None, "")
    _run1(K_PROBE, dtype, &h, &s)


def check_param(obj, name="param"):
    """Raise the TypeError/ValueError a step would raise if ``obj`` cannot be a param."""
    _check_array(obj, name, None, True)
