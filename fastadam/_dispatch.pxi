# Which compiled kernels run (SIMD path) and on how many threads.

import os
import warnings

cdef extern from "fa_cpu.h":
    int fa_cpu_has_avx2() nogil
    int fa_cpu_has_avx512() nogil

cdef extern from "fa_pool.h":
    ctypedef void (*fa_task_fn)(void* ctx, int part, int nparts) noexcept nogil
    void fa_pool_run(fa_task_fn fn, void* ctx, int nparts) nogil

SIMD_PATHS = ("baseline", "avx2", "avx512")   # from lowest to highest

cdef const KernelTable* _table = NULL
cdef dict _tables = {}          # path name -> capsule, for the paths this CPU can run
cdef dict _import_errors = {}   # path name -> why its module did not import, for the same
_simd_path = None


def _load_tables():
    import importlib
    cdef bint cpu[3]
    cpu[0] = True
    cpu[1] = fa_cpu_has_avx2()
    cpu[2] = fa_cpu_has_avx512()
    for i, name in enumerate(SIMD_PATHS):
        # Never import a module the CPU cannot run: its code uses those instructions.
        if not cpu[i]:
            continue
        try:
            mod = importlib.import_module(f"fastadam._simd_{name}")
            table = mod.table()
        except Exception as e:
            # Not built (a build for other architectures too leaves it out), or broken: an
            # undefined symbol, say. The other paths still run; the error is kept for
            # show_config() and the tests, which know the paths this CPU must have.
            _import_errors[name] = f"{type(e).__name__}: {e}"
            continue
        _tables[name] = table


def available_simd_paths():
    """The SIMD paths this CPU can run and this build has, lowest first."""
    return tuple(p for p in SIMD_PATHS if p in _tables)


def simd_import_errors():
    """{path: error} for each SIMD path this CPU can run whose module failed to import."""
    return dict(_import_errors)


def get_simd_path():
    """The SIMD path the kernels run on now: 'baseline', 'avx2' or 'avx512'."""
    return _simd_path


def set_simd_path(path):
    """Run the kernels on ``path`` (one of :func:`available_simd_paths`); returns the old one.

    All paths give the same bits; this is for testing and benchmarking them.
    """
    global _table, _simd_path
    if not isinstance(path, str):
        raise TypeError(f"Invalid path: expected a str, got {type(path).__name__}")
    path = path.strip().lower()
    if path not in _tables:
        raise ValueError(f"Invalid SIMD path {path!r}: this CPU and build have "
                         f"{available_simd_paths()}")
    old = _simd_path
    _table = <const KernelTable*>PyCapsule_GetPointer(_tables[path], b"fastadam.KernelTable")
    _simd_path = path
    return old


def _select_simd():
    _load_tables()
    if "baseline" not in _tables:
        raise ImportError(f"fastadam's baseline kernels did not import: "
                          f"{_import_errors['baseline']}")
    paths = available_simd_paths()
    best = paths[len(paths) - 1]
    want = os.environ.get("FASTADAM_SIMD", "").strip().lower()
    if want and want not in _tables:
        why = "not available on this CPU" if want in SIMD_PATHS else "not a SIMD path"
        warnings.warn(f"FASTADAM_SIMD={want!r} is {why}; using {best!r}. Choose from "
                      f"{available_simd_paths()}.", RuntimeWarning, stacklevel=2)
        want = ""
    set_simd_path(want or best)


_select_simd()


# ---------------------------------------------------------------------------- threads

# Below this many elements per thread, handing work to a worker (~8 µs here: a wake-up
# and a hand-back) costs more than it saves; the break-even depends on the kernel's cost per
# element. Measured on 2 cores (1 vs 2 threads, side by side), rounded to powers of two, and
# kept in fastadam/_registry.py (``min_per_thread``; a kernel without a measured row gets
# DEFAULT_MIN_PER_THREAD). [kernel][compute dtype], filled in by _optimizers.pxi.
cdef Py_ssize_t MIN_PER_THREAD[N_KERNELS][N_COMPUTE]
cdef Py_ssize_t _min_override = 0
# A worker reads the segment table the caller has just written (new grad pointers each
# step): a cross-core cache miss per segment, ~0.2 µs here. Many tiny tensors (1000 of 100
# elements) therefore run faster on one thread; below this average size they do.
cdef Py_ssize_t MIN_AVG_SEGMENT = 512


def _set_min_per_thread(Py_ssize_t n):
    """Use ``n`` elements per thread as every kernel's threshold (0: the measured table).

    For tests and tuning; returns the previous override."""
    global _min_override
    if n < 0:
        raise ValueError(f"Invalid n: {n} (must be >= 0)")
    old = _min_override
    _min_override = n
    return old


# Thread chunks are multiples of this many elements: whole cache lines, SIMD-aligned.
cdef Py_ssize_t CHUNK_ALIGN = 64

cdef int _num_threads = 1


