"""The functional kernels (sgd_, rmsprop_, adam_, adamw_) against fastadam.reference
(docs/contract.md: update rules, accuracy),
across every option combination, SIMD path and thread count."""

from itertools import product

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastadam
from fastadam import reference
from conftest import DTYPES, assert_close, rand, run_python

# A watchdog for a hang, not a speed limit: the child takes seconds; 300 s leaves room for
# a loaded machine and the sanitizer build (several times slower).
WATCHDOG_S = 300
KINDS = ("sgd", "rmsprop", "adam", "adamw")
# Sizes around every SIMD width (4/8/16 lanes) and unroll, so vector bodies and tails both run.
SMALL_SIZES = (0, 1, 3, 15, 16, 17, 31, 33, 1000)
LARGE_SIZE = 100003
# State arrays that are positional arguments of each functional (the rest are keywords).
POSITIONAL = {"sgd": (), "rmsprop": ("square_avg",), "adam": ("exp_avg", "exp_avg_sq"),
              "adamw": ("exp_avg", "exp_avg_sq")}


# ------------------------------------------------------------------------------ helpers

def all_options(kind):
    """Every valid option combination of one kernel (keyword dicts). SGD's extra key
    ``use_step`` says whether ``step=t`` is passed (step 1 then sets buf = g)."""
    out = []
    if kind == "sgd":
        for mom, damp, nest, wd, maxi, use_step in product(
                (0.0, 0.9), (0.0, 0.1), (False, True), (0.0, 0.01), (False, True),
                (False, True)):
            if nest and (mom == 0 or damp > 0):     # nesterov needs momentum, no dampening
                continue
            out.append(dict(lr=0.01, momentum=mom, dampening=damp, nesterov=nest,
                            weight_decay=wd, maximize=maxi, use_step=use_step))
    elif kind == "rmsprop":
        for mom, centered, wd, maxi in product((0.0, 0.9), (False, True), (0.0, 0.01),
                                               (False, True)):
            out.append(dict(lr=0.01, alpha=0.9, eps=1e-8, momentum=mom, centered=centered,
                            weight_decay=wd, maximize=maxi))
    elif kind == "adam":
        for ams, wd, maxi, bc, dec in product((False, True), (0.0, 0.01), (False, True),
                                              (False, True), (False, True)):
            out.append(dict(lr=0.01, betas=(0.9, 0.99), eps=1e-8, amsgrad=ams,
                            weight_decay=wd, maximize=maxi, bias_correction=bc,
                            decoupled_weight_decay=dec))
    else:
        for ams, wd, maxi, bc in product((False, True), (0.0, 0.1), (False, True),
                                         (False, True)):
            out.append(dict(lr=0.01, betas=(0.9, 0.99), eps=1e-8, amsgrad=ams,
                            weight_decay=wd, maximize=maxi, bias_correction=bc))
    return out


def case_id(kind, o):
    flags = [k if v is True else f"{k}={v}" for k, v in o.items()
             if k not in ("lr", "eps", "betas", "alpha") and v not in (False, 0.0)]
    return "-".join([kind] + flags)


ALL_CASES = [(k, o) for k in KINDS for o in all_options(k)]
ALL_IDS = [case_id(k, o) for k, o in ALL_CASES]
# The 100003-element runs use a subset: every fifth combination of each kernel plus its last.
LARGE_CASES = [(k, o) for k in KINDS for i, o in enumerate(all_options(k))
               if i % 5 == 0 or i == len(all_options(k)) - 1]
LARGE_IDS = [case_id(k, o) for k, o in LARGE_CASES]


def state_kinds(kind, o):
    """Name -> 'normal'/'pos' for each state array the options need."""
    if kind == "sgd":
        return {"momentum_buffer": "normal"} if o.get("momentum", 0) else {}
    if kind == "rmsprop":
        d = {"square_avg": "pos"}
        if o.get("momentum", 0):
            d["momentum_buffer"] = "normal"
        if o.get("centered"):
            d["grad_avg"] = "normal"
        return d
    d = {"exp_avg": "normal", "exp_avg_sq": "pos"}
    if o.get("amsgrad"):
        d["max_exp_avg_sq"] = "pos"
    return d


def make_states(rng, kind, o, shape, dtype):
    """Random (not zero) initial states, so a kernel that ignored a state would be caught."""
    states = {n: rand(rng, shape, dtype, k) for n, k in state_kinds(kind, o).items()}
    if "grad_avg" in states:    # square_avg >= grad_avg**2 keeps sqrt(sq - ga*ga) real
        states["square_avg"] = np.array(states["square_avg"] + states["grad_avg"] ** 2, dtype)
    return states


