# The one place that validates. Everything is checked before any kernel writes: arrays
# (type, dtype, byte order, layout, alignment, writability, shape, overlap) and scalars
# (type and range). Messages start with what was wrong and name the argument.

cdef inline str _shape(cnp.ndarray a):
    return str((<object>a).shape)


cdef int _dtype_code(int npy_type) noexcept:
    """The storage dtype's code (F32, ..., BF16), -1 for any other type."""
    cdef int d
    for d in range(N_DTYPES):
        if _NPY_TYPES[d] == npy_type:
            return d
    if _NPY_TYPES[BF16] < 0 and npy_type >= 256 and _find_bfloat16():
        return _dtype_code(npy_type)
    return -1


cdef bint _find_bfloat16() noexcept:
    # (256: NPY_USERDEF, the first type number registered at run time.)
    # bfloat16 is a NumPy type that ml_dtypes registers when it is imported; an array of
    # that dtype means it was, so look it up in sys.modules (never import it here).
    import sys
    try:
        _NPY_TYPES[BF16] = np.dtype(sys.modules["ml_dtypes"].bfloat16).num
        return True
    except Exception:
        return False


cdef str _dtype_list(const bint* ok):
    return " or ".join(_DTYPE_NAMES[d] for d in range(N_DTYPES) if ok[d])


cdef int _check_array(object obj, str name, cnp.ndarray param, bint writable,
                      const bint* ok=NULL, str role="") except -1:
    """Check one array against its param (or, when ``param`` is None, as the param).
    Returns its dtype code (F32, ...). ``ok``: the dtype codes allowed (the param dtype's
    row of a MIXING table, for its ``role``: "grads", ...); NULL: the param's dtype only."""
    cdef cnp.ndarray a
    cdef int t, code
    if not cnp.PyArray_Check(obj):
        raise TypeError(f"Invalid {name}: expected a numpy.ndarray, got {type(obj).__name__}")
    a = <cnp.ndarray>obj
    t = cnp.PyArray_TYPE(a)
    code = _dtype_code(t)
    if param is None:
        if code < 0 or not cnp.PyArray_ISNOTSWAPPED(a):
            raise TypeError(f"Invalid {name} dtype: expected {' or '.join(_DTYPE_NAMES)} in "
                            f"native byte order, got {a.dtype.str} ({a.dtype})")
    elif ok == NULL:
        if t != cnp.PyArray_TYPE(param) or not cnp.PyArray_ISNOTSWAPPED(a):
            raise TypeError(f"Invalid {name} dtype: expected {param.dtype} (the param's), "
                            f"got {a.dtype.str} ({a.dtype})")
    elif code < 0 or not ok[code] or not cnp.PyArray_ISNOTSWAPPED(a):
        raise TypeError(f"Invalid {name} dtype: a {param.dtype} param takes {_dtype_list(ok)} "
                        f"{role}, got {a.dtype.str} ({a.dtype})")
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
    return code


cdef inline int _check_grad(object grad, str name, cnp.ndarray param, int pdt) except -1:
    return _check_array(grad, name, param, False, _GRAD_OK[pdt], "grads")


cdef inline int _check_state(object state, str name, cnp.ndarray param, int pdt,
                             int sdt) except -1:
    """A state array: the dtype of the tensor's other states (``sdt``; -1: the first)."""
    cdef int d
    d = _check_array(state, name, param, True, _STATE_OK[pdt], "states")
    if sdt < 0:
        return d
    if d != sdt:
        raise TypeError(f"Invalid {name} dtype: expected {_DTYPE_NAMES[sdt]} (the other "
                        f"states'; a tensor's states share one dtype), got {_DTYPE_NAMES[d]}")
    return d


cdef inline int _check_copy(object copy, str name, cnp.ndarray param, int pdt) except -1:
    cdef bint any_ok = False
    cdef int d
    for d in range(N_DTYPES):
        any_ok = any_ok or _COPY_OK[pdt][d]
    if not any_ok:
        raise TypeError(f"Invalid {name}: a {param.dtype} param has no 16-bit copy (a "
                        f"float32 param may have a bfloat16 or float16 one)")
    return _check_array(copy, name, param, True, _COPY_OK[pdt], "copies")


cdef inline int _seg_class(const Seg* s) noexcept nogil:
    """The way a segment runs: its compute dtype's kernel directly (F32, F64), or through
    the block converter (CONVERT)."""
    if s.pdt == s.gdt and (s.sdt == s.pdt or s.sdt == 255) and s.copy == NULL \
            and s.pdt < N_COMPUTE and not s.stochastic:
        return s.pdt
    return CONVERT


