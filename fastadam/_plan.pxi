# A plan: many tensors validated once, stepped in one native call.
#
# The optimizer classes build one when they are made. The params and the state arrays are
# checked then (the states are the optimizer's own); each step re-checks cheaply that every
# param is still where it was and writable, and fully checks each new grad, including that
# it shares no memory with any param or state (a binary search in the sorted byte ranges).
#
# A step may first read every grad once (the pre-pass, _run_sumsq): the global squared norm
# in float64 and whether any element is NaN or inf. The update pass then multiplies every
# grad element by one combined factor (maximize sign, clipping, loss-scale), so clipping and
# unscaling cost one extra read of the grads, not torch's separate passes.

# Pass as ``grads`` to a plan's step methods to validate the hyperparameters only.
CHECK_ONLY = object()


cdef struct Range:
    char* lo
    char* hi
    Py_ssize_t tensor


cdef int _cmp_range(const void* a, const void* b) noexcept nogil:
    cdef const Range* x = <const Range*>a
    cdef const Range* y = <const Range*>b
    return -1 if x.lo < y.lo else (1 if x.lo > y.lo else 0)


cdef class Plan:
    cdef readonly int kernel
    cdef readonly Py_ssize_t ntensors
    cdef list params, states, param_names, grad_names
    cdef PyObject** arrays      # per tensor: param, s0, s1, s2 (NULL: absent), for re-checks
    cdef tuple state_names
    cdef bint has_state[3]
    cdef Seg* segs              # float32 tensors first, then float64
    cdef Py_ssize_t* slot       # tensor i -> its index in segs
    cdef Py_ssize_t n32, total32, total64
    cdef Range* written         # byte ranges of every param and state, sorted, disjoint
    cdef Py_ssize_t nwritten
    cdef double* blocks         # pre-pass scratch: one partial sum per block
    cdef Py_ssize_t nb32
    cdef bint busy              # a step is running (its GIL-free part may be in flight)
    cdef readonly double grad_norm  # the last pre-pass's 2-norm of the unscaled grads

    def __cinit__(self, int kernel, list params, list states, list keys, tuple state_names):
        """params: arrays; states: per tensor a 3-tuple of state arrays or None (laid out as
        in Seg); keys: the reprs used in messages ("0", "'w'"); state_names: 3 names."""
        cdef Py_ssize_t i, k, n = len(params), j32 = 0, j64
        cdef int dtype
        if not (len(states) == len(keys) == n and len(state_names) == 3):
            raise ValueError("Plan: params, states and keys must have the same length")
        if not 0 <= kernel < 3:
            raise ValueError(f"Plan: invalid kernel {kernel}")
        self.kernel = kernel
        self.ntensors = n
        self.params = list(params)
        self.states = list(states)
        self.state_names = state_names
        self.param_names = [f"params[{key}]" for key in keys]
        self.grad_names = [f"grads[{key}]" for key in keys]
        self.segs = <Seg*>malloc(max(n, 1) * sizeof(Seg))
        self.slot = <Py_ssize_t*>malloc(max(n, 1) * sizeof(Py_ssize_t))
        self.written = <Range*>malloc(max(4 * n, 1) * sizeof(Range))
        if self.segs == NULL or self.slot == NULL or self.written == NULL:
            raise MemoryError()
        for k in range(3):
            self.has_state[k] = n > 0 and states[0][k] is not None
        # Validate in tensor order, then lay the segments out float32 first.
        cdef Seg* checked = <Seg*>malloc(max(n, 1) * sizeof(Seg))
        if checked == NULL:
            raise MemoryError()
        dtypes = []
        try:
            for i in range(n):
                st = states[i]
                for k in range(3):
                    if (st[k] is not None) != self.has_state[k]:
                        raise ValueError(f"Plan: {self.param_names[i]} lacks {state_names[k]}")
                try:
                    dtype = _check_tensor(&checked[i], 0, params[i], None, st[0],
                                          state_names[0], st[1], state_names[1], st[2],
                                          state_names[2])
                except (TypeError, ValueError) as e:
                    raise type(e)(f"{self.param_names[i]}: {e}") from None
                dtypes.append(dtype)
            self.n32 = dtypes.count(F32)
            j64 = self.n32
            for i in range(n):
                if dtypes[i] == F32:
                    self.slot[i] = j32
                    j32 += 1
                    self.total32 += checked[i].n
                else:
                    self.slot[i] = j64
                    j64 += 1
                    self.total64 += checked[i].n
                self.segs[self.slot[i]] = checked[i]
        finally:
            free(checked)
        self.arrays = <PyObject**>malloc(max(4 * n, 1) * sizeof(PyObject*))
        if self.arrays == NULL:
            raise MemoryError()
        for i in range(n):      # borrowed: self.params and self.states hold the references
            self.arrays[4 * i] = <PyObject*>params[i]
            for k in range(3):
                st = states[i][k]
                self.arrays[4 * i + 1 + k] = <PyObject*>st if st is not None else NULL
        self._index_written()
        self.nb32 = _sumsq_nblocks(self.total32)
        self.blocks = <double*>malloc(
            max(self.nb32 + _sumsq_nblocks(self.total64), 1) * sizeof(double))
        if self.blocks == NULL:
            raise MemoryError()
        self.grad_norm = NAN

    def __dealloc__(self):
        free(self.segs)
        free(self.slot)
        free(self.written)
        free(self.arrays)
        free(self.blocks)

    cdef int _index_written(self) except -1:
        # Sort the byte ranges of everything the kernels write; they must not overlap
        # (two params that are views of one buffer, say).
        cdef Py_ssize_t i, k, m = 0
        cdef Py_ssize_t nbytes
        cdef Seg* s
        cdef char* ptrs[4]
        for i in range(self.ntensors):
            s = &self.segs[self.slot[i]]
            nbytes = cnp.PyArray_NBYTES(self.params[i])
            ptrs[0] = <char*>s.p
            ptrs[1] = <char*>s.s0
            ptrs[2] = <char*>s.s1
            ptrs[3] = <char*>s.s2
            if nbytes == 0:
                continue
            for k in range(4):
                if ptrs[k] != NULL:
                    self.written[m].lo = ptrs[k]
                    self.written[m].hi = ptrs[k] + nbytes
                    self.written[m].tensor = i
                    m += 1
        qsort(self.written, m, sizeof(Range), _cmp_range)
        for k in range(1, m):
            if self.written[k].lo < self.written[k - 1].hi:
                a = self.param_names[self.written[k - 1].tensor]
                b = self.param_names[self.written[k].tensor]
                raise ValueError(f"Invalid {b}: it shares memory with {a}; every param must "
                                 f"be a separate buffer")
        self.nwritten = m
        return 0

    cdef bint _hits_written(self, const char* lo, const char* hi) noexcept:
        # The written range with the largest start below ``hi`` is the only candidate.
        cdef Py_ssize_t a = 0, b = self.nwritten, mid
        while a < b:
            mid = (a + b) // 2
            if self.written[mid].lo < hi:
                a = mid + 1
            else:
                b = mid
        return a > 0 and self.written[a - 1].hi > lo

    cdef int _recheck(self, Py_ssize_t i) except -1:
        # A param or state may have been changed in place since the plan was made: its
        # dtype reassigned, made read-only, resized. Then this step must not run.
        cdef Seg* s = &self.segs[self.slot[i]]
        cdef int dtype = cnp.NPY_FLOAT32 if self.slot[i] < self.n32 else cnp.NPY_FLOAT64
        cdef void* ptrs[4]
        cdef PyObject* obj
        cdef cnp.PyArrayObject* a
        cdef int k
        ptrs[0] = s.p
        ptrs[1] = s.s0
        ptrs[2] = s.s1
        ptrs[3] = s.s2
        for k in range(4):
            obj = self.arrays[4 * i + k]
            if obj == NULL:
                continue
            a = <cnp.PyArrayObject*>obj
            if (cnp.PyArray_DATA(<cnp.ndarray>a) != ptrs[k]
                    or cnp.PyArray_TYPE(<cnp.ndarray>a) != dtype
                    or cnp.PyArray_SIZE(<cnp.ndarray>a) != s.n
                    or not cnp.PyArray_ISWRITEABLE(<cnp.ndarray>a)
                    or not cnp.PyArray_CHKFLAGS(<cnp.ndarray>a, cnp.NPY_ARRAY_C_CONTIGUOUS)):
                what = self.param_names[i] if k == 0 else \
                    f"state {self.state_names[k - 1]!r} of {self.param_names[i]}"
                raise ValueError(f"Invalid {what}: its dtype, size, layout, memory or "
                                 f"writability changed since the optimizer was built")
        return 0

    cdef int _bind(self, object grads) except -1:
        """Check every param, state and grad; point the segments at the grads."""
        cdef Py_ssize_t i, nb
        cdef Seg* s
        cdef cnp.ndarray p
        cdef char* gd
        if type(grads) is not list and type(grads) is not tuple:
            raise TypeError(f"Invalid grads: expected a list or tuple of arrays, "
                            f"got {type(grads).__name__}")
        if len(grads) != self.ntensors:
            raise ValueError(f"Invalid grads: expected {self.ntensors} arrays (one per param), "
                             f"got {len(grads)}")
        for i in range(self.ntensors):
            p = <cnp.ndarray>self.params[i]
            s = &self.segs[self.slot[i]]
            self._recheck(i)
            g = grads[i]
            _check_array(g, self.grad_names[i], p, False)
            gd = <char*>cnp.PyArray_DATA(g)
            nb = cnp.PyArray_NBYTES(g)
            if nb > 0 and self._hits_written(gd, gd + nb):
                raise ValueError(f"Invalid {self.grad_names[i]}: it shares memory with a "
                                 f"param or optimizer state")
            s.g = gd
        return 0

    cdef int _need(self, int k, bint needed, str why) except -1:
        if needed and not self.has_state[k]:
            raise ValueError(f"Invalid {self.state_names[k]}: required when {why}, but the "
                             f"optimizer was built without it")
        return 0

    cdef bint _prepass(self) noexcept nogil:
        """Set grad_norm from every grad; return whether any element is NaN or inf."""
        cdef double s32 = 0.0, s64 = 0.0
        cdef Py_ssize_t n64 = self.ntensors - self.n32
        if self.n32:
            s32 = _run_sumsq(F32, self.segs, self.n32, self.total32, self.blocks)
        if n64:
            s64 = _run_sumsq(F64, self.segs + self.n32, n64, self.total64,
                             self.blocks + self.nb32)
        self.grad_norm = sqrt(s32 + s64)
        # A float32 square never overflows a double: a non-finite s32 means a NaN or inf.
        return not isfinite(s32) or (not isfinite(s64) and
                                     _any_nonfinite_f64(self.segs + self.n32, n64))

    cdef str _first_nonfinite(self, object grads):
        # Only on the error path: find it again with NumPy, in tensor order. (asarray: a
        # subclass's own methods, np.matrix's say, play no part.)
        for i in range(self.ntensors):
            g = np.asarray(grads[i])
            flat = g.reshape(-1)
            bad = ~np.isfinite(flat)
            if bad.any():
                k = int(np.argmax(bad))
                where = tuple(int(j) for j in np.unravel_index(k, g.shape))
                return (f"Non-finite gradient: {self.grad_names[i]} has {flat[k]} at index "
                        f"{where}; no param or state was changed")
        return "Non-finite gradient"    # unreachable: the pre-pass found one

    cdef object _go(self, int kernel, object grads, Hyper* h, const GradPolicy* pol):
        """Bind and check the grads, run the pre-pass if the policy needs it, then the update.

        Returns False when the step was skipped (nonfinite="skip"), True when applied."""
        cdef bint bad, prepass = pol.nonfinite != NONFINITE_PROPAGATE or pol.max_norm > 0.0
        cdef double norm, coef, factor = 1.0
        if kernel != self.kernel:
            raise ValueError("Plan: built for another optimizer")
        if grads is CHECK_ONLY:
            return True
        # The kernels run without the GIL: a second thread must not rebind the grads
        # of a step in flight. (The optimizer classes hold a lock, so they never get here.)
        if self.busy:
            raise RuntimeError("Invalid call: this optimizer is already stepping in another "
                               "thread; steps of one optimizer must not overlap")
        self.busy = True
        try:
            self._bind(grads)
            self.grad_norm = NAN
            if prepass:
                with nogil:
                    bad = self._prepass()
                if bad and pol.nonfinite == NONFINITE_SKIP:
                    return False
                if bad and pol.nonfinite == NONFINITE_RAISE:
                    raise FloatingPointError(self._first_nonfinite(grads))
                norm = self.grad_norm / pol.scale
                self.grad_norm = norm
                if pol.max_norm > 0.0:
                    # torch.nn.utils.clip_grad_norm_: min(1, max_norm / (norm + 1e-6)), with
                    # a NaN norm propagating (as torch's clamp does)
                    coef = pol.max_norm / (norm + 1e-6)
                    factor = 1.0 if coef >= 1.0 else coef
            h.grad_mul = h.grad_mul * (factor / pol.scale)
            with nogil:
                if self.n32:
                    _run(kernel, F32, h, self.segs, self.n32, self.total32)
                if self.ntensors > self.n32:
                    _run(kernel, F64, h, self.segs + self.n32, self.ntensors - self.n32,
                         self.total64)
            return True
        finally:
            self.busy = False

    # Each step method validates its hyperparameters and gradient policy (nonfinite,
    # max_grad_norm, grad_scale: see _grad_policy), then runs _go. ``grads=CHECK_ONLY``
    # validates only. Returns True when the update was applied, False when skipped.

    def sgd(self, grads, lr, momentum, dampening, nesterov, weight_decay, maximize,
            bint first_step, nonfinite="propagate", max_grad_norm=None, grad_scale=None):
        """One SGD step over every tensor."""
        cdef Hyper h
        cdef GradPolicy pol
        _sgd_hyper(&h, lr, momentum, dampening, nesterov, weight_decay, maximize, first_step)
        _grad_policy(&pol, nonfinite, max_grad_norm, grad_scale)
        self._need(0, h.use_momentum, "momentum != 0")
        return self._go(K_SGD, grads, &h, &pol)

    def rmsprop(self, grads, lr, alpha, eps, weight_decay, momentum, centered, maximize,
                nonfinite="propagate", max_grad_norm=None, grad_scale=None):
        """One RMSprop step over every tensor."""
        cdef Hyper h
        cdef GradPolicy pol
        _rmsprop_hyper(&h, lr, alpha, eps, weight_decay, momentum, centered, maximize)
        _grad_policy(&pol, nonfinite, max_grad_norm, grad_scale)
        self._need(1, h.use_momentum, "momentum != 0")
        self._need(2, h.centered, "centered=True")
        return self._go(K_RMSPROP, grads, &h, &pol)

    def adam(self, grads, step, lr, betas, eps, weight_decay, amsgrad, maximize,
             bias_correction, decoupled, nonfinite="propagate", max_grad_norm=None,
             grad_scale=None):
        """One Adam/AdamW step over every tensor."""
        cdef Hyper h
        cdef GradPolicy pol
        _adam_hyper(&h, step, lr, betas, eps, weight_decay, amsgrad, maximize,
                    bias_correction, _flag(decoupled, "decoupled_weight_decay"))
        _grad_policy(&pol, nonfinite, max_grad_norm, grad_scale)
        self._need(2, h.amsgrad, "amsgrad=True")
        return self._go(K_ADAM, grads, &h, &pol)