def call(mod, kind, o, param, grad, states, t):
    """Call ``mod.<kind>_`` (fastadam or fastadam.reference) for step ``t``."""
    kw = dict(o)
    if kw.pop("use_step", kind != "rmsprop"):     # RMSprop takes no step
        kw["step"] = t
    kw.update({n: a for n, a in states.items() if n not in POSITIONAL[kind]})
    pos = [states[n] for n in POSITIONAL[kind]]
    return getattr(mod, kind + "_")(param, grad, *pos, **kw)


def compare(kind, o, p, states, p_ref, states_ref, where):
    assert_close(p, p_ref, f"param, {where}")
    assert set(states) == set(states_ref)
    for name in states:
        assert_close(states[name], states_ref[name], f"{name}, {where}")


def trajectory(kind, o, dtype, shape, steps, seed=0, check_at=(), require_finite=True):
    """Run fast and reference side by side from the same random start; compare param and
    every state after the steps in ``check_at`` and at the end."""
    rng = np.random.default_rng(seed)
    p = rand(rng, shape, dtype)
    states = make_states(rng, kind, o, shape, dtype)
    p_ref, states_ref = p.copy(), {n: a.copy() for n, a in states.items()}
    for t in range(1, steps + 1):
        g = rand(rng, shape, dtype)
        g_before = g.copy()
        assert call(fastadam, kind, o, p, g, states, t) is None
        call(reference, kind, o, p_ref, g, states_ref, t)
        assert np.array_equal(g, g_before), "the grad was modified"
        if t in check_at or t == steps:
            compare(kind, o, p, states, p_ref, states_ref, f"{dtype.__name__} n={shape} t={t}")
    if require_finite:
        assert np.isfinite(p_ref).all()     # the comparison was not between NaNs
    return p, states


def run_fast(kind, o, p, g_list, states):
    for t, g in enumerate(g_list, 1):
        call(fastadam, kind, o, p, g, states, t)
    return p, states


# ------------------------------------------------------------------------------ accuracy

@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("kind,opts", ALL_CASES, ids=ALL_IDS)
def test_trajectory_matches_reference(kind, opts, dtype):
    """100 steps at every SIMD-tail size, for every option combination."""
    for n in SMALL_SIZES:
        trajectory(kind, opts, dtype, (n,), steps=100, seed=n, check_at=(1, 2))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("kind,opts", LARGE_CASES, ids=LARGE_IDS)
def test_large_array_matches_reference(kind, opts, dtype):
    trajectory(kind, opts, dtype, (LARGE_SIZE,), steps=5, check_at=(1,))


def test_options_change_the_result():
    """Guard against a vacuous comparison: every flag of every kernel changes the param."""
    for kind in KINDS:
        opts = all_options(kind)
        results = set()
        for o in opts:
            p, _ = trajectory(kind, o, np.float64, (50,), steps=3)
            results.add(p.tobytes())
        # Distinct combinations give distinct results, except where an option is inert:
        # SGD without momentum ignores dampening and use_step (4 combinations -> 1, for each
        # of 4 weight_decay/maximize pairs); Adam with weight_decay=0 ignores decoupling
        # (2 -> 1, for each of 8 amsgrad/maximize/bias_correction triples).
        expected = len(opts) - {"sgd": 3 * 4, "adam": 8}.get(kind, 0)
        assert len(results) == expected, kind


def test_sgd_first_step_sets_buffer_to_grad():
    # step=1: buf = g exactly (torch.optim), whatever the old buffer held and the dampening.
    p = np.array([1.0, 2.0, 3.0])
    g = np.array([0.5, -1.0, 2.0])
    buf = np.array([7.0, 7.0, 7.0])
    fastadam.sgd_(p, g, momentum_buffer=buf, lr=0.1, momentum=0.9, dampening=0.5, step=1)
    assert np.array_equal(buf, g)
    assert np.array_equal(p, np.array([1.0, 2.0, 3.0]) - 0.1 * g)
    # step=2: the running average.
    fastadam.sgd_(p, g, momentum_buffer=buf, lr=0.1, momentum=0.9, dampening=0.5, step=2)
    assert np.array_equal(buf, 0.9 * g + 0.5 * g)


