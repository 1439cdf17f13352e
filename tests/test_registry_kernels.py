"""Every row of tests/optimizers.py, from the row alone: the functional kernel against its
fastadam.reference twin (docs/contract.md#accuracy; the same bits where the row says the
kernel does the reference's operations in its order), every SIMD path and 1, 2 and 3
threads bit-identical, the NumPy class against the reference over many steps (states
included), and a state_dict resume bit for bit.

The grid is sampled to stay fast: every option set at one odd size and at one other size
taken in turn, every sixth option set at 100003 elements for a few steps, and every size
(0, 1, the SIMD tails, 100003) at the option set with every state, 100 steps each; float32
and float64 throughout (a per-tensor scalar state in the param's dtype, and every option set
again with it in the other one). The kernels start from random states (not zeros), so that
a kernel that ignored a state would be caught. The functionals' and the NumPy classes'
defaults are the row's.
"""

import numpy as np
import pytest

import fastadam
from fastadam import _registry
import optimizers as registry
from conftest import DTYPES, assert_close, rand, run_python

# A watchdog for a hang, not a speed limit: the child takes seconds; 300 s leaves room for
# a loaded machine and the sanitizer build (several times slower).
WATCHDOG_S = 300
STEPS = 100
# Around every SIMD width (4/8/16 lanes) and the unrolled bodies: vector bodies and tails.
TAILS = (7, 15, 17, 31, 33, 63, 65)
SIZES = (0, 1) + TAILS + (100003,)
ODD = 33                # the size every option set runs at
ROTATING = (0, 1, 7, 15, 16, 17, 31, 63, 65, 1000)     # and one of these, in turn
LARGE = 100003
LARGE_STEPS = 2         # every sixth option set at LARGE: a few steps
# The NumPy classes' params: shapes (0-d and empty too), float32 and float64 interleaved.
SPECS = [((3, 4), np.float32), ((17,), np.float64), ((), np.float32), ((2, 3, 5), np.float64),
         ((0,), np.float32), ((33,), np.float32), ((1,), np.float64)]


def step_variants(info):
    """Whether a call passes ``step``: always ("required"), never ("none"), or both."""
    return {"required": (True,), "optional": (True, False), "none": (False,)}[info.kernel_step]


def _cases(every=1):
    """(info, option set, use_step) over the registry: every ``every``-th option set of
    each row and its last."""
    cases, ids = [], []
    for info in registry.OPTIMIZERS:
        sets = info.option_sets()
        for i, h in enumerate(sets):
            if i % every and i != len(sets) - 1:
                continue
            for use_step in step_variants(info):
                cases.append((info, h, use_step))
                ids.append(f"{info.name}-{registry.set_id(h)}"
                           + ("" if use_step or info.kernel_step == "none" else "-no_step"))
    return cases, ids


OPTION_CASES, OPTION_IDS = _cases()
LARGE_CASES, LARGE_IDS = _cases(every=6)
ROWS = [pytest.param(info, id=info.name) for info in registry.OPTIMIZERS]
SCALAR_ROWS = [pytest.param(info, id=info.name) for info in registry.OPTIMIZERS
               if info.scalar_names]
dtypes = pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)


# ------------------------------------------------------------------------------ helpers

def draw(kind, rng, shape, dtype):
    """Random values as a row samples them: "normal", "pos" or a function."""
    return kind(rng, shape, dtype) if callable(kind) else rand(rng, shape, dtype, kind)


def random_states(info, hyper, rng, shape, dtype, scalar_dtype=None):
    """Random (not zero) initial states for ``hyper``, as the row samples them; the
    per-tensor scalar states in ``scalar_dtype`` (default: the param's)."""
    h = info.full(hyper)
    states = {s.name: draw(s.sample, rng, s.shape(shape),
                           (scalar_dtype or dtype) if s.scalar else dtype)
              for s in info.states if s.present(h)}
    if info.fix_states is not None:
        info.fix_states(states)
    return states


def copy_states(states):
    return {k: np.array(v, copy=True) for k, v in states.items()}


def assert_same(a, b, where, bitwise):
    """``a`` (fastadam) against ``b`` (the reference): the same bits, or the accuracy."""
    a, b = np.asarray(a), np.asarray(b)
    if bitwise:
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert a.tobytes() == b.tobytes(), f"{where}: not the reference's bits " \
            f"({np.count_nonzero(a != b)} elements differ)"
    assert_close(a, b, where)


