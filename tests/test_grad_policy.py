"""The gradient policy of the optimizer classes (every row of tests/optimizers.py):
non-finite handling (propagate, skip, raise), global-norm clipping and loss-scale
unscaling fused into the step, and steps from several Python threads. Bad policy values
and bad grad_scale values are the registry's (tests/test_bad_input.py)."""

import itertools
import re
import threading

import numpy as np
import pytest

import fastadam
import optimizers as registry
from fastadam import _core
from conftest import DTYPES, rand
from policy_oracle import Float64Model, TorchSequence
from test_optim import RICH, assert_unchanged, make_arrays, snapshot, structure

f32, f64 = np.float32, np.float64
# A watchdog for a hang, not a speed limit: a thread's steps take seconds; 300 s leaves
# room for a loaded machine and the sanitizer build (several times slower).
WATCHDOG_S = 300

# Sizes around the pre-pass's 32 lanes and 4096-element blocks, mixed dtypes, one empty.
POLICY_SPECS = [((3, 4), f32), ((4097,), f64), ((), f32), ((31,), f64), ((0,), f32),
                ((8193,), f32), ((33,), f64)]


def _grads(rng, arrays, scale=1.0):
    grads = [rand(rng, a.shape, a.dtype) for a in arrays]
    for g in grads:
        g *= g.dtype.type(scale)        # in place: a 0-d array stays an array
    return grads


# ------------------------------------------------------------------------------ oracles

# One dtype per optimizer, around the pre-pass's 32 lanes and 4096-element blocks, with a
# 0-d, a 1-element and an empty tensor; and the two dtypes mixed in one optimizer.
ORACLE_SHAPES = [(3, 4), (1,), (), (0,), (37,), (4097,), (2, 3, 5)]
DTYPE_SPECS = {"float32": [(s, f32) for s in ORACLE_SHAPES],
               "float64": [(s, f64) for s in ORACLE_SHAPES],
               "mixed": POLICY_SPECS + [((1,), f64)]}
# (nonfinite, max_grad_norm, grad_scale): clipping binds (the norm is ~67, ~116 mixed) or
# not (1e6); scales above and below 1; with "skip" or "raise" the third step has a NaN.
POLICIES = [("skip", 20.0, 1024.0), ("raise", 1e6, 4096.0), ("propagate", 20.0, None),
            ("propagate", None, 0.25), ("skip", None, None)]
# Scales that are not powers of two: fastadam divides by s, GradScaler multiplies by
# float32(1/s) (see policy_oracle), so only the float64 model judges these.
MODEL_ONLY_POLICIES = [("skip", 20.0, 1000.0), ("propagate", 30.0, 3.0)]
POLICY_IDS = [f"{n}-clip={m}-scale={s}" for n, m, s in POLICIES + MODEL_ONLY_POLICIES]


def _oracle_grads(rng, arrays, scale):
    """Grads of magnitude 0.5 to 1.5, random sign, times ``scale``.

    Bounded away from zero so that, clipped to 20 (a factor ~0.3), each grad outweighs its
    weight-decay term (0.01 * |p|): an element where ``g + wd*p`` nearly cancels would turn
    the one-ulp difference between fastadam's and torch's factor into a large relative one,
    and RMSprop's and Adam's ``g / (sqrt(...) + eps)`` would carry it into their states when
    the sum comes near eps. Such elements test the data's conditioning, not the policy."""
    grads = []
    for a in arrays:
        g = rng.uniform(0.5, 1.5, a.shape) * rng.choice([-1.0, 1.0], a.shape)
        grads.append(np.array(g * scale, dtype=a.dtype))
    return grads


