# A plan: many tensors validated once, stepped in one native call.
#
# The optimizer classes build one when they are made. The params and the state arrays are
# checked then (the states are the optimizer's own); each step re-checks cheaply that every
# param is still where it was and writable, and fully checks each new grad, including that
# it shares no memory with any param or state (a binary search in the sorted byte ranges).

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

    def __dealloc__(self):
        free(self.segs)
        free(self.slot)
        free(self.written)
        free(self.arrays)

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

    cdef int _go(self, int kernel, object grads, const Hyper* h) except -1:
        if kernel != self.kernel:
            raise ValueError("Plan: built for another optimizer")
        if grads is CHECK_ONLY:
            return 0
        self._bind(grads)
        with nogil:
            if self.n32:
                _run(kernel, F32, h, self.segs, self.n32, self.total32)
            if self.ntensors > self.n32:
                _run(kernel, F64, h, self.segs + self.n32, self.ntensors - self.n32,
                     self.total64)
        return 0

    def sgd(self, grads, lr, momentum, dampening, nesterov, weight_decay, maximize,
            bint first_step):
        """One SGD step over every tensor (``grads=CHECK_ONLY``: only validate)."""
        cdef Hyper h
        _sgd_hyper(&h, lr, momentum, dampening, nesterov, weight_decay, maximize, first_step)
        self._need(0, h.use_momentum, "momentum != 0")
        self._go(K_SGD, grads, &h)

    def rmsprop(self, grads, lr, alpha, eps, weight_decay, momentum, centered, maximize):
        """One RMSprop step over every tensor (``grads=CHECK_ONLY``: only validate)."""
        cdef Hyper h
        _rmsprop_hyper(&h, lr, alpha, eps, weight_decay, momentum, centered, maximize)
        self._need(1, h.use_momentum, "momentum != 0")
        self._need(2, h.centered, "centered=True")
        self._go(K_RMSPROP, grads, &h)

    def adam(self, grads, step, lr, betas, eps, weight_decay, amsgrad, maximize,
             bias_correction, bint decoupled):
        """One Adam/AdamW step over every tensor (``grads=CHECK_ONLY``: only validate)."""
        cdef Hyper h
        _adam_hyper(&h, step, lr, betas, eps, weight_decay, amsgrad, maximize,
                    bias_correction, decoupled)
        self._need(2, h.amsgrad, "amsgrad=True")
        self._go(K_ADAM, grads, &h)