def compare(info, hyper, p, states, p_ref, states_ref, where):
    bitwise = info.bitwise(info.full(hyper))
    assert_same(p, p_ref, f"param, {where}", bitwise)
    assert set(states) == set(states_ref), where
    arrays = {s.name for s in info.states}
    assert {k for k in states if k in arrays} == set(info.state_names(hyper)), where
    for name in states:
        assert_same(states[name], states_ref[name], f"{name}, {where}", bitwise)


GRAD_POOL = 11          # distinct random gradients a trajectory cycles through


def trajectory(info, hyper, use_step, dtype, n, steps, seed=0, check_at=(),
               scalar_dtype=None):
    """Kernel and reference side by side from the same random start; param and every
    state compared after the steps in ``check_at`` and the last. The gradients cycle
    through GRAD_POOL random ones (drawing 100 of 100003 elements would cost more than the
    steps)."""
    rng = np.random.default_rng(seed)
    p = rand(rng, n, dtype)
    states = random_states(info, hyper, rng, n, dtype, scalar_dtype)
    p_ref, states_ref = p.copy(), copy_states(states)
    pool = [draw(info.grad_sample, rng, n, dtype) for _ in range(min(steps, GRAD_POOL))]
    pool_before = [g.copy() for g in pool]
    for t in range(1, steps + 1):
        g = pool[(t - 1) % len(pool)]
        step = t if use_step else None
        assert info.call(info.kernel, p, g, states, hyper, step) is None
        info.call(info.reference, p_ref, g, states_ref, hyper, step)
        if t in check_at or t == steps:
            compare(info, hyper, p, states, p_ref, states_ref,
                    f"{info.name} {dtype.__name__} n={n} t={t}")
    assert all(np.array_equal(g, g0) for g, g0 in zip(pool, pool_before)), \
        "a grad was modified"
    assert np.isfinite(p_ref).all(), "the comparison was between NaNs"
    return p, states


def rich_step(info):
    """The option set with every state, and whether its calls pass ``step``."""
    return info.rich(), step_variants(info)[0]


# ------------------------------------------------------------------------------ accuracy

@dtypes
@pytest.mark.parametrize("info, hyper, use_step", OPTION_CASES, ids=OPTION_IDS)
def test_every_option_set_matches_reference(info, hyper, use_step, dtype):
    """At ODD elements, and at one more size taken in turn from ROTATING (each option
    combination is its own unswitched loop, with its own vector body and tail)."""
    n = ROTATING[OPTION_CASES.index((info, hyper, use_step)) % len(ROTATING)]
    for size in (ODD, n):
        trajectory(info, hyper, use_step, dtype, size, STEPS, seed=size, check_at=(1, 2))


@dtypes
@pytest.mark.parametrize("info, hyper, use_step", LARGE_CASES, ids=LARGE_IDS)
def test_option_sets_match_reference_large(info, hyper, use_step, dtype):
    """Every sixth option set of each row (and its last) at 100003 elements."""
    trajectory(info, hyper, use_step, dtype, LARGE, LARGE_STEPS)


@dtypes
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("info", ROWS)
def test_every_size_matches_reference(info, n, dtype):
    hyper, use_step = rich_step(info)
    trajectory(info, hyper, use_step, dtype, n, STEPS, seed=n, check_at=(1, 2))


@dtypes
@pytest.mark.parametrize("info", SCALAR_ROWS)
def test_scalar_states_in_the_other_dtype_match_reference(info, dtype, simd_path):
    """A per-tensor scalar state is float32 or float64 whatever its param's dtype (torch
    keeps them in its default dtype): every option set with them in the other dtype, on
    every SIMD path; they stay in their dtype."""
    other = np.float64 if dtype == np.float32 else np.float32
    for i, hyper in enumerate(info.option_sets()):
        for n in (ODD, ROTATING[i % len(ROTATING)]):
            _, states = trajectory(info, hyper, step_variants(info)[0], dtype, n, STEPS,
                                   seed=n, check_at=(1, 2), scalar_dtype=other)
            assert all(states[k].dtype == other and states[k].shape == ()
                       for k in info.scalar_names)