def _run_against(oracle_cls, info, hyper, specs, policy, steps=6, norm_rtol=None):
    """Step fastadam and an oracle with the same grads; compare after every step."""
    nonfinite, max_grad_norm, grad_scale = policy
    rng = np.random.default_rng(11)
    arrays = make_arrays(rng, specs)
    hyper = dict(hyper, nonfinite=nonfinite, max_grad_norm=max_grad_norm)
    oracle = oracle_cls(info, arrays, hyper)
    opt = info.cls(list(arrays), **hyper)
    applied = 0
    for t in range(1, steps + 1):
        grads = _oracle_grads(rng, arrays, grad_scale or 1.0)
        if t == 3 and nonfinite != "propagate":
            grads[5].reshape(-1)[100] = np.nan
        kept = [g.copy() for g in grads]
        try:
            ok = opt.step(grads, grad_scale=grad_scale)
        except FloatingPointError:
            ok = False
        for g, k in zip(grads, kept):            # the input grads are never modified
            assert np.array_equal(g, k, equal_nan=True)
        try:
            ok_oracle = oracle.step(kept, grad_scale=grad_scale)
        except FloatingPointError:
            ok_oracle = False
        assert ok == ok_oracle == (t != 3 or nonfinite == "propagate"), f"step {t}"
        applied += ok
        assert opt.step_count == applied
        if ok and opt.grad_norm is not None:
            rtol = norm_rtol or 1e-12
            assert opt.grad_norm == pytest.approx(oracle.norm, rel=rtol, abs=0), f"step {t}"
        assert (opt.grad_norm is None) == (nonfinite == "propagate" and max_grad_norm is None)
        compare_with_oracle(info, opt, arrays, oracle, f"step {t}")


def compare_with_oracle(info, opt, arrays, oracle, where):
    """Every param and state, the oracle's rounded to the param's dtype: float64 at
    conftest.assert_close's tolerances (rtol 1e-12, atol 1e-14); float32 at its float32
    ones (rtol 1e-5, atol 1e-6 times the data's scale), the scale taken over that array's
    kind (param, exp_avg, ...) in every tensor of the optimizer, so that a 1-element tensor
    whose value cancels to near zero (a momentum buffer, say) is judged at the scale of the
    data that cancelled, as assert_close's atol intends, not at its own. A per-tensor scalar
    state in its own dtype (float32, as the classes keep it)."""
    expected = []
    for i, p in enumerate(arrays):
        if isinstance(oracle, TorchSequence):
            p_ref, st_ref = oracle.param(i), oracle.state(i)
        else:
            p_ref, st_ref = oracle.params[i], oracle.states[i]
        assert set(opt.state[i]) == set(st_ref), f"state names of {i}"
        expected.append((p, np.asarray(p_ref, p.dtype), "param", i))
        expected += [(opt.state[i][n], np.asarray(a, registry.SCALAR_DTYPE if n in
                                                  info.scalar_names else p.dtype), n, i)
                     for n, a in st_ref.items()]
    scale = {}
    for _, e, kind, _ in expected:
        finite = np.abs(e[np.isfinite(e)])
        if e.dtype == f32 and finite.size:
            scale[kind] = max(scale.get(kind, 0.0), float(finite.max()))
    for actual, e, kind, i in expected:
        what = f"{kind} of {i}, {where}"
        assert actual.dtype == e.dtype and actual.shape == e.shape, what
        rtol, atol = (1e-12, 1e-14) if e.dtype == f64 else (1e-5, 1e-6 * scale.get(kind, 0.0))
        with np.errstate(invalid="ignore"):     # (inf - inf, nan)
            ok = ((np.abs(actual - e) <= atol + rtol * np.abs(e)) | (actual == e)
                  | (np.isnan(actual) & np.isnan(e)))
        if not ok.all():        # (the fast check above; this one reports)
            np.testing.assert_allclose(actual, e, rtol=rtol, atol=atol, err_msg=what)


ROWS = [pytest.param(info, id=info.name) for info in registry.OPTIMIZERS]


def covering_sets(info):
    """The defaults, the richest option set, and a few more that between them give every
    pair of on/off options each pair of their values that some option set has (each
    value too, for a row of one option): greedily, the option set that adds the most
    values and pairs not given yet, first among those torch.optim has, then (a NumPy-only
    option's values) among the rest."""
    def gives(h):
        f = info.full(h)
        values = [(k, repr(f[k])) for k in info.flags if f[k] in info.flags[k]]
        return set(values) | set(itertools.combinations(values, 2))

    chosen = [{}, info.richest()]
    given = gives({}) | gives(info.richest())
    for sets in (info.torch_option_sets(), info.option_sets()):
        wanted = set().union(*map(gives, sets))
        while wanted - given:
            best = max(sets, key=lambda h: len(gives(h) & wanted - given))
            given |= gives(best)
            chosen.append(best)
    return chosen