def test_adam_first_step_known_values():
    # At t=1 with zero states and bias correction, the update is lr * g / (|g| + eps').
    p = np.array([1.0, -1.0, 0.0])
    g = np.array([3.0, -0.25, 1e-3])
    m, v = np.zeros(3), np.zeros(3)
    fastadam.adam_(p, g, m, v, step=1, lr=0.1, eps=0.0 + 1e-300)
    np.testing.assert_allclose(m, 0.1 * g, rtol=1e-12)
    np.testing.assert_allclose(v, 0.001 * g * g, rtol=1e-12)
    np.testing.assert_allclose(p, [0.9, -0.9, -0.1], rtol=1e-12)


# ------------------------------------------------------------------------------ SIMD paths

def simd_data(rng, kind, o, n, dtype, wide):
    p = rand(rng, n, dtype)
    states = make_states(rng, kind, o, n, dtype)
    grads = [rand(rng, n, dtype) for _ in range(4)]
    if wide:    # magnitudes from subnormal to large, and exact zeros
        lo, hi = (-44, 6) if dtype == np.float32 else (-318, 60)
        for g in grads:
            g *= (10.0 ** rng.uniform(lo, hi, n)).astype(dtype)
            g[::7] = 0
    return p, grads, states


@pytest.mark.skipif(len(fastadam.available_simd_paths()) < 2, reason="one SIMD path only")
@pytest.mark.parametrize("kind,opts", ALL_CASES, ids=ALL_IDS)
def test_simd_paths_bit_identical(kind, opts):
    paths = fastadam.available_simd_paths()
    for dtype, n, wide in product(DTYPES, (1, 7, 17, 33, 1037), (False, True)):
        results = {}
        for path in paths:
            rng = np.random.default_rng(n)
            p, grads, states = simd_data(rng, kind, opts, n, dtype, wide)
            old = fastadam.set_simd_path(path)
            try:
                assert fastadam.get_simd_path() == path
                results[path] = run_fast(kind, opts, p, grads, states)
            finally:
                fastadam.set_simd_path(old)
        p0, s0 = results[paths[0]]
        for path in paths[1:]:
            p1, s1 = results[path]
            where = f"{paths[0]} vs {path}, {dtype.__name__}, n={n}, wide={wide}"
            assert np.array_equal(p0, p1, equal_nan=True), f"param, {where}"
            for name in s0:
                assert np.array_equal(s0[name], s1[name], equal_nan=True), f"{name}, {where}"


@pytest.mark.parametrize("kind", KINDS)
def test_each_simd_path_matches_reference(kind, simd_path):
    assert fastadam.get_simd_path() == simd_path
    for o in (all_options(kind)[0], all_options(kind)[-1]):
        for dtype, n in product(DTYPES, (15, 16, 17, 33)):
            trajectory(kind, o, dtype, (n,), steps=20, seed=n)


def test_set_simd_path_rejects_unknown_and_returns_old():
    old = fastadam.get_simd_path()
    with pytest.raises(ValueError):
        fastadam.set_simd_path("sse9")
    assert fastadam.get_simd_path() == old
    path = fastadam.available_simd_paths()[0]
    assert fastadam.set_simd_path(path) == old
    assert fastadam.set_simd_path(old) == path


# ------------------------------------------------------------------------------ threads

THREAD_CHILD = """
import sys
import numpy as np
import fastadam

def run(kind, dtype, threads):
    fastadam.set_num_threads(threads)
    assert fastadam.get_num_threads() == threads
    rng = np.random.default_rng(1)
    n = 1_000_003           # > 2 * (1 << 17) per thread for 2 and 3 threads; not aligned
    p = rng.standard_normal(n).astype(dtype)
    g = [rng.standard_normal(n).astype(dtype) for _ in range(3)]
    if kind == "sgd":
        s = [rng.standard_normal(n).astype(dtype)]
        for t in (1, 2, 3):
            fastadam.sgd_(p, g[t - 1], momentum_buffer=s[0], lr=0.1, momentum=0.9,
                          nesterov=True, weight_decay=0.01, step=t)
    elif kind == "rmsprop":
        s = [np.abs(rng.standard_normal(n)).astype(dtype) + 1,
             rng.standard_normal(n).astype(dtype), np.zeros(n, dtype)]
        for t in (1, 2, 3):
            fastadam.rmsprop_(p, g[t - 1], s[0], momentum_buffer=s[1], grad_avg=s[2],
                              momentum=0.5, centered=True, weight_decay=0.01)
    else:
        s = [rng.standard_normal(n).astype(dtype), np.abs(rng.standard_normal(n)).astype(dtype),
             np.abs(rng.standard_normal(n)).astype(dtype)]
        f = fastadam.adam_ if kind == "adam" else fastadam.adamw_
        for t in (1, 2, 3):
            f(p, g[t - 1], s[0], s[1], step=t, lr=0.01, amsgrad=True, max_exp_avg_sq=s[2],
              weight_decay=0.01)
    return [p] + s

old = fastadam.get_num_threads()
bad = 0
for kind in ("sgd", "rmsprop", "adam", "adamw"):
    for dtype in (np.float32, np.float64):
        base = run(kind, dtype, 1)
        for threads in (2, 3):
            print(f"{kind} {dtype.__name__} threads={threads} ...", flush=True)
            got = run(kind, dtype, threads)
            for i, (a, b) in enumerate(zip(base, got)):
                if not np.array_equal(a, b):
                    bad += 1
                    print(f"MISMATCH {kind} {dtype.__name__} threads={threads} array {i}: "
                          f"{np.count_nonzero(a != b)} elements differ", flush=True)
fastadam.set_num_threads(old)
print("done", flush=True)
sys.exit(1 if bad else 0)
"""