@pytest.mark.parametrize("info", ROWS)
def test_each_simd_path_matches_reference(info, simd_path):
    assert fastadam.get_simd_path() == simd_path
    sets = info.option_sets()
    for hyper in (sets[0], info.rich(), sets[-1]):
        for dtype in DTYPES:
            for n in (15, 16, 17, 33, 65):
                trajectory(info, hyper, step_variants(info)[0], dtype, n, 20, seed=n)


@pytest.mark.parametrize("info", ROWS)
def test_every_flag_changes_the_result(info):
    """Against a vacuous comparison (a kernel ignoring an option would still match a
    reference that ignores it too, or every SIMD path could skip it alike): for each on/off
    option there is a configuration of the other options where its values give distinct
    params after 3 steps."""
    grid = [{k: h[k] for k in info.flags} for h in info.option_sets()
            if set(info.flags) <= set(h)]
    use_step = step_variants(info)[0]
    for name, values in info.flags.items():
        for base in grid:
            results = []
            for v in values:
                h = dict(base, **{name: v})
                if info.requires(info.full(h)):
                    results.append(trajectory(info, h, use_step, np.float64, 50, 3)[0].tobytes())
            if len(results) == len(values) == len(set(results)):
                break
        else:
            raise AssertionError(f"{info.name}: {name} changes nothing in any configuration")


@dtypes
@pytest.mark.parametrize("info", ROWS)
def test_functional_defaults_are_the_rows(info, dtype):
    """The kernel called with no hyperparameter (``step`` alone, where it takes one) is
    the reference called with the row's ``kernel_defaults``."""
    rng = np.random.default_rng(2)
    p = rand(rng, ODD, dtype)
    states = random_states(info, {}, rng, ODD, dtype)
    p_ref, states_ref = p.copy(), copy_states(states)
    step = {} if info.kernel_step == "none" else {"step": 3}
    for t in range(2):
        g = draw(info.grad_sample, rng, ODD, dtype)
        info.kernel(p, g, *(states[n] for n in info.arrays[2:]),
                    **{n: states[n] for n in info.optional if n in states}, **step)
        info.call(info.reference, p_ref, g, states_ref, {}, step.get("step"))
    compare(info, {}, p, states, p_ref, states_ref, f"{info.name} defaults")


# ------------------------------------------------------------------------------ SIMD paths

def simd_run(info, hyper, use_step, dtype, n, wide, steps=4):
    rng = np.random.default_rng(n)
    p = rand(rng, n, dtype)
    states = random_states(info, hyper, rng, n, dtype)
    for t in range(1, steps + 1):
        g = draw(info.grad_sample, rng, n, dtype)
        if wide:    # magnitudes from subnormal to large, and exact zeros
            lo, hi = (-44, 6) if dtype == np.float32 else (-318, 60)
            g *= (10.0 ** rng.uniform(lo, hi, n)).astype(dtype)
            g[::7] = 0
        info.call(info.kernel, p, g, states, hyper, t if use_step else None)
    return [p] + [states[k] for k in sorted(states)]


@pytest.mark.skipif(len(fastadam.available_simd_paths()) < 2, reason="one SIMD path only")
@pytest.mark.parametrize("info, hyper, use_step", OPTION_CASES, ids=OPTION_IDS)
def test_simd_paths_bit_identical(info, hyper, use_step):
    paths = fastadam.available_simd_paths()
    with np.errstate(all="ignore"):     # wide data may overflow: NaN == NaN below
        for dtype in DTYPES:
            for n in (1, 7, 17, 33, 1037):
                for wide in (False, True):
                    results = {}
                    for path in paths:
                        old = fastadam.set_simd_path(path)
                        try:
                            assert fastadam.get_simd_path() == path
                            results[path] = simd_run(info, hyper, use_step, dtype, n, wide)
                        finally:
                            fastadam.set_simd_path(old)
                    for path in paths[1:]:
                        for i, (a, b) in enumerate(zip(results[paths[0]], results[path])):
                            assert np.array_equal(a, b, equal_nan=True), \
                                f"array {i}, {paths[0]} vs {path}, {dtype.__name__}, " \
                                f"n={n}, wide={wide}"


# ------------------------------------------------------------------------------ threads

# Enough elements for 3 threads at any kernel's measured threshold (or the default one).
REAL_N = 3 * max(max(o.min_per_thread or _registry.DEFAULT_MIN_PER_THREAD)
                 for o in _registry.OPTIMIZERS) + 7