# Per row: the configurations the policy is judged in (the policy's factor is applied in
# every variant of the update loop; these give every pair of option values). The defaults
# and the richest set in every dtype (and mix) with every policy; the others, to stay fast,
# with every policy in one dtype: the mix (both dtypes' loops) for the float64 model, float32
# and float64 in turn for torch.
def _cases(torch):
    cases, ids, n = [], [], 0
    for info in (registry.TORCH_OPTIMIZERS if torch else registry.OPTIMIZERS):
        main = ({}, info.richest())
        for h in covering_sets(info):
            if torch and not info.torch_has(h):
                continue
            dtypes = ["float32", "float64"] + ([] if torch else ["mixed"])
            if h not in main:
                dtypes, n = ([dtypes[n % 2]] if torch else ["mixed"]), n + 1
            for dtype in dtypes:
                for policy, pid in zip(POLICIES + ([] if torch else MODEL_ONLY_POLICIES),
                                       POLICY_IDS):
                    cases.append((info, h, dtype, policy))
                    ids.append(f"{info.name}-{registry.set_id(h)}-{dtype}-{pid}")
    return cases, ids


MODEL_CASES, MODEL_IDS = _cases(torch=False)
TORCH_CASES, TORCH_IDS = _cases(torch=True)


@pytest.mark.parametrize("info, hyper, dtype, policy", TORCH_CASES, ids=TORCH_IDS)
def test_matches_torch_gradscaler_clip_step(info, hyper, dtype, policy):
    # GradScaler.unscale_, clip_grad_norm_ over all params, the torch.optim step (through
    # GradScaler.step, which skips a step with a NaN, when the policy checks for them).
    # (Not a mixed-dtype group: torch's norm of the float32 grads is a float32 one, whose
    # error would reach the float64 grads' clip factor; the float64 model judges that case.)
    pytest.importorskip("torch")
    # torch computes a float32 norm in float32 (a few float32 ulps from the exact one).
    rtol = 1e-12 if dtype == "float64" else 1e-6
    _run_against(TorchSequence, info, hyper, DTYPE_SPECS[dtype], policy, norm_rtol=rtol)


@pytest.mark.parametrize("info, hyper, dtype, policy", MODEL_CASES, ids=MODEL_IDS)
def test_matches_float64_model(info, hyper, dtype, policy):
    # The norm is of float64-widened grads in both, so it matches tightly for any dtype.
    _run_against(Float64Model, info, hyper, DTYPE_SPECS[dtype], policy)


@pytest.mark.parametrize("info", ROWS)
def test_clipping_binds_and_grad_norm_is_the_unscaled_norm(info):
    rng = np.random.default_rng(12)
    arrays = make_arrays(rng, POLICY_SPECS)
    opt = info.cls(list(arrays), max_grad_norm=1.0)
    assert opt.grad_norm is None
    grads = _grads(rng, arrays, 8.0)
    expected = np.sqrt(sum(float(np.sum(g.astype(f64) ** 2)) for g in grads)) / 8.0
    opt.step(grads, grad_scale=8.0)
    assert opt.grad_norm == pytest.approx(expected, rel=1e-13)
    assert opt.grad_norm > 1.0          # so clipping did bind
    # Without a check or clipping, no pre-pass runs and there is no norm.
    plain = info.cls(list(make_arrays(rng, POLICY_SPECS)))
    plain.step(_grads(rng, arrays))
    assert plain.grad_norm is None


@pytest.mark.parametrize("info", ROWS)
def test_unscaling_is_exact_for_powers_of_two(info):
    # A loss scale of 2**k only moves exponents: the step equals the unscaled one, bit for bit.
    rng = np.random.default_rng(13)
    a = make_arrays(rng, POLICY_SPECS)
    b = [x.copy() for x in a]
    opt_a, opt_b = info.cls(a, **RICH[info.name]), info.cls(b, **RICH[info.name])
    for _ in range(5):
        grads = _grads(rng, a)
        opt_a.step(grads)
        opt_b.step([np.asarray(g * g.dtype.type(65536.0)) for g in grads], grad_scale=65536.0)
    for x, y in zip(a, b):
        assert np.array_equal(x, y)


@pytest.mark.parametrize("info", ROWS)
def test_norm_is_the_same_bits_at_any_thread_count_and_simd_path(info):
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
                opt = info.cls(arrays, **RICH[info.name], max_grad_norm=50.0,
                               nonfinite="skip")
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


# Per DTYPE_SPECS entry: first element, the 1-element and the 0-d tensor, a SIMD tail, the
# first element of a second pre-pass block, a first block's middle, the last tensor's last.
PLACES = {"float32": [(0, 0), (1, 0), (2, 0), (4, 36), (5, 4096), (5, 2000), (6, 29)],
          "mixed": BAD_PLACES + [(7, 0)]}
