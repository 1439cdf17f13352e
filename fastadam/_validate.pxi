# The one place that validates. Everything is checked before any kernel writes: arrays
# (type, dtype, byte order, layout, alignment, writability, shape, overlap) and scalars
# (type and range). Messages start with what was wrong and name the argument.

cdef inline str _shape(cnp.ndarray a):
    return str((<object>a).shape)


cdef int _check_array(object obj, str name, cnp.ndarray param, bint writable) except -1:
    """Check one array against its param (or, when ``param`` is None, as the param)."""
    cdef cnp.ndarray a
    cdef int t
    if not cnp.PyArray_Check(obj):
        raise TypeError(f"Invalid {name}: expected a numpy.ndarray, got {type(obj).__name__}")
    a = <cnp.ndarray>obj
    t = cnp.PyArray_TYPE(a)
    if param is None:
        if (t != cnp.NPY_FLOAT32 and t != cnp.NPY_FLOAT64) or not cnp.PyArray_ISNOTSWAPPED(a):
            raise TypeError(f"Invalid {name} dtype: expected float32 or float64 in native "
                            f"byte order, got {a.dtype.str} ({a.dtype})")
    elif t != cnp.PyArray_TYPE(param) or not cnp.PyArray_ISNOTSWAPPED(a):
        raise TypeError(f"Invalid {name} dtype: expected {param.dtype} (the param's), "
                        f"got {a.dtype.str} ({a.dtype})")
    if not cnp.PyArray_CHKFLAGS(a, cnp.NPY_ARRAY_C_CONTIGUOUS):
        raise ValueError(f"Invalid {name}: not C-contiguous (copy it with np.ascontiguousarray; "
                         f"a copy would not be updated in place)")
    if not cnp.PyArray_ISALIGNED(a):
        raise ValueError(f"Invalid {name}: its data is not aligned to its itemsize")
    if writable and not cnp.PyArray_ISWRITEABLE(a):
        raise ValueError(f"Invalid {name}: read-only, but it is updated in place")
    # (A 0-d array's dims pointer may be NULL: memcmp must not see it, even for 0 bytes.)
    if param is not None and (
            cnp.PyArray_NDIM(a) != cnp.PyArray_NDIM(param)
            or (cnp.PyArray_NDIM(a) > 0
                and memcmp(cnp.PyArray_DIMS(a), cnp.PyArray_DIMS(param),
                           cnp.PyArray_NDIM(a) * sizeof(cnp.npy_intp)) != 0)):
        raise ValueError(f"Invalid {name} shape: expected {_shape(param)} (the param's), "
                         f"got {_shape(a)}")
    return 0


cdef inline bint _overlap(const char* a, Py_ssize_t na, const char* b, Py_ssize_t nb) noexcept:
    # C-contiguous arrays cover exactly [data, data + nbytes).
    return na > 0 and nb > 0 and a < b + nb and b < a + na


# Which of a tensor's arrays must be given (the others may be None: absent).
cdef enum:
    REQ_GRAD = 1
    REQ_S0 = 2
    REQ_S1 = 4


cdef int _check_tensor(Seg* s, int required, object param, object grad, object s0, str name0,
                       object s1, str name1, object s2, str name2) except -1:
    """Validate one tensor's param, grad and states and fill ``s``.

    An array not in ``required`` may be None (absent: a NULL pointer the kernel's options
    never touch; a plan checks its params and states before any grad exists).

    Returns the dtype code (F32/F64). Checks every array, then that no two share memory.
    """
    cdef char* data[5]
    cdef Py_ssize_t nbytes[5]
    cdef int i, j
    _check_array(param, "param", None, True)
    if grad is not None or required & REQ_GRAD:
        _check_array(grad, "grad", param, False)
    if s0 is not None or required & REQ_S0:
        _check_array(s0, name0, param, True)
    if s1 is not None or required & REQ_S1:
        _check_array(s1, name1, param, True)
    if s2 is not None:
        _check_array(s2, name2, param, True)
    s.p = cnp.PyArray_DATA(param)
    s.g = cnp.PyArray_DATA(grad) if grad is not None else NULL
    s.s0 = cnp.PyArray_DATA(s0) if s0 is not None else NULL
    s.s1 = cnp.PyArray_DATA(s1) if s1 is not None else NULL
    s.s2 = cnp.PyArray_DATA(s2) if s2 is not None else NULL
    s.n = cnp.PyArray_SIZE(param)
    # Every array has the param's size and dtype, so all span the same number of bytes.
    nbytes[0] = cnp.PyArray_NBYTES(param)
    data[0] = <char*>s.p
    data[1] = <char*>s.g
    data[2] = <char*>s.s0
    data[3] = <char*>s.s1
    data[4] = <char*>s.s2
    for i in range(5):
        nbytes[i] = nbytes[0] if data[i] != NULL else 0
    for i in range(5):
        for j in range(i + 1, 5):
            if _overlap(data[i], nbytes[i], data[j], nbytes[j]):
                names = ("param", "grad", name0, name1, name2)
                raise ValueError(f"Invalid {names[j]}: it shares memory with {names[i]}; "
                                 f"every array must be a separate buffer")
    return F32 if cnp.PyArray_TYPE(param) == cnp.NPY_FLOAT32 else F64