def test_thread_counts_bit_identical():
    """1 vs 2 vs 3 threads on 1M-element arrays (split into parts >= 1 << 17 elements).

    Runs in a child process (which sets and restores its own thread count), so that a hang
    in the native thread pool fails this test instead of freezing the test session.
    """
    r = run_python(THREAD_CHILD, timeout=WATCHDOG_S)
    assert r.returncode == 0 and "done" in r.stdout, r.stdout + r.stderr


def test_set_num_threads_validates_and_returns_old():
    old = fastadam.get_num_threads()
    try:
        assert fastadam.set_num_threads(1) == old
        assert fastadam.get_num_threads() == 1
        for bad in (0, -1, 257):
            with pytest.raises(ValueError):
                fastadam.set_num_threads(bad)
        for bad in (1.0, True, "2", None):
            with pytest.raises(TypeError):
                fastadam.set_num_threads(bad)
        assert fastadam.get_num_threads() == 1
    finally:
        fastadam.set_num_threads(old)


# ------------------------------------------------------------------------------ hypothesis

def unit(hi):
    return st.floats(0.0, hi, allow_nan=False, allow_infinity=False)


def _fix_sgd(o):
    if o["nesterov"]:
        if o["momentum"] == 0:
            o["momentum"] = 0.5
        o["dampening"] = 0.0
    return o


HYPER = {
    "sgd": st.fixed_dictionaries(dict(
        lr=unit(1.0), momentum=st.one_of(st.just(0.0), unit(0.99)), dampening=unit(0.99),
        nesterov=st.booleans(), weight_decay=st.one_of(st.just(0.0), unit(0.1)),
        maximize=st.booleans(), use_step=st.booleans())).map(_fix_sgd),
    "rmsprop": st.fixed_dictionaries(dict(
        lr=unit(1.0), alpha=unit(0.999), eps=st.floats(1e-10, 1e-3),
        weight_decay=st.one_of(st.just(0.0), unit(0.1)),
        momentum=st.one_of(st.just(0.0), unit(0.99)), centered=st.booleans(),
        maximize=st.booleans())),
    "adam": st.fixed_dictionaries(dict(
        lr=unit(1.0), betas=st.tuples(unit(0.999), unit(0.999)), eps=st.floats(1e-10, 1e-3),
        weight_decay=st.one_of(st.just(0.0), unit(0.1)), amsgrad=st.booleans(),
        maximize=st.booleans(), bias_correction=st.booleans(),
        decoupled_weight_decay=st.booleans())),
    "adamw": st.fixed_dictionaries(dict(
        lr=unit(1.0), betas=st.tuples(unit(0.999), unit(0.999)), eps=st.floats(1e-10, 1e-3),
        weight_decay=st.one_of(st.just(0.0), unit(0.1)), amsgrad=st.booleans(),
        maximize=st.booleans(), bias_correction=st.booleans())),
}


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_hyperparameters_match_reference(kind, data):
    o = data.draw(HYPER[kind], label="hyper")
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    n = data.draw(st.integers(0, 300), label="n")
    steps = data.draw(st.integers(1, 4), label="steps")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    # Random hyperparameters can drive centered RMSprop's sqrt negative: NaN on both sides.
    with np.errstate(all="ignore"):
        trajectory(kind, o, dtype, n, steps, seed=seed, require_finite=False)


# ------------------------------------------------------------------------------ scalars, shapes