PLACES["float64"] = PLACES["float32"]


def _all_bytes(opt, arrays):
    """Every byte an optimizer holds (params, states), its step count and its group."""
    group = {k: v for k, v in opt.param_groups[0].items() if k != "params"}
    return ([p.tobytes() for p in arrays],
            [(key, name, arr.tobytes()) for key, st in opt.state.items()
             for name, arr in sorted(st.items())],
            opt.step_count, repr(group))


@pytest.mark.parametrize("max_grad_norm", [None, 10.0], ids=["no-clip", "clip"])
@pytest.mark.parametrize("mode", ["skip", "raise"])
@pytest.mark.parametrize("dtype", ["float32", "float64", "mixed"])
@pytest.mark.parametrize("info", ROWS)
def test_nonfinite_grad_changes_no_byte_and_is_not_counted(info, dtype, mode, max_grad_norm):
    rng = np.random.default_rng(15)
    arrays = make_arrays(rng, DTYPE_SPECS[dtype])
    hyper = dict(RICH[info.name], nonfinite=mode, max_grad_norm=max_grad_norm)
    model = Float64Model(info, arrays, hyper)
    opt = info.cls(list(arrays), **hyper)
    for _ in range(2):
        g = _oracle_grads(rng, arrays, 1.0)
        assert opt.step(g) is True and model.step(g) is True
    before = _all_bytes(opt, arrays)
    for i, k in PLACES[dtype]:
        for value in BAD_VALUES:
            grads = _oracle_grads(rng, arrays, 1.0)
            grads[i].reshape(-1)[k] = value
            if mode == "skip":
                assert opt.step(grads) is False
                assert not np.isfinite(opt.grad_norm)
            else:
                index = tuple(int(j) for j in np.unravel_index(k, arrays[i].shape))
                with pytest.raises(FloatingPointError,
                                   match=re.escape(f"grads[{i}] has {value} at index {index}")):
                    opt.step(grads)
            assert _all_bytes(opt, arrays) == before, (i, k, value)
    # The run goes on as if the bad steps never came (bias correction counts 3, not 24).
    g = _oracle_grads(rng, arrays, 1.0)
    assert opt.step(g) is True and model.step(g) is True
    assert opt.step_count == 3
    compare_with_oracle(info, opt, arrays, model, "after the refused steps")