# ---------------------------------------------------------------------------- scalars

cdef double _real(object x, str name) except? -1.0:
    """A Python/NumPy real number as a double; TypeError naming ``name`` otherwise."""
    if type(x) is float:
        return PyFloat_AS_DOUBLE(x)
    if (isinstance(x, (bool, np.bool_, complex, np.complexfloating))
            or not PyNumber_Check(x)):
        raise TypeError(f"Invalid {name}: expected a real number, got {type(x).__name__}")
    try:
        return float(x)
    except OverflowError:
        raise ValueError(f"Invalid {name}: {x!r} (too large)") from None
    except (TypeError, ValueError):
        raise TypeError(f"Invalid {name}: expected a real number, got {x!r}") from None


def check_flag(x, name):
    """An on/off option as a bool; TypeError naming ``name`` if it has no truth value."""
    return _flag(x, name)


def check_nonneg(x, name):
    """A finite real number >= 0 as a float; TypeError/ValueError naming ``name``."""
    return _nonneg(x, name)


cdef bint _flag(object x, str name) except -1:
    """An on/off option: a bool or anything with an unambiguous truth value."""
    if x is True or x is False:
        return x is True
    try:
        return bool(x)
    except (TypeError, ValueError):
        raise TypeError(f"Invalid {name}: expected a bool, got {type(x).__name__}") from None


cdef double _nonneg(object x, str name) except? -1.0:
    cdef double v = _real(x, name)
    if not (isfinite(v) and v >= 0.0):
        raise ValueError(f"Invalid {name}: {x!r} (must be a finite number >= 0)")
    return v


cdef double _finite(object x, str name) except? -1.0:
    cdef double v = _real(x, name)
    if not isfinite(v):
        raise ValueError(f"Invalid {name}: {x!r} (must be finite)")
    return v


cdef double _positive(object x, str name) except? -1.0:
    cdef double v = _real(x, name)
    if not (isfinite(v) and v > 0.0):
        raise ValueError(f"Invalid {name}: {x!r} (must be a finite number > 0)")
    return v


cdef double _unit(object x, str name) except? -1.0:
    cdef double v = _real(x, name)
    if not (0.0 <= v < 1.0):
        raise ValueError(f"Invalid {name}: {x!r} (must be in [0, 1))")
    return v


cdef Py_ssize_t _step(object x) except -1:
    cdef Py_ssize_t t
    if isinstance(x, bool) or not (type(x) is int or hasattr(x, "__index__")):
        raise TypeError(f"Invalid step: expected an int, got {type(x).__name__}")
    try:
        t = PyLong_AsSsize_t(x if type(x) is int else x.__index__())
    except OverflowError:
        raise ValueError(f"Invalid step: {x!r} (too large)") from None
    except TypeError:       # an __index__ that refuses: np.array([3]), say
        raise TypeError(f"Invalid step: expected an int, got {type(x).__name__}") from None
    if t < 1:
        raise ValueError(f"Invalid step: {x!r} (must be >= 1; the first step is 1)")
    return t


# ---------------------------------------------------------------------------- hyperparameters
# Each builder validates one optimizer's scalars and turns them into the kernel's Hyper.

cdef void _common(Hyper* h, double lr, double wd, bint maximize, bint decoupled) noexcept:
    h.lr = lr
    h.grad_mul = -1.0 if maximize else 1.0
    h.l2 = wd != 0.0 and not decoupled
    h.weight_decay = wd if h.l2 else 0.0
    h.decay = 1.0 - lr * wd if decoupled else 1.0


