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
#
# A step may also be several runs (step_runs): each tensor of the plan in one run or in none
# (its grad None: it and its states are left alone), each run with its own hyperparameters,
# step number and scalar states. The NumPy classes use this for param groups and for params
# whose step counts differ; it is still one native call, one pre-pass over every grad taking
# part (so clipping uses the norm of all of them), then the kernels run after run.

cdef enum:
    ROW = 2 + MAX_STATES        # a tensor's arrays: param, MAX_STATES states, param_copy


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
    cdef int nstates, nscalars
    cdef tuple scalar_names
    cdef list params, states, param_names, grad_names
    cdef list copies            # per tensor: its param_copy or None
    cdef PyObject** arrays      # per tensor: param, MAX_STATES states, copy (NULL: absent)
    cdef tuple state_names, state_why
    cdef bint has_state[MAX_STATES]     # every tensor has state k
    cdef Seg* segs              # grouped by class (_seg_class: F32, F64, CONVERT)
    cdef Seg* rsegs             # _steps' scratch: the segments taking part, by run, class
    cdef Py_ssize_t* slot       # tensor i -> its index in segs
    cdef int* cls               # tensor i -> its class with grads of its param's dtype
    cdef Py_ssize_t first[N_CLASSES + 1]    # class c's segments: segs[first[c]:first[c+1]]
    cdef Py_ssize_t total[N_CLASSES]        # and their number of elements
    cdef bint regroup           # the bound grads' dtypes change some tensor's class
    cdef bint any_half          # some param is 16-bit (so rounding applies)
    cdef Range* written         # byte ranges of every param and state, sorted, disjoint
    cdef Py_ssize_t nwritten
    cdef double* blocks         # pre-pass scratch: one partial sum per block
    cdef bint busy              # a step is running (its GIL-free part may be in flight)
    cdef readonly double grad_norm  # the last pre-pass's 2-norm of the unscaled grads
    cdef double sumsq               # and its sum of squares of the (scaled) grads

    def __cinit__(self, int kernel, list params, list states, list keys, list copies=None):
        """params: arrays; states: per tensor a tuple of the kernel's state arrays (its
        registry order), None for a state that tensor lacks; keys: the reprs used in
        messages ("0", "'w'"); copies: per tensor a 16-bit param_copy (the param is then
        float32) or None."""
        cdef Py_ssize_t i, n = len(params), nb = 0
        cdef int k, d
        cdef PyObject* st[MAX_STATES]
        if not 0 <= kernel < N_KERNELS:
            raise ValueError(f"Plan: invalid kernel {kernel}")
        self.kernel = kernel
        self.nstates = _NSTATES[kernel]
        self.nscalars = _NSCALARS[kernel]
        self.scalar_names = _SCALAR_NAMES[kernel]
        if not len(states) == len(keys) == n:
            raise ValueError("Plan: params, states and keys must have the same length")
        for i in range(n):
            if type(states[i]) is not tuple or len(states[i]) != self.nstates:
                raise ValueError(f"Plan: states[{i}] must be a tuple of {self.nstates}")
        if copies is None:
            copies = [None] * n
        elif len(copies) != n:
            raise ValueError("Plan: params and copies must have the same length")
        self.ntensors = n
        self.params = list(params)
        self.copies = list(copies)
        self.states = list(states)
        self.state_names = _STATE_NAMES[kernel]
        self.state_why = _STATE_WHY[kernel]
        self.param_names = [f"params[{key}]" for key in keys]
        self.grad_names = [f"grads[{key}]" for key in keys]
        self.segs = <Seg*>malloc(max(n, 1) * sizeof(Seg))
        self.rsegs = <Seg*>malloc(max(n, 1) * sizeof(Seg))
        self.slot = <Py_ssize_t*>malloc(max(n, 1) * sizeof(Py_ssize_t))
        self.cls = <int*>malloc(max(n, 1) * sizeof(int))
        self.written = <Range*>malloc(max((2 + 2 * self.nstates) * n, 1) * sizeof(Range))
        # (a fixed stride, so that the per-step re-check loops a constant count)
        self.arrays = <PyObject**>malloc(max(ROW * n, 1) * sizeof(PyObject*))
        if (self.segs == NULL or self.rsegs == NULL or self.slot == NULL or self.cls == NULL
                or self.written == NULL or self.arrays == NULL):
            raise MemoryError()
        for k in range(MAX_STATES):
            self.has_state[k] = n > 0 and k < self.nstates and all(
                states[i][k] is not None for i in range(n))
        # Validate in tensor order, then lay the segments out grouped by class.
        cdef Seg* checked = <Seg*>malloc(max(n, 1) * sizeof(Seg))
        if checked == NULL:
            raise MemoryError()
        cdef Py_ssize_t count[N_CLASSES]
        for d in range(N_CLASSES):
            count[d] = 0
            self.total[d] = 0
        try:
            for i in range(n):
                for k in range(self.nstates):
                    x = states[i][k]
                    st[k] = <PyObject*>x if x is not None else NULL
                try:
                    _check_tensor(&checked[i], 0, params[i], None, st, self.nstates,
                                  self.state_names, copies[i])
                except (TypeError, ValueError) as e:
                    raise type(e)(f"{self.param_names[i]}: {e}") from None
                self.any_half = self.any_half or checked[i].pdt >= N_COMPUTE
                self.cls[i] = _seg_class(&checked[i])
                count[self.cls[i]] += 1
                self.total[self.cls[i]] += checked[i].n
            self.first[0] = 0
            for d in range(N_CLASSES):
                self.first[d + 1] = self.first[d] + count[d]
                count[d] = self.first[d]        # next free slot of class d
            for i in range(n):
                d = self.cls[i]
                self.slot[i] = count[d]
                count[d] += 1
                self.segs[self.slot[i]] = checked[i]
        finally:
            free(checked)
        for i in range(n):      # borrowed: self.params, .states, .copies hold the references
            self.arrays[ROW * i] = <PyObject*>params[i]
            for k in range(MAX_STATES):
                x = states[i][k] if k < self.nstates else None
                if type(x) is _QuantizedState:
                    x = (<tuple>x)[0]       # its codes (_recheck_q8 checks the rest)
                self.arrays[ROW * i + 1 + k] = <PyObject*>x if x is not None else NULL
            x = copies[i]
            self.arrays[ROW * i + 1 + MAX_STATES] = <PyObject*>x if x is not None else NULL
        self._index_written()
        for d in range(N_CLASSES):
            nb += _sumsq_nblocks(self.total[d])
        self.blocks = <double*>malloc(max(nb, 1) * sizeof(double))
        if self.blocks == NULL:
            raise MemoryError()
        self.grad_norm = NAN

    def __dealloc__(self):
        free(self.segs)
        free(self.rsegs)
        free(self.slot)
        free(self.cls)
        free(self.written)
        free(self.arrays)
        free(self.blocks)

    cdef int _index_written(self) except -1:
        # Sort the byte ranges of everything the kernels write; they must not overlap
        # (two params that are views of one buffer, say).
        cdef Py_ssize_t i, k, m = 0
        cdef Py_ssize_t nbytes
        cdef Seg* s
        cdef char* ptr
        for i in range(self.ntensors):
            s = &self.segs[self.slot[i]]
            if s.n == 0:
                continue
            for k in range(2 + 2 * self.nstates):
                if k < 2 + self.nstates:
                    ptr = <char*>(s.p if k == 0 else s.copy if k == 1 else s.s[k - 2])
                    nbytes = _nbytes_of(s, s.pdt if k == 0 else s.cdt if k == 1 else s.sdt)
                else:       # an 8-bit state's absmax
                    ptr = <char*>s.absmax[k - 2 - self.nstates]
                    nbytes = _absmax_nbytes(s)
                if ptr != NULL:
                    self.written[m].lo = ptr
                    self.written[m].hi = ptr + nbytes
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
        cdef int k, d, npy_type
        cdef PyObject** row = self.arrays + ROW * i
        cdef PyObject* obj
        cdef void* ptrs[ROW]
        ptrs[0] = s.p
        for k in range(MAX_STATES):
            ptrs[1 + k] = s.s[k]
        ptrs[ROW - 1] = s.copy
        for k in range(ROW):
            obj = row[k]
            if obj == NULL:
                continue
            d = s.pdt if k == 0 else s.cdt if k == ROW - 1 else s.sdt
            npy_type = cnp.NPY_UINT8 if d == Q8 else _NPY_TYPES[d]
            if (cnp.PyArray_DATA(<cnp.ndarray>obj) != ptrs[k]
                    or cnp.PyArray_TYPE(<cnp.ndarray>obj) != npy_type
                    or cnp.PyArray_SIZE(<cnp.ndarray>obj) != s.n
                    or not cnp.PyArray_ISWRITEABLE(<cnp.ndarray>obj)
                    or not cnp.PyArray_CHKFLAGS(<cnp.ndarray>obj, cnp.NPY_ARRAY_C_CONTIGUOUS)):
                what = self.param_names[i] if k == 0 else \
                    f"param_copy of {self.param_names[i]}" if k == ROW - 1 else \
                    f"state {self.state_names[k - 1]!r} of {self.param_names[i]}"
                raise ValueError(f"Invalid {what}: its dtype, size, layout, memory or "
                                 f"writability changed since the optimizer was built")
        if s.sdt == Q8:
            for k in range(self.nstates):
                if s.s[k] != NULL:
                    self._recheck_q8(i, k)
        return 0

    cdef int _recheck_q8(self, Py_ssize_t i, int k) except -1:
        # The QuantizedState is a tuple, so its arrays are the ones checked at build; their
        # absmax may have been resized, their map changed in place.
        cdef Seg* s = &self.segs[self.slot[i]]
        cdef cnp.ndarray absmax = <cnp.ndarray>self.states[i][k][1]
        cdef cnp.ndarray qmap = <cnp.ndarray>self.states[i][k][2]
        if (cnp.PyArray_DATA(absmax) != <void*>s.absmax[k]
                or cnp.PyArray_TYPE(absmax) != cnp.NPY_FLOAT32
                or cnp.PyArray_NBYTES(absmax) != _absmax_nbytes(s)
                or not cnp.PyArray_ISWRITEABLE(absmax)
                or not cnp.PyArray_CHKFLAGS(absmax, cnp.NPY_ARRAY_C_CONTIGUOUS)
                or cnp.PyArray_TYPE(qmap) != cnp.NPY_FLOAT32 or cnp.PyArray_SIZE(qmap) != 256
                or not cnp.PyArray_CHKFLAGS(qmap, cnp.NPY_ARRAY_C_CONTIGUOUS)
                or memcmp(cnp.PyArray_DATA(qmap), s.qmap[k], 256 * sizeof(float)) != 0):
            raise ValueError(f"Invalid state {self.state_names[k]!r} of "
                             f"{self.param_names[i]}: its absmax or qmap changed since the "
                             f"optimizer was built")
        return 0

    cdef int _bind(self, object grads, const Py_ssize_t* run_of) except -1:
        """Check every param, state and grad; point the segments at the grads. With
        ``run_of`` (step_runs), a tensor in no run (-1) must have the grad None."""
        cdef Py_ssize_t i, nb
        cdef Seg* s
        cdef cnp.ndarray p
        cdef char* gd
        self.regroup = False
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
            if run_of != NULL and run_of[i] < 0:
                if g is not None:
                    raise ValueError(f"Invalid {self.grad_names[i]}: its param takes no part "
                                     f"in this step (run -1), so it must be None")
                s.g = NULL
                s.gdt = s.pdt
                continue
            s.gdt = _check_grad(g, self.grad_names[i], p, s.pdt)
            if _seg_class(s) != self.cls[i]:
                self.regroup = True
            gd = <char*>cnp.PyArray_DATA(g)
            nb = cnp.PyArray_NBYTES(g)
            if nb > 0 and self._hits_written(gd, gd + nb):
                raise ValueError(f"Invalid {self.grad_names[i]}: it shares memory with a "
                                 f"param or optimizer state")
            s.g = gd
        return 0

    cdef bint _prepass(self, const Seg* segs, const Py_ssize_t* first,
                       const Py_ssize_t* total, Py_ssize_t nbuckets,
                       double* blocks) noexcept nogil:
        """Set grad_norm from the grads of the buckets ``segs[first[b]:first[b+1]]`` (bucket
        b of class b % N_CLASSES, ``total[b]`` elements); return whether any element is NaN
        or inf. ``blocks``: scratch for every bucket's blocks, in bucket order."""
        cdef double sumsq, norm2 = 0.0
        cdef bint bad = False
        cdef int d
        cdef Py_ssize_t b, n
        for b in range(nbuckets):
            n = first[b + 1] - first[b]
            if not n:
                continue
            d = b % N_CLASSES
            sumsq = _run_sumsq(segs + first[b], n, total[b], blocks)
            blocks += _sumsq_nblocks(total[b])
            norm2 = norm2 + sumsq
            # Only a float64 square can overflow a double: for the narrower dtypes (every
            # grad outside class F64) a non-finite sum means a NaN or inf element.
            if not isfinite(sumsq) and (d != F64 or _any_nonfinite_f64(segs + first[b], n)):
                bad = True
        self.sumsq = norm2
        self.grad_norm = sqrt(norm2)
        return bad

    cdef inline Py_ssize_t _bucket(self, Py_ssize_t i, const Py_ssize_t* run_of) noexcept:
        """Tensor i's bucket in _steps: its run, then its class with the bound grad."""
        return (run_of[i] if run_of != NULL else 0) * N_CLASSES + \
            _seg_class(&self.segs[self.slot[i]])

    cdef int _round(self, bint stochastic, uint64_t seed, object runs,
                    const Py_ssize_t* run_of, object step) except -1:
        """Set how each 16-bit param is rounded this step; stochastically, its generator is
        keyed by (seed, its run's step, its index in the plan)."""
        cdef Py_ssize_t i, r, t
        cdef Seg* s
        cdef list steps = None
        if stochastic:
            steps = [_step(step)] if runs is None else [_step(run[1]) for run in runs]
        for i in range(self.ntensors):
            s = &self.segs[self.slot[i]]
            r = run_of[i] if run_of != NULL else 0
            s.stochastic = stochastic and s.pdt >= N_COMPUTE
            if s.stochastic and r >= 0:
                t = steps[r]
                s.key = fa_sr_key(seed, <uint64_t>t, <uint64_t>i)
        return 0

    cdef str _first_nonfinite(self, object grads):
        # Only on the error path: find it again with NumPy, in tensor order. (asarray: a
        # subclass's own methods, np.matrix's say, play no part.)
        for i in range(self.ntensors):
            if grads[i] is None:
                continue
            g = np.asarray(grads[i])
            flat = g.reshape(-1)
            bad = ~np.isfinite(flat)
            if bad.any():
                k = int(np.argmax(bad))
                where = tuple(int(j) for j in np.unravel_index(k, g.shape))
                return (f"Non-finite gradient: {self.grad_names[i]} has {flat[k]} at index "
                        f"{where}; no param or state was changed")
        # (with combined grad_stats: the non-finite element is in another process's grads)
        return ("Non-finite gradient in the combined grad_stats (not in this process's "
                "grads); no param or state was changed")

    cdef tuple _scalars(self, object scalars, ScalarState* sc):
        """The step's scalar states (one 0-d array per registry scalar, shared by every
        tensor of this plan), checked and read into ``sc``."""
        cdef Py_ssize_t k
        cdef char* d
        if not self.nscalars:
            if scalars is not None and len(scalars):
                raise ValueError(f"Invalid scalars: this optimizer has none, got {scalars!r}")
            return ()
        if type(scalars) is not tuple or len(<tuple>scalars) != self.nscalars:
            raise TypeError(f"Invalid scalars: expected a tuple of {self.nscalars} 0-d arrays "
                            f"{self.scalar_names}, got {type(scalars).__name__}")
        _read_scalars(sc, <tuple>scalars, self.scalar_names, "state ")
        _scalars_apart(<tuple>scalars, self.scalar_names, "state ", NULL)
        for k in range(self.nscalars):
            d = <char*>cnp.PyArray_DATA(<cnp.ndarray>scalars[k])
            if self._hits_written(d, d + cnp.PyArray_ITEMSIZE(<cnp.ndarray>scalars[k])):
                raise ValueError(f"Invalid state {self.scalar_names[k]}: it shares memory "
                                 f"with a param or optimizer state")
        return <tuple>scalars

    cdef int _check_states(self, Hyperparams hyper, const Py_ssize_t* run_of,
                           Py_ssize_t r) except -1:
        """Every tensor of run ``r`` (all of them without ``run_of``) has the states the
        run's options use."""
        cdef int k
        cdef Py_ssize_t i
        for k in range(self.nstates):
            if not hyper.need[k] or self.has_state[k]:
                continue
            for i in range(self.ntensors):
                if (run_of == NULL or run_of[i] == r) and \
                        self.arrays[ROW * i + 1 + k] == NULL:
                    raise ValueError(f"Invalid {self.state_names[k]}: required when "
                                     f"{self.state_why[k]}, but the optimizer was built "
                                     f"without it (for {self.param_names[i]})")
        return 0

    cdef int _prepare_runs(self, object runs, const Py_ssize_t* run_of, Consts* c,
                           double* grad_mul, ScalarState* sc, unsigned* smask,
                           list sct) except -1:
        """Check each run (hyper, step, scalars) and compute its loop constants into
        ``c[r]``, ``grad_mul[r]``, ``sc[r]`` and the states it uses into ``smask[r]``; its
        scalar arrays are appended to ``sct``."""
        cdef Py_ssize_t r
        cdef Hyperparams hp
        for r in range(len(runs)):
            run = runs[r]
            if type(run) is not tuple or len(<tuple>run) != 3:
                raise TypeError(f"Invalid runs[{r}]: expected a tuple (hyper, step, scalars), "
                                f"got {type(run).__name__}")
            hyper, step, scalars = <tuple>run
            if not isinstance(hyper, Hyperparams):
                raise TypeError(f"Invalid runs[{r}]: expected a Hyperparams from validate(), "
                                f"got {type(hyper).__name__}")
            hp = <Hyperparams>hyper
            sct.append(self._scalars(scalars, &sc[r]))
            if hp.kernel != self.kernel:
                raise ValueError("Plan: built for another optimizer")
            _prepare(hp, &c[r], &grad_mul[r], _step(step), &sc[r])
            smask[r] = hp.smask()
            self._check_states(hp, run_of, r)
        return 0

    cdef cnp.ndarray _run_of(self, object run_of, Py_ssize_t nruns):
        """``run_of`` checked: a 1-d intp array, per tensor its run or -1."""
        cdef Py_ssize_t i
        cdef const Py_ssize_t* ro
        if (not cnp.PyArray_Check(run_of) or cnp.PyArray_TYPE(<cnp.ndarray>run_of) != cnp.NPY_INTP
                or cnp.PyArray_NDIM(<cnp.ndarray>run_of) != 1
                or not cnp.PyArray_CHKFLAGS(<cnp.ndarray>run_of, cnp.NPY_ARRAY_C_CONTIGUOUS)):
            raise TypeError(f"Invalid run_of: expected a contiguous 1-d numpy.intp array, got "
                            f"{type(run_of).__name__}")
        if cnp.PyArray_SIZE(<cnp.ndarray>run_of) != self.ntensors:
            raise ValueError(f"Invalid run_of: expected {self.ntensors} run indices (one per "
                             f"param), got {cnp.PyArray_SIZE(<cnp.ndarray>run_of)}")
        ro = <const Py_ssize_t*>cnp.PyArray_DATA(<cnp.ndarray>run_of)
        for i in range(self.ntensors):
            if not -1 <= ro[i] < nruns:
                raise ValueError(f"Invalid run_of[{i}]: {ro[i]} (expected -1 or a run index "
                                 f"below {nruns})")
        return <cnp.ndarray>run_of

    def check(self, Hyperparams hyper not None, step, nonfinite="propagate",
              max_grad_norm=None, grad_scale=None, scalars=None, rounding="nearest", seed=0):
        """Raise what :meth:`step` would raise for these arguments before it looks at the
        grads (the step's loop constants; a state the options need and the plan lacks; the
        gradient policy; the scalar states). For callers that must check several plans
        before stepping any. Writes nothing (the scalar states neither)."""
        self._steps(None, None, None, nonfinite, max_grad_norm, grad_scale, rounding, seed,
                    False, hyper, step, scalars)

    def check_runs(self, runs, run_of=None, nonfinite="propagate", max_grad_norm=None,
                   grad_scale=None, rounding="nearest", seed=0):
        """:meth:`check` for :meth:`step_runs`' arguments but the grads. Writes nothing."""
        self._steps(None, runs, run_of, nonfinite, max_grad_norm, grad_scale, rounding, seed,
                    False)

    def step(self, grads, Hyperparams hyper not None, step, nonfinite="propagate",
             max_grad_norm=None, grad_scale=None, scalars=None, rounding="nearest", seed=0,
             grad_stats=None):
        """One step over every tensor: ``hyper`` from :func:`validate` (for this plan's
        kernel), ``step`` the 1-based number of this step, then the gradient policy
        (nonfinite, max_grad_norm, grad_scale: see _grad_policy); ``scalars``: for an
        optimizer with per-tensor scalar states (the registry's ``scalars``), a tuple of one
        0-d array per scalar, the value every tensor of this plan has, advanced in place
        when the step is applied; ``rounding`` how the 16-bit params are stored ("nearest"
        even, or "stochastic": from a generator keyed by ``seed``, this step and the
        tensor's index in the plan, so the same at any thread count and after a resume).

        Binds and checks the grads, runs the pre-pass if the policy needs it, then the
        update. Returns False when the step was skipped (nonfinite="skip"), True when
        applied. Everything is checked before anything is written.

        ``grad_stats``: the pre-pass's result combined over several plans or processes (see
        :meth:`grad_stats`); the policy then acts on it and this step makes no pre-pass."""
        return self._steps(grads, None, None, nonfinite, max_grad_norm, grad_scale, rounding,
                           seed, True, hyper, step, scalars, grad_stats)

    def step_runs(self, grads, runs, run_of=None, nonfinite="propagate", max_grad_norm=None,
                  grad_scale=None, rounding="nearest", seed=0, grad_stats=None):
        """One step in several runs, in one call: ``runs`` a list of ``(hyper, step,
        scalars)`` as :meth:`step` takes them; ``run_of`` a 1-d numpy.intp array giving each
        tensor's run, or -1 for a tensor that takes no part (its grad must be None; it and
        its states are not touched). Without ``run_of`` there must be one run, and every
        tensor is in it. The gradient policy covers every grad taking part: the pre-pass
        norm is theirs, and a skipped step skips every run. Everything is checked before
        anything is written. Returns as :meth:`step`."""
        return self._steps(grads, runs, run_of, nonfinite, max_grad_norm, grad_scale, rounding,
                           seed, True, None, None, None, grad_stats)

    def grad_stats(self, grads, runs=None, run_of=None):
        """The pre-pass alone: a float64 array ``[sum of squares, non-finite]`` of the grads
        (as given: not unscaled) of the tensors taking part (``run_of`` as for
        :meth:`step_runs`), ``non-finite`` 1.0 when an element is NaN or inf, else 0.0.
        Such arrays add up: the sum over plans or processes (an all-reduce) is what
        ``step(..., grad_stats=total)`` takes, so that clipping uses the norm of every grad
        and a non-finite grad anywhere skips the step everywhere. Writes nothing."""
        return self._steps(grads, runs, run_of, "propagate", None, None, "nearest", 0, True,
                           None, None, None, None, True)

    cdef object _steps(self, object grads, object runs, object run_of, object nonfinite,
                       object max_grad_norm, object grad_scale, object rounding, object seed,
                       bint apply, Hyperparams hyper=None, object step=None,
                       object scalars=None, object grad_stats=None, bint stats_only=False):
        # ``runs`` None: one run, (hyper, step, scalars), the lean path of step() and check()
        cdef Consts c1
        cdef double gm1, norm, coef, factor = 1.0, scale
        cdef ScalarState sc1
        cdef unsigned sm1 = 0
        cdef Consts* c = &c1
        cdef double* grad_mul = &gm1
        cdef ScalarState* sc = &sc1
        cdef unsigned* smask = &sm1
        cdef GradPolicy pol
        cdef bint bad = False, prepass, stochastic
        cdef double given_sumsq = 0.0, given_bad = 0.0
        cdef uint64_t sd
        cdef Py_ssize_t nruns, b, i, nbuckets, nblocks, n
        cdef const Py_ssize_t* ro = NULL
        cdef cnp.ndarray run_arr
        cdef const Seg* segs = self.segs
        cdef const Py_ssize_t* first = self.first
        cdef const Py_ssize_t* total = self.total
        cdef Py_ssize_t* rfirst = NULL
        cdef Py_ssize_t* rtotal = NULL
        cdef double* blocks = self.blocks
        cdef double* rblocks = NULL
        cdef list sct = None
        cdef tuple sct1 = None
        if runs is None:
            nruns = 1
        elif type(runs) is not list or not len(<list>runs):
            raise TypeError("Invalid runs: expected a non-empty list of (hyper, step, "
                            "scalars) tuples")
        else:
            nruns = len(<list>runs)
        if run_of is None:
            if nruns != 1:
                raise ValueError(f"Invalid run_of: required with more than one run "
                                 f"({nruns} given)")
        else:
            run_arr = self._run_of(run_of, nruns)
            ro = <const Py_ssize_t*>cnp.PyArray_DATA(run_arr)
        nbuckets = nruns * N_CLASSES
        try:
            if nruns > 1:
                c = <Consts*>malloc(nruns * sizeof(Consts))
                grad_mul = <double*>malloc(nruns * sizeof(double))
                sc = <ScalarState*>malloc(nruns * sizeof(ScalarState))
                smask = <unsigned*>malloc(nruns * sizeof(unsigned))
                if c == NULL or grad_mul == NULL or sc == NULL or smask == NULL:
                    raise MemoryError()
            if runs is None and stats_only:
                pass                # the pre-pass alone: no hyperparameters
            elif runs is None:
                sct1 = self._scalars(scalars, sc)
                if hyper.kernel != self.kernel:
                    raise ValueError("Plan: built for another optimizer")
                _prepare(hyper, c, grad_mul, _step(step), sc)
                smask[0] = hyper.smask()
                self._check_states(hyper, NULL, 0)
            else:
                sct = []
                self._prepare_runs(runs, ro, c, grad_mul, sc, smask, sct)
            _grad_policy(&pol, nonfinite, max_grad_norm, grad_scale)
            if grad_stats is not None:
                given_sumsq, given_bad = _given_stats(grad_stats)
            stochastic = _stochastic(rounding)
            sd = _seed(seed)
            if not apply:
                return None
            prepass = stats_only or (pol.nonfinite != NONFINITE_PROPAGATE
                                     or pol.max_norm > 0.0)
            # The kernels run without the GIL: a second thread must not rebind the grads
            # of a step in flight. (The optimizer classes hold a lock, so they never get
            # here.)
            if self.busy:
                raise RuntimeError("Invalid call: this optimizer is already stepping in "
                                   "another thread; steps of one optimizer must not overlap")
            self.busy = True
            try:
                self._bind(grads, ro)
                if self.any_half:
                    self._round(stochastic, sd, runs, ro, step)
                if ro != NULL or self.regroup:
                    # The segments taking part, bucketed by (run, class) in tensor order.
                    rfirst = <Py_ssize_t*>calloc(nbuckets + 1, sizeof(Py_ssize_t))
                    rtotal = <Py_ssize_t*>calloc(nbuckets, sizeof(Py_ssize_t))
                    if rfirst == NULL or rtotal == NULL:
                        raise MemoryError()
                    for i in range(self.ntensors):
                        if ro == NULL or ro[i] >= 0:
                            b = self._bucket(i, ro)
                            rfirst[b + 1] += 1
                            rtotal[b] += self.segs[self.slot[i]].n
                    nblocks = 0
                    for b in range(nbuckets):
                        rfirst[b + 1] += rfirst[b]
                        nblocks += _sumsq_nblocks(rtotal[b])
                    for i in range(self.ntensors):
                        if ro == NULL or ro[i] >= 0:
                            b = self._bucket(i, ro)
                            self.rsegs[rfirst[b]] = self.segs[self.slot[i]]
                            rfirst[b] += 1
                    for b in range(nbuckets, 0, -1):      # back to each bucket's start
                        rfirst[b] = rfirst[b - 1]
                    rfirst[0] = 0
                    segs, first, total = self.rsegs, rfirst, rtotal
                    if prepass:
                        rblocks = <double*>malloc(max(nblocks, 1) * sizeof(double))
                        if rblocks == NULL:
                            raise MemoryError()
                        blocks = rblocks
                self.grad_norm = NAN
                if prepass and grad_stats is None:
                    with nogil:
                        bad = self._prepass(segs, first, total, nbuckets, blocks)
                    if stats_only:
                        return np.array([self.sumsq, 1.0 if bad else 0.0])
                elif prepass:
                    bad = given_bad > 0.0
                    self.sumsq = given_sumsq
                    self.grad_norm = sqrt(given_sumsq)
                if prepass:
                    if bad and pol.nonfinite == NONFINITE_SKIP:
                        return False
                    if bad and pol.nonfinite == NONFINITE_RAISE:
                        raise FloatingPointError(self._first_nonfinite(grads))
                    norm = self.grad_norm / pol.scale
                    self.grad_norm = norm
                    if pol.max_norm > 0.0:
                        # torch.nn.utils.clip_grad_norm_: min(1, max_norm / (norm + 1e-6)),
                        # with a NaN norm propagating (as torch's clamp does)
                        coef = pol.max_norm / (norm + 1e-6)
                        factor = 1.0 if coef >= 1.0 else coef
                scale = factor / pol.scale
                with nogil:
                    for b in range(nbuckets):
                        n = first[b + 1] - first[b]
                        if n:
                            _run(self.kernel, b % N_CLASSES, &c[b // N_CLASSES],
                                 grad_mul[b // N_CLASSES] * scale, segs + first[b], n,
                                 total[b], smask[b // N_CLASSES])
                if self.nscalars and runs is None:
                    _write_scalars(sc, sct1)
                elif self.nscalars:
                    for b in range(nruns):      # a run with no tensor advances nothing
                        if ro == NULL or first[(b + 1) * N_CLASSES] > first[b * N_CLASSES]:
                            _write_scalars(&sc[b], <tuple>sct[b])
                return True
            finally:
                self.busy = False
        finally:
            if nruns > 1:
                free(c)
                free(grad_mul)
                free(sc)
                free(smask)
            free(rfirst)
            free(rtotal)
            free(rblocks)