def _default_threads():
    env = os.environ.get("FASTADAM_NUM_THREADS", "").strip()
    if env:
        try:
            n = int(env)
            if 1 <= n <= 256:
                return n
        except ValueError:
            pass
        warnings.warn(f"FASTADAM_NUM_THREADS={env!r} is not a whole number from 1 to 256; ignored",
                      RuntimeWarning, stacklevel=2)
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    # Several ranks on one node (torchrun sets LOCAL_WORLD_SIZE): share its CPUs.
    local = os.environ.get("LOCAL_WORLD_SIZE", "").strip()
    if local:
        try:
            ranks = int(local)
            if ranks >= 1:
                return max(1, cpus // ranks)
        except ValueError:
            pass
        warnings.warn(f"LOCAL_WORLD_SIZE={local!r} is not a whole number >= 1; ignored",
                      RuntimeWarning, stacklevel=2)
    return cpus


def set_num_threads(n):
    """Use up to ``n`` threads per step (arrays below a size threshold use one).

    Results are the same bits for any ``n``. Returns the previous setting.
    """
    global _num_threads
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"Invalid n: expected an int, got {type(n).__name__}")
    if not 1 <= n <= 256:
        raise ValueError(f"Invalid n: {n} (must be between 1 and 256)")
    old = _num_threads
    _num_threads = n
    return old


def get_num_threads():
    """The number of threads a large step may use (FASTADAM_NUM_THREADS, else the CPUs
    this process may run on, divided by LOCAL_WORLD_SIZE when that is set)."""
    return _num_threads


set_num_threads(min(_default_threads(), 256))   # CPUs beyond 256 go unused


# How a segment runs (_seg_class): its compute dtype's kernel directly (F32, F64), or
# the float32 kernel through the block converter (16-bit arrays, a param_copy).
cdef enum:
    CONVERT = N_COMPUTE
    N_CLASSES = N_COMPUTE + 1


cdef struct Job:
    kernel_fn fn
    convert_fn convert      # NULL: run ``fn`` directly
    const void* consts
    double grad_mul
    const Seg* segs
    Py_ssize_t nseg
    Py_ssize_t per_part     # elements per part (the last part may have fewer)
    Py_ssize_t unit         # each segment counts as a multiple of this many elements
    unsigned smask          # the states the options use (the converter's ``smask``)


cdef inline Py_ssize_t _padded(Py_ssize_t n, Py_ssize_t unit) noexcept nogil:
    return (n + unit - 1) // unit * unit


cdef void _run_part(void* ctx, int part, int nparts) noexcept nogil:
    # Run elements [lo, hi) of the concatenation of all segments, each padded to a multiple
    # of ``unit``: through the converter, every part of a segment then starts at a multiple
    # of Q8_BLOCK (the converter's block, and the 8-bit states').
    cdef const Job* job = <const Job*>ctx
    cdef Py_ssize_t lo = part * job.per_part, hi = lo + job.per_part
    cdef Py_ssize_t start = 0, i, a, b, n
    for i in range(job.nseg):
        n = job.segs[i].n
        if start + _padded(n, job.unit) > lo:
            a = lo - start if lo > start else 0
            b = hi - start if hi - start < n else n
            if a < b and job.convert != NULL:
                job.convert(job.fn, job.consts, job.grad_mul, &job.segs[i], a, b, job.smask)
            elif a < b:
                job.fn(job.consts, job.grad_mul, &job.segs[i], a, b)
        start += _padded(n, job.unit)
        if start >= hi:
            break


