"""The gradient policy of the optimizer classes: non-finite handling (propagate, skip,
raise), global-norm clipping and loss-scale unscaling fused into the step, and steps from
several Python threads."""

import threading

import numpy as np
import pytest

import fastadam
from fastadam import SGD, Adam, AdamW, RMSprop, _core
from conftest import DTYPES, rand
from test_optim import (
    CLASSES, CONFIGS, CONFIG_IDS, RICH, RefOptimizer, assert_unchanged, compare_with_ref,
    make_arrays, snapshot, structure,
)

f32, f64 = np.float32, np.float64

# Sizes around the pre-pass's 32 lanes and 4096-element blocks, mixed dtypes, one empty.
POLICY_SPECS = [((3, 4), f32), ((4097,), f64), ((), f32), ((31,), f64), ((0,), f32),
                ((8193,), f32), ((33,), f64)]


def _grads(rng, arrays, scale=1.0):
    grads = [rand(rng, a.shape, a.dtype) for a in arrays]
    for g in grads:
        g *= g.dtype.type(scale)        # in place: a 0-d array stays an array
    return grads


# ------------------------------------------------------------------------------ clipping, scale

@pytest.mark.parametrize("max_grad_norm,grad_scale", [(None, 1024.0), (0.5, None),
                                                      (0.5, 4096.0), (1e6, None),
                                                      (3.0, 0.25)],
                         ids=["scale", "clip", "clip+scale", "clip never binds",
                              "scale below 1"])
@pytest.mark.parametrize("cls,hyper", CONFIGS, ids=CONFIG_IDS)
def test_clipping_and_unscaling_match_reference(cls, hyper, max_grad_norm, grad_scale):
    rng = np.random.default_rng(11)
    arrays = make_arrays(rng, POLICY_SPECS)
    hyper = dict(hyper, max_grad_norm=max_grad_norm)
    ref = RefOptimizer(cls, arrays, hyper)
    opt = cls(list(arrays), **hyper)
    for t in range(1, 31):
        grads = _grads(rng, arrays, grad_scale or 1.0)
        kept = [g.copy() for g in grads]
        assert opt.step(grads, grad_scale=grad_scale) is True
        assert ref.step(kept, grad_scale=grad_scale) is True
        for g, k in zip(grads, kept):            # the input grads are never modified
            assert np.array_equal(g, k)
        if t in (1, 30):
            compare_with_ref(opt, arrays, ref, f"step {t}")
    assert opt.step_count == 30


def test_clipping_binds_and_grad_norm_is_the_unscaled_norm():
    rng = np.random.default_rng(12)
    arrays = make_arrays(rng, POLICY_SPECS)
    opt = Adam(list(arrays), max_grad_norm=1.0)
    assert opt.grad_norm is None
    grads = _grads(rng, arrays, 8.0)
    expected = np.sqrt(sum(float(np.sum(g.astype(f64) ** 2)) for g in grads)) / 8.0
    opt.step(grads, grad_scale=8.0)
    assert opt.grad_norm == pytest.approx(expected, rel=1e-13)
    assert opt.grad_norm > 1.0          # so clipping did bind
    # Without a check or clipping, no pre-pass runs and there is no norm.
    plain = Adam(list(make_arrays(rng, POLICY_SPECS)))
    plain.step(_grads(rng, arrays))
    assert plain.grad_norm is None


def test_unscaling_is_exact_for_powers_of_two():
    # A loss scale of 2**k only moves exponents: the step equals the unscaled one, bit for bit.
    rng = np.random.default_rng(13)
    a = make_arrays(rng, POLICY_SPECS)
    b = [x.copy() for x in a]
    opt_a, opt_b = AdamW(a), AdamW(b)
    for _ in range(5):
        grads = _grads(rng, a)
        opt_a.step(grads)
        opt_b.step([np.asarray(g * g.dtype.type(65536.0)) for g in grads], grad_scale=65536.0)
    for x, y in zip(a, b):
        assert np.array_equal(x, y)


def test_norm_is_the_same_bits_at_any_thread_count_and_simd_path():
    rng = np.random.default_rng(14)
    base = make_arrays(rng, POLICY_SPECS + [((300_007,), f32), ((100_003,), f64)])
    steps = [_grads(rng, base) for _ in range(3)]
    results = {}
    old_threads = fastadam.get_num_threads()
    old_path = fastadam.get_simd_path()
    old_min = _core._set_min_per_thread(1000)   # let small arrays use threads too
    try:
        for path in fastadam.available_simd_paths():
            fastadam.set_simd_path(path)
            for threads in (1, 2, 3):
                fastadam.set_num_threads(threads)
                arrays = [a.copy() for a in base]
                opt = Adam(arrays, max_grad_norm=50.0, nonfinite="skip")
                norms = []
                for g in steps:
                    assert opt.step(g)
                    norms.append(opt.grad_norm)
                results[path, threads] = (norms, arrays)
    finally:
        _core._set_min_per_thread(old_min)
        fastadam.set_num_threads(old_threads)
        fastadam.set_simd_path(old_path)
    (norms0, arrays0), *others = results.values()
    for norms, arrays in others:
        assert norms == norms0                  # exact float equality
        for x, y in zip(arrays, arrays0):
            assert np.array_equal(x, y)