def check_param(obj, name="param"):
    """Raise the TypeError/ValueError a step would raise if ``obj`` cannot be a param."""
    _check_array(obj, name, None, True)


def first_none(items):
    """The index of the first None in a list or tuple, or -1 (a C loop: the classes call it
    every step to see whether some param has no gradient)."""
    cdef Py_ssize_t i
    if type(items) is list:
        for i in range(len(<list>items)):
            if (<list>items)[i] is None:
                return i
        return -1
    if type(items) is tuple:
        for i in range(len(<tuple>items)):
            if (<tuple>items)[i] is None:
                return i
        return -1
    raise TypeError(f"Invalid grads: expected a list or tuple of arrays, got "
                    f"{type(items).__name__}")


cdef inline bint _overlap(const char* a, Py_ssize_t na, const char* b, Py_ssize_t nb) noexcept:
    # C-contiguous arrays cover exactly [data, data + nbytes).
    return na > 0 and nb > 0 and a < b + nb and b < a + na


# Which of a tensor's arrays must be given (the others may be None: absent): the grad, and
# state k as REQ_STATE << k.
cdef enum:
    REQ_GRAD = 1
    REQ_STATE = 2


cdef int _check_aux(object obj, str name, int npy_type, str dtype_name, cnp.ndarray param,
                    Py_ssize_t size, bint writable) except -1:
    """One array of an 8-bit state: ``npy_type`` (``dtype_name``), C-contiguous and aligned,
    writable if ``writable``, and the shape of ``param`` or, when it is None, 1-d of
    ``size`` elements."""
    cdef cnp.ndarray a
    if not cnp.PyArray_Check(obj):
        raise TypeError(f"Invalid {name}: expected a numpy.ndarray, got {type(obj).__name__}")
    a = <cnp.ndarray>obj
    if cnp.PyArray_TYPE(a) != npy_type or not cnp.PyArray_ISNOTSWAPPED(a):
        raise TypeError(f"Invalid {name} dtype: expected {dtype_name}, got {a.dtype.str} "
                        f"({a.dtype})")
    if not cnp.PyArray_CHKFLAGS(a, cnp.NPY_ARRAY_C_CONTIGUOUS) or not cnp.PyArray_ISALIGNED(a):
        raise ValueError(f"Invalid {name}: not C-contiguous and aligned (a copy would not be "
                         f"updated in place)")
    if writable and not cnp.PyArray_ISWRITEABLE(a):
        raise ValueError(f"Invalid {name}: read-only, but it is updated in place")
    if param is not None:
        if cnp.PyArray_NDIM(a) != cnp.PyArray_NDIM(param) or (
                cnp.PyArray_NDIM(a) > 0
                and memcmp(cnp.PyArray_DIMS(a), cnp.PyArray_DIMS(param),
                           cnp.PyArray_NDIM(a) * sizeof(cnp.npy_intp)) != 0):
            raise ValueError(f"Invalid {name} shape: expected {_shape(param)} (the param's), "
                             f"got {_shape(a)}")
    elif cnp.PyArray_NDIM(a) != 1 or cnp.PyArray_SIZE(a) != size:
        raise ValueError(f"Invalid {name} shape: expected ({size},), got {_shape(a)}")
    return 0


cdef int _check_q8(Seg* s, int k, object state, str name, cnp.ndarray p, int pdt) except -1:
    """An 8-bit state (a fastadam.quant.QuantizedState) of param ``p``: point state ``k``
    of ``s`` at its codes, absmax, map and the map's bucket table."""
    cdef Py_ssize_t nb = (cnp.PyArray_SIZE(p) + Q8_BLOCK - 1) // Q8_BLOCK
    if not _STATE8_OK[pdt]:
        raise TypeError(f"Invalid {name}: a {p.dtype} param has no 8-bit states (the kernels "
                        f"compute them in float32: float32, bfloat16 and float16 params may)")
    codes, absmax, qmap = <tuple>state
    _check_aux(codes, name + ".codes", cnp.NPY_UINT8, "uint8", p, 0, True)
    _check_aux(absmax, name + ".absmax", cnp.NPY_FLOAT32, "float32", None, nb, True)
    _check_aux(qmap, name + ".qmap", cnp.NPY_FLOAT32, "float32", None, 256, False)
    try:
        m, table = _bucket_table(qmap)
        words = _kernel_words(m)
    except (TypeError, ValueError) as e:
        raise type(e)(str(e).replace("Invalid qmap", f"Invalid {name}.qmap", 1)) from None
    s.s[k] = cnp.PyArray_DATA(<cnp.ndarray>codes)
    s.absmax[k] = <float*>cnp.PyArray_DATA(<cnp.ndarray>absmax)
    s.qmap[k] = <const float*>cnp.PyArray_DATA(<cnp.ndarray>m)
    s.qtable[k] = <const uint32_t*>cnp.PyArray_DATA(<cnp.ndarray>table)
    s.qwords[k] = cnp.PyArray_DATA(<cnp.ndarray>words)
    return Q8