cdef inline int _nparts(Py_ssize_t total, Py_ssize_t nseg, Py_ssize_t min_per) noexcept nogil:
    """How many threads a pass over ``total`` elements in ``nseg`` segments should use:
    at least ``min_per`` elements each (or the tests' override), one for many tiny ones."""
    cdef int nparts = _num_threads
    if _min_override:
        min_per = _min_override
    if min_per < 1:
        min_per = 1
    if total // min_per < nparts:
        nparts = <int>(total // min_per)
    if nseg > 1 and total < nseg * MIN_AVG_SEGMENT:
        nparts = 1
    return nparts


cdef void _run(int kernel, int cls, const void* consts, double grad_mul, const Seg* segs,
               Py_ssize_t nseg, Py_ssize_t total, unsigned smask) noexcept nogil:
    """Apply one kernel (its loop constants ``consts``) to every segment, all of one class
    (F32, F64 or CONVERT), split over threads when large enough; ``smask``: the states the
    options use (bit k: state k)."""
    cdef Job job
    cdef Py_ssize_t i
    cdef int comp = F32 if cls == CONVERT else cls
    cdef int nparts = _nparts(total, nseg, MIN_PER_THREAD[kernel][comp])
    job.fn = _table.fn[kernel][comp]
    job.convert = _table.convert if cls == CONVERT else NULL
    job.smask = smask
    if nparts <= 1:
        for i in range(nseg):
            if job.convert != NULL:
                job.convert(job.fn, consts, grad_mul, &segs[i], 0, segs[i].n, smask)
            else:
                job.fn(consts, grad_mul, &segs[i], 0, segs[i].n)
        return
    job.consts = consts
    job.grad_mul = grad_mul
    job.segs = segs
    job.nseg = nseg
    job.unit = 1
    if cls == CONVERT:
        job.unit = Q8_BLOCK
        total = 0
        for i in range(nseg):
            total += _padded(segs[i].n, Q8_BLOCK)
    job.per_part = _padded((total + nparts - 1) // nparts,
                           Q8_BLOCK if cls == CONVERT else CHUNK_ALIGN)
    fa_pool_run(_run_part, &job, nparts)


# ---------------------------------------------------------------------------- gradient pre-pass

# The pre-pass sums squares in fixed blocks of the concatenated grads of one bucket; threads
# take whole blocks, and the blocks are added in order afterwards, so the norm has the same
# bits whatever the thread count.
cdef Py_ssize_t SUMSQ_BLOCK = 4096
# Float32 Adam's break-even: from there the update runs on two threads, and a pre-pass
# left on one would cost more than the hand-off (at 1e5 float32 elements, measured side by
# side: +35% on a two-thread step with a one-thread pre-pass, +25-40% with two threads).
cdef Py_ssize_t SUMSQ_MIN_PER_THREAD = 1 << 15


cdef inline Py_ssize_t _sumsq_nblocks(Py_ssize_t total) noexcept nogil:
    return (total + SUMSQ_BLOCK - 1) // SUMSQ_BLOCK


cdef struct SumsqJob:
    const Seg* segs
    Py_ssize_t nseg
    Py_ssize_t total
    Py_ssize_t nblocks
    Py_ssize_t blocks_per_part
    double* sums            # per block: its sum of squares


cdef void _sumsq_part(void* ctx, int part, int nparts) noexcept nogil:
    # Blocks [b, b_end) of the concatenation of all segments; a block may span segments.
    cdef const SumsqJob* job = <const SumsqJob*>ctx
    cdef Py_ssize_t b = part * job.blocks_per_part
    cdef Py_ssize_t b_end = b + job.blocks_per_part
    cdef Py_ssize_t lo, hi, block_end, start = 0, n, a, e, c, i
    cdef double acc[SUMSQ_LANES]
    cdef double total
    cdef int k
    if b_end > job.nblocks:
        b_end = job.nblocks
    if b >= b_end:
        return
    lo = b * SUMSQ_BLOCK
    hi = b_end * SUMSQ_BLOCK if b_end * SUMSQ_BLOCK < job.total else job.total
    block_end = lo + SUMSQ_BLOCK if lo + SUMSQ_BLOCK < hi else hi
    for k in range(SUMSQ_LANES):
        acc[k] = 0.0
    for i in range(job.nseg):
        n = job.segs[i].n
        if start + n > lo:
            a = lo - start if lo > start else 0
            e = hi - start if hi - start < n else n
            while a < e:
                c = block_end - start if block_end - start < e else e
                _table.sumsq[job.segs[i].gdt](job.segs[i].g, a, c, acc)
                a = c
                if start + a == block_end:
                    # The block is complete: add its lanes in a fixed order.
                    total = 0.0
                    for k in range(SUMSQ_LANES):
                        total = total + acc[k]
                        acc[k] = 0.0
                    job.sums[b] = total
                    b += 1
                    block_end = block_end + SUMSQ_BLOCK if block_end + SUMSQ_BLOCK < hi else hi
        start += n
        if start >= hi:
            break


cdef double _run_sumsq(const Seg* segs, Py_ssize_t nseg, Py_ssize_t total,
                       double* sums) noexcept nogil:
    """The sum of the squares of every grad element (float64), the same bits at any thread
    count; ``sums`` is scratch space for one double per SUMSQ_BLOCK elements."""
    cdef SumsqJob job
    cdef int nparts = _nparts(total, nseg, SUMSQ_MIN_PER_THREAD)
    cdef Py_ssize_t b
    cdef double sumsq = 0.0
    if total == 0:
        return 0.0
    job.segs = segs
    job.nseg = nseg
    job.total = total
    job.nblocks = _sumsq_nblocks(total)
    job.sums = sums
    if nparts > job.nblocks:
        nparts = <int>job.nblocks
    if nparts <= 1:
        job.blocks_per_part = job.nblocks
        _sumsq_part(&job, 0, 1)
    else:
        job.blocks_per_part = (job.nblocks + nparts - 1) // nparts
        fa_pool_run(_sumsq_part, &job, nparts)
    for b in range(job.nblocks):
        sumsq = sumsq + sums[b]
    return sumsq


cdef bint _any_nonfinite_f64(const Seg* segs, Py_ssize_t nseg) noexcept nogil:
    # Only when a float64 sum of squares is not finite: an element, or an overflow?
    cdef const double* g
    cdef Py_ssize_t i, j
    for i in range(nseg):
        if segs[i].gdt != F64:
            continue
        g = <const double*>segs[i].g
        for j in range(segs[i].n):
            if g[j] - g[j] != 0.0:      # NaN for NaN and +-inf, 0 for the rest
                return True
    return False