# ------------------------------------------------------------------------------ non-finite

BAD_VALUES = [np.nan, np.inf, -np.inf]
# (tensor index in POLICY_SPECS, flat index): first, in a SIMD tail, in a second block, last
BAD_PLACES = [(0, 0), (1, 4096), (3, 30), (5, 4100), (6, 32), (2, 0)]


def _poisoned(rng, arrays, where, value):
    grads = _grads(rng, arrays)
    i, k = where
    grads[i].reshape(-1)[k] = value
    return grads, i, k


@pytest.mark.parametrize("value", BAD_VALUES, ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("where", BAD_PLACES, ids=[f"{i}@{k}" for i, k in BAD_PLACES])
@pytest.mark.parametrize("cls", CLASSES)
def test_skip_changes_nothing_and_does_not_count(cls, where, value):
    rng = np.random.default_rng(15)
    arrays = make_arrays(rng, POLICY_SPECS)
    hyper = dict(RICH[cls], nonfinite="skip", max_grad_norm=10.0)
    ref = RefOptimizer(cls, arrays, hyper)
    opt = cls(list(arrays), **hyper)
    for _ in range(3):
        g = _grads(rng, arrays)
        assert opt.step(g) is True
        ref.step(g)
    snap = snapshot(opt, arrays)
    bad, _, _ = _poisoned(rng, arrays, where, value)
    assert opt.step(bad) is False
    assert_unchanged(opt, arrays, snap)
    assert opt.step_count == 3
    assert np.isnan(opt.grad_norm) or np.isinf(opt.grad_norm)
    # The run goes on as if the bad step never came (bias correction counts 4, not 5).
    g = _grads(rng, arrays)
    assert opt.step(g) is True
    ref.step(g)
    assert opt.step_count == 4
    compare_with_ref(opt, arrays, ref, "after a skipped step")


@pytest.mark.parametrize("value", BAD_VALUES, ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("kind", ["list", "dict"])
@pytest.mark.parametrize("cls", CLASSES)
def test_raise_names_the_array_and_index_and_changes_nothing(cls, kind, value):
    rng = np.random.default_rng(16)
    arrays = make_arrays(rng, POLICY_SPECS)
    params = structure(arrays, kind)
    opt = cls(params, **dict(RICH[cls], nonfinite="raise"))
    opt.step(structure(_grads(rng, arrays), kind))
    snap = snapshot(opt, params)
    grads, i, k = _poisoned(rng, arrays, (5, 4100), value)
    grads[6][3] = np.nan                        # a later one: the first is reported
    key = repr(f"w{i}") if kind == "dict" else str(i)
    index = np.unravel_index(k, arrays[i].shape)
    with pytest.raises(FloatingPointError) as e:
        opt.step(structure(grads, kind))
    msg = str(e.value)
    assert f"grads[{key}]" in msg and f"index {tuple(int(j) for j in index)}" in msg
    assert str(value) in msg
    assert_unchanged(opt, params, snap)
    assert opt.step_count == 1


def test_raise_reports_a_0d_grad():
    opt = SGD([np.zeros((), f32), np.zeros(3)], nonfinite="raise")
    with pytest.raises(FloatingPointError, match=r"grads\[0\] has nan at index \(\)"):
        opt.step([np.array(np.nan, f32), np.ones(3)])


@pytest.mark.parametrize("cls", CLASSES)
def test_propagate_lets_nan_through_as_torch(cls):
    rng = np.random.default_rng(17)
    arrays = make_arrays(rng, POLICY_SPECS)
    ref = RefOptimizer(cls, arrays, RICH[cls])
    opt = cls(list(arrays), **RICH[cls])
    grads, i, k = _poisoned(rng, arrays, (1, 5), np.nan)
    assert opt.step(grads) is True
    ref.step(grads)
    assert np.isnan(arrays[i].reshape(-1)[k])
    for p, p_ref in zip(arrays, ref.params):
        assert np.array_equal(p, p_ref, equal_nan=True) or np.allclose(p, p_ref,
                                                                       equal_nan=True)


def test_propagate_with_clipping_spreads_nan_as_torch():
    # torch's clip_grad_norm_ multiplies every grad by min(1, max_norm / (nan + 1e-6)) = nan.
    arrays = [np.ones(5, f32), np.ones(3)]
    opt = SGD(arrays, lr=0.1, max_grad_norm=1.0)
    assert opt.step([np.array([1, 2, np.nan, 4, 5], f32), np.ones(3)]) is True
    assert np.isnan(arrays[0]).all() and np.isnan(arrays[1]).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_large_finite_grads_are_not_non_finite(dtype):
    # 1e200**2 overflows float64: the norm is inf, yet no element is bad, so "skip" applies
    # the step and clipping scales by max_norm / inf = 0 (torch's result too).
    big = np.finfo(dtype).max / 2
    arrays = [np.ones(70, dtype), np.ones(3, f64)]
    opt = SGD(arrays, lr=1.0, nonfinite="skip", max_grad_norm=1.0)
    assert opt.step([np.full(70, big, dtype), np.ones(3)]) is True
    assert opt.step_count == 1
    if dtype is f64:
        assert opt.grad_norm == np.inf
        assert np.array_equal(arrays[0], np.ones(70))
    else:   # float32 squares fit in a double
        assert np.isfinite(opt.grad_norm)


def test_policy_can_change_between_steps():
    arrays = [np.ones(4, f32)]
    opt = Adam(arrays)
    bad = [np.array([1, np.nan, 1, 1], f32)]
    opt.param_groups[0]["nonfinite"] = "skip"
    assert opt.step(bad) is False
    opt.param_groups[0]["nonfinite"] = "raise"
    with pytest.raises(FloatingPointError):
        opt.step(bad)
    assert np.array_equal(arrays[0], np.ones(4, f32)) and opt.step_count == 0
    opt.param_groups[0]["nonfinite"] = "propagate"
    assert opt.step(bad) is True
    assert opt.step_count == 1 and np.isnan(arrays[0][1])


# ------------------------------------------------------------------------------ bad policy

BAD_POLICY = [
    (dict(nonfinite="ignore"), ValueError, "nonfinite"),
    (dict(nonfinite="SKIP"), ValueError, "nonfinite"),
    (dict(nonfinite=None), TypeError, "nonfinite"),
    (dict(nonfinite=True), TypeError, "nonfinite"),
    (dict(max_grad_norm=0.0), ValueError, "max_grad_norm"),
    (dict(max_grad_norm=-1.0), ValueError, "max_grad_norm"),
    (dict(max_grad_norm=float("nan")), ValueError, "max_grad_norm"),
    (dict(max_grad_norm=float("inf")), ValueError, "max_grad_norm"),
    (dict(max_grad_norm="1"), TypeError, "max_grad_norm"),
    (dict(max_grad_norm=True), TypeError, "max_grad_norm"),
]
BAD_SCALE = [(0.0, ValueError), (-2.0, ValueError), (float("nan"), ValueError),
             (float("inf"), ValueError), ("2", TypeError), (1j, TypeError),
             (np.array([2.0]), TypeError)]


@pytest.mark.parametrize("over,exc,name", BAD_POLICY, ids=[str(o) for o, _, _ in BAD_POLICY])
@pytest.mark.parametrize("cls", CLASSES)
def test_bad_policy_is_rejected_at_construction_and_step(cls, over, exc, name):
    with pytest.raises(exc, match=f"Invalid {name}"):
        cls([np.zeros(3)], **over)
    rng = np.random.default_rng(18)
    arrays = make_arrays(rng, POLICY_SPECS)
    opt = cls(list(arrays), **RICH[cls])
    snap = snapshot(opt, arrays)
    opt.param_groups[0].update(over)
    with pytest.raises(exc, match=f"Invalid {name}"):
        opt.step(_grads(rng, arrays))
    for key in over:
        opt.param_groups[0][key] = snap[1]["param_groups"][0][key]
    assert_unchanged(opt, arrays, snap)


@pytest.mark.parametrize("scale,exc", BAD_SCALE, ids=[repr(s) for s, _ in BAD_SCALE])
def test_bad_grad_scale_is_rejected(scale, exc):
    rng = np.random.default_rng(19)
    arrays = make_arrays(rng, POLICY_SPECS)
    opt = Adam(list(arrays), amsgrad=True)
    snap = snapshot(opt, arrays)
    with pytest.raises(exc, match="Invalid grad_scale"):
        opt.step(_grads(rng, arrays), grad_scale=scale)
    assert_unchanged(opt, arrays, snap)


# ------------------------------------------------------------------------------ vs torch

def test_matches_torch_unscale_clip_adam():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(20)
    arrays = [rand(rng, s, f32) for s in [(64, 33), (33,), (10, 64), (10,)]]
    tparams = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in arrays]
    topt = torch.optim.Adam(tparams, lr=1e-2, weight_decay=0.01)
    opt = Adam(arrays, lr=1e-2, weight_decay=0.01, max_grad_norm=1.0)
    scale = 2.0 ** 12
    for _ in range(50):
        grads = [rand(rng, a.shape, f32) * f32(scale) for a in arrays]
        for p, g in zip(tparams, grads):
            p.grad = torch.from_numpy(g.copy()) * (1.0 / scale)   # GradScaler.unscale_
        norm = torch.nn.utils.clip_grad_norm_(tparams, 1.0)
        topt.step()
        opt.step(grads, grad_scale=scale)
        assert opt.grad_norm == pytest.approx(float(norm), rel=1e-5)
    for a, p in zip(arrays, tparams):
        np.testing.assert_allclose(a, p.detach().numpy(), rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------------------ threads

def test_optimizers_in_threads_match_sequential():
    # Different optimizers on different arrays, stepped from several Python threads at once
    # (the kernels release the GIL), give the bits of running them one after another.
    def make(seed):
        r = np.random.default_rng(seed)
        arrays = [rand(r, (200_003,), f32), rand(r, (70_001,), f64)]
        return arrays, [_grads(r, arrays) for _ in range(20)]

    def run(opt, grads):
        for g in grads:
            opt.step(g)

    cases = [(Adam, dict(max_grad_norm=100.0)), (AdamW, dict(nonfinite="skip")),
             (RMSprop, dict(centered=True)), (SGD, dict(momentum=0.9))]
    expected, got, jobs = [], [], []
    for seed, (cls, hyper) in enumerate(cases):
        arrays, grads = make(seed)
        run(cls(arrays, **hyper), grads)
        expected.append(arrays)
        arrays, grads = make(seed)
        got.append(arrays)
        jobs.append(threading.Thread(target=run, args=(cls(arrays, **hyper), grads)))
    for j in jobs:
        j.start()
    for j in jobs:
        j.join(timeout=120)
    assert not any(j.is_alive() for j in jobs)
    for e, g in zip(expected, got):
        for x, y in zip(e, g):
            assert np.array_equal(x, y)


def test_one_optimizer_from_two_threads_is_serialised():
    # Same grads every step, so any order of the 2*N steps gives the same result: if two
    # steps interleaved (one rebinding the grads under the other), it would differ.
    rng = np.random.default_rng(21)
    base = [rand(rng, (150_001,), f32), rand(rng, (5,), f64)]
    grads = _grads(rng, base)
    n = 40
    serial = [a.copy() for a in base]
    opt = Adam(serial, lr=1e-2)
    for _ in range(2 * n):
        opt.step(grads)
    shared = [a.copy() for a in base]
    opt = Adam(shared, lr=1e-2)
    errors = []

    def run():
        try:
            for _ in range(n):
                opt.step(grads)
                opt.state_dict()
        except Exception as e:      # pragma: no cover - reported below
            errors.append(e)

    workers = [threading.Thread(target=run) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert not errors and not any(w.is_alive() for w in workers)
    assert opt.step_count == 2 * n
    for x, y in zip(shared, serial):
        assert np.array_equal(x, y)


def test_plan_refuses_a_step_while_one_is_in_flight():
    # The classes serialise with a lock; a bare plan stepped from two threads at once must
    # refuse the second step (it would rebind the grads of the step in flight), not run it.
    n = 4_000_000
    p, g = np.zeros(n, f32), np.ones(n, f32)
    plan = _core.Plan(_core.KERNEL_SGD, [p], [(None,)], ["0"])
    hyper = _core.validate("sgd", dict(lr=1.0))
    done = threading.Event()
    applied = [0, 0]        # steps that ran: by the worker, by this thread

    def stepper():
        while not done.is_set():
            plan.step([g], hyper, 1, nonfinite="skip")
            applied[0] += 1

    refused, other = 0, np.ones(n, f32)
    worker = threading.Thread(target=stepper)
    worker.start()
    try:
        for _ in range(2000):
            try:
                plan.step([other], hyper, 1)
                applied[1] += 1
            except RuntimeError as e:
                assert "already stepping in another thread" in str(e)
                refused += 1
                if refused >= 3:
                    break
    finally:
        done.set()
        worker.join(timeout=60)
    assert refused >= 3
    # Every step that ran was whole: each subtracted exactly 1 from every element.
    assert np.all(p == -float(sum(applied)))