cdef inline str _kind_name(int d):
    return "8-bit" if d == Q8 else _DTYPE_NAMES[d]


cdef int _check_tensor(Seg* s, int required, object param, object grad, PyObject** states,
                       int nstates, tuple names, object copy=None) except -1:
    """Validate one tensor's param, grad, ``nstates`` states (NULL: not given; their
    ``names``; an array, or a QuantizedState for an 8-bit state) and 16-bit ``copy`` (None:
    none), and fill ``s``.

    An array not in ``required`` may be absent (a NULL pointer the kernel's options never
    touch; a plan checks its params and states before any grad exists).

    Returns the param's dtype code (F32, ...). Checks every array, then that no two share
    memory. Rounding is nearest (see _rounding).
    """
    cdef char* data[3 + 2 * MAX_STATES]
    cdef Py_ssize_t nbytes[3 + 2 * MAX_STATES]
    cdef int i, j, d, n = 3 + 2 * nstates, sdt = -1
    cdef int pdt = _check_array(param, "param", None, True)
    cdef cnp.ndarray p = <cnp.ndarray>param     # checked just now: no more type tests
    s.pdt = s.gdt = pdt
    s.sdt = 255
    s.cdt = 255
    s.stochastic = False
    s.key = 0
    for i in range(MAX_STATES):
        s.s[i] = NULL
        s.absmax[i] = NULL
        s.qmap[i] = NULL
        s.qtable[i] = NULL
        s.qwords[i] = NULL
    if grad is not None or required & REQ_GRAD:
        s.gdt = _check_grad(grad, "grad", p, pdt)
    for i in range(nstates):
        if states[i] != NULL or required & (REQ_STATE << i):
            x = <object>states[i] if states[i] != NULL else None
            if type(x) is _QuantizedState:
                d = _check_q8(s, i, x, names[i], p, pdt)
            else:
                d = _check_state(x, names[i], p, pdt, sdt if sdt != Q8 else -1)
                s.s[i] = cnp.PyArray_DATA(<cnp.ndarray>x)
            if sdt >= 0 and d != sdt:
                raise TypeError(f"Invalid {names[i]}: expected an {_kind_name(sdt)} state (the "
                                f"other states'; a tensor's states are all 8-bit or all one "
                                f"dtype), got {_kind_name(d)}")
            sdt = d
    if sdt >= 0:
        s.sdt = sdt
    if copy is not None:
        s.cdt = _check_copy(copy, "param_copy", p, pdt)
    s.p = cnp.PyArray_DATA(p)
    s.g = cnp.PyArray_DATA(grad) if grad is not None else NULL
    s.copy = cnp.PyArray_DATA(copy) if copy is not None else NULL
    s.n = cnp.PyArray_SIZE(p)
    # Every array has the param's shape; their dtypes, so their byte spans, may differ.
    data[0] = <char*>s.p
    data[1] = <char*>s.g
    data[2] = <char*>s.copy
    nbytes[0] = cnp.PyArray_NBYTES(p)
    nbytes[1] = cnp.PyArray_NBYTES(grad) if grad is not None else 0
    nbytes[2] = cnp.PyArray_NBYTES(copy) if copy is not None else 0
    for i in range(nstates):
        data[3 + i] = <char*>s.s[i]
        nbytes[3 + i] = _nbytes_of(s, s.sdt) if s.s[i] != NULL else 0
        data[3 + nstates + i] = <char*>s.absmax[i]
        nbytes[3 + nstates + i] = _absmax_nbytes(s) if s.absmax[i] != NULL else 0
    for i in range(n):
        for j in range(i + 1, n):
            if data[i] != NULL and data[j] != NULL and _overlap(data[i], nbytes[i], data[j],
                                                                nbytes[j]):
                all_names = ("param", "grad", "param_copy") + names + tuple(
                    f"{x}.absmax" for x in names)
                raise ValueError(f"Invalid {all_names[j]}: it shares memory with "
                                 f"{all_names[i]}; every array must be a separate buffer")
    return pdt


