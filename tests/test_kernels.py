"""The functional kernels (sgd_, rmsprop_, adam_, adamw_): what is specific to each (SGD's
first-step buffer rule, Adam's first step, which options are inert), random
hyperparameters against fastadam.reference (docs/contract.md: update rules, accuracy),
hyperparameters as NumPy scalars and ints, 0-d, n-d and empty arrays, and the SIMD-path and
thread-count setters. Every option set of every optimizer against the reference, over the
sizes, SIMD paths and thread counts, is tests/test_registry_kernels.py's, from
tests/optimizers.py."""

from itertools import product

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastadam
from fastadam import reference
from conftest import DTYPES, assert_close, rand

KINDS = ("sgd", "rmsprop", "adam", "adamw")
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


def simd_data(rng, kind, o, n, dtype, wide):
    """A random param, states and 4 grads (``wide``: magnitudes from subnormal to large)."""
    p = rand(rng, n, dtype)
    states = make_states(rng, kind, o, n, dtype)
    grads = [rand(rng, n, dtype) for _ in range(4)]
    if wide:    # magnitudes from subnormal to large, and exact zeros
        lo, hi = (-44, 6) if dtype == np.float32 else (-318, 60)
        for g in grads:
            g *= (10.0 ** rng.uniform(lo, hi, n)).astype(dtype)
            g[::7] = 0
    return p, grads, states


def run_fast(kind, o, p, g_list, states):
    for t, g in enumerate(g_list, 1):
        call(fastadam, kind, o, p, g, states, t)
    return p, states


# ------------------------------------------------------------------------------ accuracy

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


# ------------------------------------------------------------------------------ setters

def test_set_simd_path_rejects_unknown_and_returns_old():
    old = fastadam.get_simd_path()
    with pytest.raises(ValueError):
        fastadam.set_simd_path("sse9")
    assert fastadam.get_simd_path() == old
    path = fastadam.available_simd_paths()[0]
    assert fastadam.set_simd_path(path) == old
    assert fastadam.set_simd_path(old) == path


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