def thread_mismatches(name):
    """1 vs 2 vs 3 threads for row ``name``: every option set on arrays split into parts by
    a lowered threshold (part boundaries inside the vector body), and the rich option set
    at the measured thresholds on REAL_N elements; the NumPy class stepping many tensors of
    both dtypes (parts across tensors) at both. Returns the list of mismatches."""
    from fastadam import _core
    info = registry.BY_NAME[name]
    bad = []

    def functional(hyper, use_step, dtype, n, steps=3):
        """A run on fixed random data, for a thread count."""
        rng = np.random.default_rng(n)
        p0 = rand(rng, n, dtype)
        states0 = random_states(info, hyper, rng, n, dtype)
        grads = [draw(info.grad_sample, rng, n, dtype) for _ in range(steps)]

        def run(threads):
            fastadam.set_num_threads(threads)
            p, states = p0.copy(), copy_states(states0)
            for t, g in enumerate(grads, 1):
                info.call(info.kernel, p, g, states, hyper, t if use_step else None)
            return [p] + [states[k] for k in sorted(states)]
        return run

    def numpy_class(hyper, specs, steps=3):
        rng = np.random.default_rng(0)
        params0 = [rand(rng, n, dt) for n, dt in specs]
        grads = [[rand(rng, n, dt) for n, dt in specs] for _ in range(steps)]

        def run(threads):
            fastadam.set_num_threads(threads)
            params = [a.copy() for a in params0]
            opt = info.cls(params, **hyper)
            for g in grads:
                opt.step(g)
            return params + [v for i in range(len(specs))
                             for k, v in sorted(opt.state[i].items())]
        return run

    def check(what, run):
        base = run(1)
        for threads in (2, 3):
            got = run(threads)
            for i, (a, b) in enumerate(zip(base, got)):
                if a.tobytes() != b.tobytes():
                    bad.append(f"{what} threads={threads} array {i}: "
                               f"{np.count_nonzero(a != b)} elements differ")

    old_threads, old_min = fastadam.get_num_threads(), _core._set_min_per_thread(1024)
    try:
        small = [(3007, np.float32), (1, np.float64), (5, np.float32), (2621, np.float64),
                 (4501, np.float32), (4003, np.float64), (3, np.float32)]
        for hyper in info.option_sets():
            for use_step in step_variants(info):
                for dtype in DTYPES:
                    check(f"{registry.set_id(hyper)} step={use_step} {dtype.__name__} n=10007",
                          functional(hyper, use_step, dtype, 10007))
            check(f"class {registry.set_id(hyper)}", numpy_class(hyper, small))
        _core._set_min_per_thread(0)       # the measured thresholds
        hyper, use_step = rich_step(info)
        for dtype in DTYPES:
            check(f"rich {dtype.__name__} n={REAL_N}",
                  functional(hyper, use_step, dtype, REAL_N))
        half = REAL_N // 2
        large = [(half, np.float32), (1, np.float64), (5, np.float32), (half + 3, np.float64),
                 (half + 1, np.float32), (half + 5, np.float64), (3, np.float32)]
        check(f"class rich, {2 * REAL_N} elements", numpy_class(hyper, large))
    finally:
        fastadam.set_num_threads(old_threads)
        _core._set_min_per_thread(old_min)
    return bad


@pytest.mark.parametrize("info", ROWS)
def test_thread_counts_bit_identical(info):
    """In a child process, so that a hang in the native thread pool fails this test
    instead of freezing the session."""
    r = run_python(f"""
        import sys
        import test_registry_kernels as t
        bad = t.thread_mismatches({info.name!r})
        print("\\n".join(bad))
        print("done", flush=True)
        sys.exit(1 if bad else 0)
        """, timeout=WATCHDOG_S)
    assert r.returncode == 0 and "done" in r.stdout, r.stdout + r.stderr


# ------------------------------------------------------------------------------ NumPy class

def structure(arrays, kind):
    if kind == "list":
        return list(arrays)
    if kind == "tuple":
        return tuple(arrays)
    return {f"w{i}": a for i, a in enumerate(arrays)}


def _class_cases():
    cases, ids = [], []
    for info in registry.OPTIMIZERS:
        rich = info.rich()
        for h in info.option_sets():
            for kind in (("list", "tuple", "dict") if h == rich else ("list",)):
                cases.append((info, h, kind))
                ids.append(f"{info.name}-{registry.set_id(h)}-{kind}")
    return cases, ids