cdef inline Py_ssize_t _nbytes_of(const Seg* s, int dt) noexcept nogil:
    return s.n * (<Py_ssize_t>sizeof(float) if dt == F32 else
                  <Py_ssize_t>sizeof(double) if dt == F64 else
                  1 if dt == Q8 else <Py_ssize_t>sizeof(uint16_t))


cdef inline Py_ssize_t _absmax_nbytes(const Seg* s) noexcept nogil:
    """The bytes of one 8-bit state's absmax array."""
    return (s.n + Q8_BLOCK - 1) // Q8_BLOCK * <Py_ssize_t>sizeof(float)


cdef extern from "fa_half.h":
    uint64_t fa_sr_key(uint64_t seed, uint64_t step, uint64_t tensor) noexcept nogil


cdef bint _stochastic(object rounding) except -1:
    """Whether ``rounding`` (one of ROUNDINGS) is stochastic."""
    if type(rounding) is not str:
        raise TypeError(f"Invalid rounding: expected one of {ROUNDINGS}, got "
                        f"{type(rounding).__name__}")
    if rounding not in ROUNDINGS:
        raise ValueError(f"Invalid rounding: {rounding!r} (expected one of {ROUNDINGS})")
    return rounding == "stochastic"


cdef uint64_t _seed(object seed) except? 0:
    """A seed: an int in [0, 2**64)."""
    if isinstance(seed, bool) or not (type(seed) is int or hasattr(seed, "__index__")):
        raise TypeError(f"Invalid seed: expected an int, got {type(seed).__name__}")
    try:
        v = seed.__index__()
    except TypeError:
        raise TypeError(f"Invalid seed: expected an int, got {type(seed).__name__}") from None
    if not 0 <= v < 2 ** 64:
        raise ValueError(f"Invalid seed: {seed!r} (must be in [0, 2**64))")
    return <uint64_t>v


cdef int _rounding(Seg* s, object rounding, object seed, Py_ssize_t step,
                   Py_ssize_t tensor=0) except -1:
    """Set how a checked segment's 16-bit param is rounded; stochastic rounding draws from
    the generator keyed by (seed, step, tensor)."""
    cdef uint64_t sd = _seed(seed)
    if not _stochastic(rounding):
        return 0
    if s.pdt < N_COMPUTE:
        raise TypeError(f"Invalid rounding: 'stochastic' applies to 16-bit params, and this "
                         f"param is {_DTYPE_NAMES[s.pdt]} (a param_copy is rounded to "
                         f"nearest)")
    s.stochastic = True
    s.key = fa_sr_key(sd, <uint64_t>step, <uint64_t>tensor)
    return 0


# ---------------------------------------------------------------------------- scalar states
# A per-tensor scalar state (the registry's ``scalars``) is a writable 0-d float32 or
# float64 array: read before the call, written after it in its own dtype.

cdef int _read_scalars(ScalarState* sc, tuple arrays, tuple names, str where) except -1:
    """Check each 0-d array of ``arrays`` (``where`` prefixes its name in messages) and
    read its value and dtype into ``sc``."""
    cdef Py_ssize_t k
    cdef cnp.ndarray a
    cdef int t
    for k in range(len(arrays)):
        obj = arrays[k]
        name = where + names[k]
        if not cnp.PyArray_Check(obj):
            raise TypeError(f"Invalid {name}: expected a 0-d numpy.ndarray, got "
                            f"{type(obj).__name__}")
        a = <cnp.ndarray>obj
        t = cnp.PyArray_TYPE(a)
        if (t != cnp.NPY_FLOAT32 and t != cnp.NPY_FLOAT64) or not cnp.PyArray_ISNOTSWAPPED(a):
            raise TypeError(f"Invalid {name} dtype: expected float32 or float64 in native "
                            f"byte order, got {a.dtype.str} ({a.dtype})")
        if cnp.PyArray_NDIM(a) != 0:
            raise ValueError(f"Invalid {name} shape: expected a 0-d array (shape ()), got "
                             f"{_shape(a)}")
        if not cnp.PyArray_CHKFLAGS(a, cnp.NPY_ARRAY_C_CONTIGUOUS) or \
                not cnp.PyArray_ISALIGNED(a):
            raise ValueError(f"Invalid {name}: its data is not aligned to its itemsize")
        if not cnp.PyArray_ISWRITEABLE(a):
            raise ValueError(f"Invalid {name}: read-only, but it is updated in place")
        sc.f32[k] = t == cnp.NPY_FLOAT32
        sc.v[k] = (<float*>cnp.PyArray_DATA(a))[0] if sc.f32[k] else \
            (<double*>cnp.PyArray_DATA(a))[0]
    return 0