@pytest.mark.parametrize("value", BAD_VALUES, ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("kind", ["list", "dict"])
@pytest.mark.parametrize("info", ROWS)
def test_raise_names_the_array_and_index_and_changes_nothing(info, kind, value):
    rng = np.random.default_rng(16)
    arrays = make_arrays(rng, POLICY_SPECS)
    params = structure(arrays, kind)
    opt = info.cls(params, **dict(RICH[info.name], nonfinite="raise"))
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


@pytest.mark.parametrize("info", ROWS)
def test_raise_reports_a_0d_grad(info):
    opt = info.cls([np.zeros((), f32), np.zeros(3)], nonfinite="raise")
    with pytest.raises(FloatingPointError, match=r"grads\[0\] has nan at index \(\)"):
        opt.step([np.array(np.nan, f32), np.ones(3)])


# (the float64 model for every row, torch for those torch.optim has)
ORACLE_ROWS = [pytest.param(info, oracle, id=f"{info.name}-{oracle}")
               for info in registry.OPTIMIZERS for oracle in ("torch", "float64")
               if oracle == "float64" or info.torch_optim]


def _nan_reached(opt, arrays, i, where=slice(None)):
    """Whether a NaN let through reached param ``i`` or one of its states at flat index
    ``where`` (Rprop, as torch.optim's: torch's sign(NaN) = 0 leaves the param and keeps
    the NaN in ``prev`` alone)."""
    return any(np.isnan(np.ravel(a)[where]).all() for a in [arrays[i]] + [
        a for a in opt.state[i].values() if a.ndim])


@pytest.mark.parametrize("dtype", ["float32", "float64", "mixed"])
@pytest.mark.parametrize("info, oracle", ORACLE_ROWS)
def test_propagate_lets_nan_through_as_torch(info, dtype, oracle):
    if oracle == "torch":
        pytest.importorskip("torch")
    rng = np.random.default_rng(17)
    arrays = make_arrays(rng, DTYPE_SPECS[dtype])
    rich = RICH[info.name]
    ref = (TorchSequence if oracle == "torch" else Float64Model)(info, arrays, rich)
    opt = info.cls(list(arrays), **rich)
    for t in range(3):
        grads = _oracle_grads(rng, arrays, 1.0)
        if t == 1:
            grads[5].reshape(-1)[5] = np.nan
        assert opt.step(grads) is True and ref.step(grads) is True
        # the NaNs where the oracle has them (and only there), the rest at its tolerances
        compare_with_oracle(info, opt, arrays, ref, f"step {t + 1}")
        if t == 1:
            assert _nan_reached(opt, arrays, 5, 5)


@pytest.mark.parametrize("info", ROWS)
def test_propagate_with_clipping_spreads_nan_as_torch(info):
    # torch's clip_grad_norm_ multiplies every grad by min(1, max_norm / (nan + 1e-6)) = nan.
    arrays = [np.ones(5, f32), np.ones(3)]
    opt = info.cls(arrays, lr=0.1, max_grad_norm=1.0)
    assert opt.step([np.array([1, 2, np.nan, 4, 5], f32), np.ones(3)]) is True
    assert _nan_reached(opt, arrays, 0) and _nan_reached(opt, arrays, 1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("info", ROWS)
def test_large_finite_grads_are_not_non_finite(info, dtype):
    # No element is bad, so "skip" applies the step. float64: the squares overflow, the norm
    # is inf and clipping scales by max_norm / inf = 0 (torch's result too). float32: the
    # squares fit in the float64 pre-pass, the norm is finite and the factor (~7e-40, a
    # float32 subnormal with ~6 digits) scales each grad to 1/sqrt(70). (torch's float32 norm
    # overflows to inf here and scales by 0: fastadam's float64 norm is the true one, so
    # this case is judged by the float64 model.) lr 0.5: the steps of the rules that move by
    # about lr whatever the grad's size (Adam's, Adagrad's) would cancel params of 1 to ~0.
    big = np.finfo(dtype).max / 2
    arrays = [np.ones(70, dtype), np.ones(3, f64)]
    hyper = dict(lr=0.5, nonfinite="skip", max_grad_norm=1.0)
    model = Float64Model(info, arrays, hyper)
    opt = info.cls(arrays, **hyper)
    grads = [np.full(70, big, dtype), np.ones(3)]
    assert opt.step(grads) is True and model.step(grads) is True
    assert opt.step_count == 1
    if dtype is f64:
        assert opt.grad_norm == model.norm == np.inf
    else:
        assert np.isfinite(model.norm)
        assert opt.grad_norm == pytest.approx(model.norm, rel=1e-12, abs=0)
    compare_with_oracle(info, opt, arrays, model, "huge grads")


@pytest.mark.parametrize("info", ROWS)
def test_policy_can_change_between_steps(info):
    arrays = [np.ones(4, f32)]
    opt = info.cls(arrays)
    bad = [np.array([1, np.nan, 1, 1], f32)]
    opt.param_groups[0]["nonfinite"] = "skip"
    assert opt.step(bad) is False
    opt.param_groups[0]["nonfinite"] = "raise"
    with pytest.raises(FloatingPointError):
        opt.step(bad)
    assert np.array_equal(arrays[0], np.ones(4, f32)) and opt.step_count == 0
    opt.param_groups[0]["nonfinite"] = "propagate"
    assert opt.step(bad) is True
    assert opt.step_count == 1 and _nan_reached(opt, arrays, 0, 1)


# ------------------------------------------------------------------------------ threads

def test_optimizers_in_threads_match_sequential():
    # Different optimizers (one per row, the gradient policy's variants in turn) on different
    # arrays, stepped from several Python threads at once (the kernels release the GIL),
    # give the bits of running them one after another.
    policies = [dict(max_grad_norm=100.0), dict(nonfinite="skip"), {}]
    expected, got, jobs = [], [], []
    for seed, info in enumerate(registry.OPTIMIZERS):
        hyper = dict(RICH[info.name], **policies[seed % len(policies)])
        r = np.random.default_rng(seed)
        arrays = [rand(r, (200_003,), f32), rand(r, (70_001,), f64)]
        grads = [_grads(r, arrays) for _ in range(20)]
        copies = [a.copy() for a in arrays]
        _run_steps(info.cls(arrays, **hyper), grads)
        expected.append(arrays)
        got.append(copies)
        jobs.append(threading.Thread(target=_run_steps, args=(info.cls(copies, **hyper), grads)))
    for j in jobs:
        j.start()
    for j in jobs:
        j.join(timeout=WATCHDOG_S)
    assert not any(j.is_alive() for j in jobs)
    for e, g in zip(expected, got):
        for x, y in zip(e, g):
            assert np.array_equal(x, y)


def _run_steps(opt, grads):
    for g in grads:
        opt.step(g)


@pytest.mark.parametrize("info", ROWS)
def test_one_optimizer_from_two_threads_is_serialised(info):
    # Same grads every step, so any order of the 2*N steps gives the same result: if two
    # steps interleaved (one rebinding the grads under the other), it would differ.
    rng = np.random.default_rng(21)
    base = [rand(rng, (150_001,), f32), rand(rng, (5,), f64)]
    grads = _grads(rng, base)
    n = 40
    serial = [a.copy() for a in base]
    opt = info.cls(serial, **RICH[info.name])
    for _ in range(2 * n):
        opt.step(grads)
    shared = [a.copy() for a in base]
    opt = info.cls(shared, **RICH[info.name])
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
        w.join(timeout=WATCHDOG_S)
    assert not errors and not any(w.is_alive() for w in workers)
    assert opt.step_count == 2 * n
    for x, y in zip(shared, serial):
        assert np.array_equal(x, y)


class _HeldShape(np.ndarray):
    """A grad whose ``.shape`` (read in Python only by a plan's wrong-shape message, after
    the plan has marked itself busy) signals ``entered`` and waits for ``release``."""

    entered: threading.Event
    release: threading.Event

    @property
    def shape(self):
        if not self.entered.is_set():
            self.entered.set()
            assert self.release.wait(WATCHDOG_S), "never released"
        return np.ndarray.shape.__get__(self)


def test_plan_refuses_a_step_while_one_is_in_flight():
    # The classes serialise with a lock; a bare plan stepped from two threads at once must
    # refuse the second step (it would rebind the grads of the step in flight), not run it.
    # A plan is busy from before it binds the grads until its step returns, so a step held
    # inside the grads' check is in flight exactly as one in the GIL-free update is.
    n = 100_003
    p = np.zeros(n, f32)
    plan = _core.Plan(_core.KERNEL_SGD, [p], [(None,)], ["0"])
    hyper = _core.validate("sgd", dict(lr=1.0))

    def sgd(g, **policy):
        return plan.step([g], hyper, 1, **policy)

    held = np.ones(n + 1, f32).view(_HeldShape)      # the wrong shape: its message is held
    held.entered, held.release = threading.Event(), threading.Event()
    outcome = []

    def holder():
        try:
            sgd(held)
        except BaseException as e:      # reported below
            outcome.append(e)
        finally:
            held.entered.set()          # (also when the hold never happened)

    worker = threading.Thread(target=holder)
    worker.start()
    try:
        assert held.entered.wait(WATCHDOG_S)
        assert worker.is_alive() and not outcome, f"the step was not held: {outcome}"
        for policy in ({}, dict(nonfinite="skip"), dict(max_grad_norm=1.0)):
            with pytest.raises(RuntimeError, match="already stepping in another thread"):
                sgd(np.ones(n, f32), **policy)
        assert np.all(p == 0)           # the refused steps wrote nothing
    finally:
        held.release.set()
        worker.join(WATCHDOG_S)
    assert not worker.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], ValueError), outcome
    assert "Invalid grads[0] shape" in str(outcome[0])
    assert sgd(np.ones(n, f32)) is True  # no longer busy once the held step returned
    assert np.all(p == -1.0)

    # Then two threads stepping at once, each counting its own applied and refused steps
    # (refusals are not counted on: how many happen depends on scheduling). Every step that
    # ran was whole: each subtracted exactly 1 from every element.
    applied, refused, errors = [0, 0], [0, 0], []

    def stepper(k):
        try:
            for _ in range(30):
                try:
                    assert sgd(np.ones(n, f32)) is True
                    applied[k] += 1
                except RuntimeError as e:
                    assert "already stepping in another thread" in str(e)
                    refused[k] += 1
        except BaseException as e:      # reported below
            errors.append(e)

    workers = [threading.Thread(target=stepper, args=(k,)) for k in (0, 1)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(WATCHDOG_S)
    assert not errors and not any(w.is_alive() for w in workers), errors
    assert sum(applied) + sum(refused) == 60 and sum(applied) >= 1
    assert np.all(p == -1.0 - sum(applied))