CLASS_CASES, CLASS_IDS = _class_cases()


@pytest.mark.parametrize("info", ROWS)
def test_numpy_class_defaults_and_initial_state(info):
    """fastadam.X's group holds the row's defaults; each param starts with the row's
    states, in its order, each as ``initial_states`` makes it."""
    arrays = [np.ones((2, 3)), np.ones(5, np.float32), np.ones((), np.float32)]
    opt = info.cls(arrays)
    group = dict(opt.param_groups[0])
    assert [id(a) for a in group.pop("params")] == [id(a) for a in arrays]
    assert group == opt.defaults == info.defaults
    for i, a in enumerate(arrays):
        want = info.initial_states({}, a)
        assert list(opt.state[i]) == info.state_names({}) == list(want)
        for name, w in want.items():
            got = opt.state[i][name]
            assert (got.dtype, got.shape, got.tobytes()) == (w.dtype, w.shape, w.tobytes()), \
                (i, name)


@pytest.mark.parametrize("info, hyper, kind", CLASS_CASES, ids=CLASS_IDS)
def test_numpy_class_matches_reference(info, hyper, kind):
    """fastadam.X over tensors of several shapes and both dtypes against the reference
    applied per param, its states started as the class starts them, for 100 steps."""
    rng = np.random.default_rng(0)
    arrays = [rand(rng, s, d) for s, d in SPECS]
    ref_p = [a.copy() for a in arrays]
    ref_states = [info.initial_states(hyper, a) for a in arrays]
    params = structure(arrays, kind)
    keys = list(params) if kind == "dict" else list(range(len(arrays)))
    opt = info.cls(params, **hyper)
    assert len(opt.param_groups[0]["params"]) == len(arrays)
    assert all(a is b for a, b in zip(opt.param_groups[0]["params"], arrays))
    for t in range(1, STEPS + 1):
        grads = [rand(rng, a.shape, a.dtype) for a in arrays]
        assert opt.step(structure(grads, kind)) is True
        assert opt.step_count == t
        for p, g, st in zip(ref_p, grads, ref_states):
            info.call(info.reference, p, g, st, hyper, t)
        if t in (1, 2, STEPS):
            for key, a, p, st in zip(keys, arrays, ref_p, ref_states):
                compare(info, hyper, a, opt.state[key], p, st, f"param {key!r}, step {t}")
    assert all(np.isfinite(p).all() for p in ref_p)


@pytest.mark.parametrize("kind", ["list", "dict"])
@pytest.mark.parametrize("info", ROWS)
def test_resume_is_bit_identical(info, kind):
    """state_dict after 10 steps, loaded into a new optimizer built with another lr over
    copies of the params: the next 10 steps give the same bits, state_dict included."""
    rich = info.rich()
    rng = np.random.default_rng(5)
    arrays = [rand(rng, s, d) for s, d in SPECS]
    grads = [structure([rand(rng, a.shape, a.dtype) for a in arrays], kind)
             for _ in range(20)]
    params = structure([a.copy() for a in arrays], kind)

    def values(ps):
        return list(ps.values()) if kind == "dict" else list(ps)

    opt = info.cls(params, **rich)
    for g in grads[:10]:
        opt.step(g)
    sd = opt.state_dict()
    saved = [p.copy() for p in values(params)]
    for g in grads[10:]:
        opt.step(g)
    params2 = structure([p.copy() for p in saved], kind)
    opt2 = info.cls(params2, **dict(rich, lr=0.123))
    opt2.load_state_dict(sd)
    assert opt2.step_count == 10
    assert opt2.param_groups[0]["lr"] == rich.get("lr", info.defaults["lr"])
    for g in grads[10:]:
        opt2.step(g)
    assert opt2.step_count == opt.step_count == 20
    for p, q in zip(values(params), values(params2)):
        assert p.tobytes() == q.tobytes()
    a, b = opt.state_dict(), opt2.state_dict()
    assert a["param_groups"] == b["param_groups"]
    assert a["state"].keys() == b["state"].keys()
    for key in a["state"]:
        assert a["state"][key].keys() == b["state"][key].keys() == \
            set(info.state_names(rich)) | {"step"}
        for name, v in a["state"][key].items():
            if name == "step":
                assert v == b["state"][key][name] == 20
            else:
                assert v.tobytes() == b["state"][key][name].tobytes(), (key, name)