cdef int _sgd_hyper(Hyper* h, object lr, object momentum, object dampening, object nesterov_,
                    object weight_decay, object maximize, bint first_step) except -1:
    cdef double mom = _nonneg(momentum, "momentum"), damp = _finite(dampening, "dampening")
    cdef bint nesterov = _flag(nesterov_, "nesterov")
    if nesterov and (mom <= 0.0 or damp != 0.0):
        raise ValueError("Invalid nesterov: nesterov=True requires momentum > 0 and "
                         "dampening == 0")
    _common(h, _nonneg(lr, "lr"), _nonneg(weight_decay, "weight_decay"),
            _flag(maximize, "maximize"), False)
    h.momentum = mom
    h.one_minus_dampening = 1.0 - damp
    h.use_momentum = mom != 0.0
    h.nesterov = nesterov
    h.first_step = first_step
    return 0


cdef int _rmsprop_hyper(Hyper* h, object lr, object alpha, object eps, object weight_decay,
                        object momentum, object centered, object maximize) except -1:
    cdef double a = _nonneg(alpha, "alpha"), mom = _nonneg(momentum, "momentum")
    _common(h, _nonneg(lr, "lr"), _nonneg(weight_decay, "weight_decay"),
            _flag(maximize, "maximize"), False)
    h.alpha = a
    h.one_minus_alpha = 1.0 - a
    h.eps = _positive(eps, "eps")
    h.momentum = mom
    h.use_momentum = mom != 0.0
    h.centered = _flag(centered, "centered")
    return 0


cdef int _adam_hyper(Hyper* h, object step, object lr, object betas, object eps,
                     object weight_decay, object amsgrad, object maximize,
                     object bias_correction, bint decoupled) except -1:
    cdef double b1, b2, bc1 = 1.0, bc2 = 1.0, rate
    cdef Py_ssize_t t = _step(step)
    if type(betas) is not tuple and type(betas) is not list or len(betas) != 2:
        raise TypeError(f"Invalid betas: expected a pair (beta1, beta2), got {betas!r}")
    b1 = _unit(betas[0], "betas[0]")
    b2 = _unit(betas[1], "betas[1]")
    rate = _nonneg(lr, "lr")
    _common(h, rate, _nonneg(weight_decay, "weight_decay"), _flag(maximize, "maximize"),
            decoupled)
    if _flag(bias_correction, "bias_correction"):
        bc1 = 1.0 - pow(b1, <double>t)
        bc2 = 1.0 - pow(b2, <double>t)
        if bc1 == 0.0 or bc2 == 0.0:   # a beta of 0 never makes this 0; a tiny t*(1-b) does
            raise ValueError(f"Invalid betas/step: bias correction 1 - beta**step is 0 for "
                             f"betas={betas!r}, step={t}")
    h.beta1 = b1
    h.one_minus_beta1 = 1.0 - b1
    h.beta2 = b2
    h.one_minus_beta2 = 1.0 - b2
    h.step_size = rate / bc1
    h.inv_sqrt_bc2 = 1.0 / sqrt(bc2)
    h.eps = _positive(eps, "eps")
    h.amsgrad = _flag(amsgrad, "amsgrad")
    return 0


# ---------------------------------------------------------------------------- gradient policy
# What an optimizer step does with its gradients before the update (fastadam/_plan.pxi).

cdef enum:
    NONFINITE_PROPAGATE = 0     # no check: NaN and inf flow into the update, as in torch
    NONFINITE_SKIP = 1          # any NaN/inf grad element: change nothing, report False
    NONFINITE_RAISE = 2         # any NaN/inf grad element: change nothing, FloatingPointError

NONFINITE_MODES = ("propagate", "skip", "raise")


cdef struct GradPolicy:
    int nonfinite
    double max_norm             # global 2-norm clipping threshold; 0: no clipping
    double scale                # the loss scale the grads are divided by; 1: none


cdef int _grad_policy(GradPolicy* pol, object nonfinite, object max_grad_norm,
                      object grad_scale) except -1:
    if type(nonfinite) is not str:
        raise TypeError(f"Invalid nonfinite: expected one of {NONFINITE_MODES}, got "
                        f"{type(nonfinite).__name__}")
    if nonfinite not in NONFINITE_MODES:
        raise ValueError(f"Invalid nonfinite: {nonfinite!r} (expected one of "
                         f"{NONFINITE_MODES})")
    pol.nonfinite = NONFINITE_MODES.index(nonfinite)
    pol.max_norm = 0.0 if max_grad_norm is None else _positive(max_grad_norm, "max_grad_norm")
    pol.scale = 1.0 if grad_scale is None else _positive(grad_scale, "grad_scale")
    return 0