cdef int _scalars_apart(tuple arrays, tuple names, str where, const Seg* s) except -1:
    """The scalar states (checked by _read_scalars) share no memory with each other nor,
    when ``s`` is not NULL, with its param, grad, copy or states."""
    cdef Py_ssize_t k, j
    cdef char* d
    cdef char* e
    for k in range(len(arrays)):
        d = <char*>cnp.PyArray_DATA(<cnp.ndarray>arrays[k])
        nb = cnp.PyArray_ITEMSIZE(<cnp.ndarray>arrays[k])
        for j in range(k):
            e = <char*>cnp.PyArray_DATA(<cnp.ndarray>arrays[j])
            if _overlap(d, nb, e, cnp.PyArray_ITEMSIZE(<cnp.ndarray>arrays[j])):
                raise ValueError(f"Invalid {where}{names[k]}: it shares memory with "
                                 f"{where}{names[j]}; every array must be a separate buffer")
        if s == NULL:
            continue
        hit = _overlap(d, nb, <const char*>s.p, _nbytes_of(s, s.pdt)) or \
            _overlap(d, nb, <const char*>s.g, _nbytes_of(s, s.gdt)) or \
            _overlap(d, nb, <const char*>s.copy, _nbytes_of(s, s.cdt))
        for j in range(MAX_STATES):
            hit = hit or _overlap(d, nb, <const char*>s.s[j], _nbytes_of(s, s.sdt)) or \
                _overlap(d, nb, <const char*>s.absmax[j], _absmax_nbytes(s))
        if hit:
            raise ValueError(f"Invalid {where}{names[k]}: it shares memory with the param, "
                             f"grad or a state; every array must be a separate buffer")
    return 0


cdef int _write_scalars(const ScalarState* sc, tuple arrays) except -1:
    """Store the new values ``prepare`` left in ``sc``, each in its own dtype."""
    cdef Py_ssize_t k
    for k in range(len(arrays)):
        if sc.f32[k]:
            (<float*>cnp.PyArray_DATA(<cnp.ndarray>arrays[k]))[0] = <float>sc.v[k]
        else:
            (<double*>cnp.PyArray_DATA(<cnp.ndarray>arrays[k]))[0] = sc.v[k]
    return 0


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


cdef inline int _unit_pair(object x, str name, str name0, str name1,
                           double* out) except -1:
    """A pair (tuple or list) of numbers in [0, 1); ``name0``/``name1`` ("betas[0]") name
    its elements in messages (passed in: formatting them on every call would cost more than
    the check)."""
    cdef str one
    if type(x) is not tuple and type(x) is not list or len(x) != 2:
        one = name[:len(name) - 1] if name.endswith("s") else name     # betas: beta1
        raise TypeError(f"Invalid {name}: expected a pair ({one}1, {one}2), got {x!r}")
    out[0] = _unit(x[0], name0)
    out[1] = _unit(x[1], name1)
    return 0


cdef inline int _real_pair(object x, str name, str name0, str name1,
                           double* out) except -1:
    """A pair (tuple or list) of finite real numbers, any order and sign (Rprop's etas and
    step_sizes; what the pair must satisfy besides is the kernel's check)."""
    if type(x) is not tuple and type(x) is not list or len(x) != 2:
        raise TypeError(f"Invalid {name}: expected a pair of real numbers, got {x!r}")
    out[0] = _finite(x[0], name0)
    out[1] = _finite(x[1], name1)
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


cdef tuple _given_stats(object stats):
    """``grad_stats=``: the two numbers of Plan.grad_stats (summed over plans or processes):
    a sum of squares (>= 0 or NaN; inf when a grad is) and a count of non-finite (>= 0)."""
    try:
        a = np.asarray(stats, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"Invalid grad_stats: expected 2 numbers [sum of squares, "
                        f"non-finite], got {type(stats).__name__}") from None
    if a.shape != (2,):
        raise ValueError(f"Invalid grad_stats: expected 2 numbers [sum of squares, "
                         f"non-finite], got shape {a.shape}")
    sumsq, bad = float(a[0]), float(a[1])
    if sumsq < 0 or not (bad >= 0 and isfinite(bad)):
        raise ValueError(f"Invalid grad_stats: {[sumsq, bad]} (the sum of squares must be "
                         f">= 0, the non-finite count a finite number >= 0)")
    return sumsq, bad


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