def hyper_variants(kind):
    """The same hyperparameters as (Python floats, NumPy float32 scalars, NumPy float64
    scalars). The float32 values are used throughout, so all three are the same numbers."""
    f = {"sgd": dict(lr=0.1, momentum=0.9, dampening=0.0, weight_decay=0.01),
         "rmsprop": dict(lr=0.01, alpha=0.9, eps=1e-6, weight_decay=0.01, momentum=0.5),
         "adam": dict(lr=0.01, eps=1e-6, weight_decay=0.01),
         "adamw": dict(lr=0.01, eps=1e-6, weight_decay=0.01)}[kind]
    f = {k: float(np.float32(v)) for k, v in f.items()}
    flags = {"sgd": dict(nesterov=True, use_step=True), "rmsprop": dict(centered=True),
             "adam": dict(amsgrad=True), "adamw": dict(amsgrad=True)}[kind]
    betas = (float(np.float32(0.9)), float(np.float32(0.99)))
    out = []
    for conv in (float, np.float32, np.float64):
        o = {k: conv(v) for k, v in f.items()}
        if kind in ("adam", "adamw"):
            o["betas"] = (conv(betas[0]), conv(betas[1]))
        out.append(dict(o, **flags))
    return out


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("kind", KINDS)
def test_numpy_scalar_hyperparameters(kind, dtype):
    results = []
    for o in hyper_variants(kind):
        rng = np.random.default_rng(5)
        p, grads, states = simd_data(rng, kind, o, 37, dtype, wide=False)
        results.append(run_fast(kind, o, p, grads, states))
    for p, states in results[1:]:
        assert np.array_equal(p, results[0][0])
        for name in states:
            assert np.array_equal(states[name], results[0][1][name])


@pytest.mark.parametrize("kind", KINDS)
def test_int_hyperparameters_and_numpy_int_step(kind):
    ints = {"sgd": dict(lr=1, momentum=1, dampening=0, weight_decay=0),
            "rmsprop": dict(lr=1, alpha=0, eps=1, weight_decay=0, momentum=1),
            "adam": dict(lr=1, betas=(0, 0), eps=1, weight_decay=0),
            "adamw": dict(lr=1, betas=(0, 0), eps=1, weight_decay=0)}[kind]
    floats = {k: (tuple(map(float, v)) if isinstance(v, tuple) else float(v))
              for k, v in ints.items()}
    results = []
    for o, step_type in ((ints, np.int64), (floats, int)):
        rng = np.random.default_rng(3)
        p = rand(rng, 20, np.float64)
        states = make_states(rng, kind, o, 20, np.float64)
        p_ref, states_ref = p.copy(), {k: a.copy() for k, a in states.items()}
        for t in range(1, 4):
            g = rand(rng, 20, np.float64)
            call(fastadam, kind, dict(o), p, g, states, step_type(t))
            call(reference, kind, dict(floats), p_ref, g, states_ref, t)
        compare(kind, o, p, states, p_ref, states_ref, f"{o}")
        results.append(p)
    assert np.array_equal(results[0], results[1])


@pytest.mark.parametrize("kind", KINDS)
def test_zero_dim_arrays(kind):
    o = all_options(kind)[-1]
    for dtype in DTYPES:
        trajectory(kind, o, dtype, (), steps=10, check_at=(1,))


@pytest.mark.parametrize("kind", KINDS)
def test_multidimensional_arrays_match_flat(kind):
    # A (3, 4, 5) array steps exactly like its flattened copy, and matches the reference.
    o = all_options(kind)[-1]
    for dtype in DTYPES:
        p, states = trajectory(kind, o, dtype, (3, 4, 5), steps=10, seed=9)
        rng = np.random.default_rng(9)      # replay the same random stream, flat
        pf = rand(rng, (3, 4, 5), dtype).ravel().copy()
        sf = {k: a.ravel().copy() for k, a in make_states(rng, kind, o, (3, 4, 5),
                                                            dtype).items()}
        for t in range(1, 11):
            call(fastadam, kind, o, pf, rand(rng, (3, 4, 5), dtype).ravel().copy(), sf, t)
        assert p.shape == (3, 4, 5)
        assert np.array_equal(p.ravel(), pf)
        for name in states:
            assert states[name].shape == (3, 4, 5)
            assert np.array_equal(states[name].ravel(), sf[name])


@pytest.mark.parametrize("kind", KINDS)
def test_empty_arrays_return_none(kind):
    o = all_options(kind)[-1]
    for dtype in DTYPES:
        for shape in ((0,), (3, 0), (0, 5, 2)):
            p = np.empty(shape, dtype)
            states = {k: np.empty(shape, dtype) for k in state_kinds(kind, o)}
            assert call(fastadam, kind, o, p, np.empty(shape, dtype), states, 1) is None
            assert p.shape == shape
