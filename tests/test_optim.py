"""The optimizer classes of every row of tests/optimizers.py, and fastadam.pack, against
the reference functions applied per param with hand-tracked state: the row's defaults
(torch.optim's), options changed between steps, state_dict copies, wrong grads, many small
tensors, packed params, memory. Every option set of every class against the reference,
resume bit for bit and thread counts are tests/test_registry_kernels.py's."""

import os
import tracemalloc

import numpy as np
import pytest

import fastadam
import optimizers as registry
from conftest import assert_close, rand, run_python

f32, f64 = np.float32, np.float64

ROWS = [pytest.param(info, id=info.name) for info in registry.OPTIMIZERS]
TORCH_ROWS = [pytest.param(info, id=info.name) for info in registry.TORCH_OPTIMIZERS]
# fastadam's own options, in every optimizer's group (the gradient policy and the rounding)
POLICY = fastadam.optim._POLICY
# Per row: an option set with every state allocated and most options on.
RICH = {info.name: info.richest() for info in registry.OPTIMIZERS}

# Several shapes, float32 and float64 mixed in one optimizer (in interleaved order).
SPECS = [((3, 4), f32), ((17,), f64), ((), f32), ((2, 3, 5), f64), ((0,), f32), ((33,), f32),
         ((1,), f64)]


# ------------------------------------------------------------------------------ helpers

class RefOptimizer:
    """The row's reference function applied per param, with the state tracked by hand
    (started as the class starts it). ``hyper`` may be changed between steps, like
    ``opt.param_groups[0]``.

    The update rules only: the gradient policy (nonfinite, max_grad_norm, grad_scale) is
    judged by tests/policy_oracle.py, against torch and a float64 model of its definition."""

    def __init__(self, info, arrays, hyper):
        self.info = info
        self.hyper = info.full(hyper)
        self.params = [a.copy() for a in arrays]
        self.states = [info.initial_states(self.hyper, a) for a in arrays]
        self.t = 0

    def step(self, grads):
        assert all(self.hyper[k] == self.info.defaults[k] for k in POLICY), \
            "RefOptimizer has no gradient policy: use policy_oracle"
        self.t += 1
        for p, g, st in zip(self.params, grads, self.states):
            self.info.call(self.info.reference, p, g, st, self.hyper, self.t)


def make_arrays(rng, specs=SPECS):
    return [rand(rng, shape, dt) for shape, dt in specs]


def structure(arrays, kind):
    """arrays as a list, tuple or dict name -> array."""
    if kind == "list":
        return list(arrays)
    if kind == "tuple":
        return tuple(arrays)
    return {f"w{i}": a for i, a in enumerate(arrays)}


def keys_of(params):
    return list(params.keys()) if isinstance(params, dict) else list(range(len(params)))


def values_of(params):
    return list(params.values()) if isinstance(params, dict) else list(params)


def compare_with_ref(opt, params, ref, where):
    for key, p, p_ref, st_ref in zip(keys_of(params), values_of(params), ref.params,
                                     ref.states):
        assert_close(p, p_ref, f"param {key!r}, {where}")
        assert set(opt.state[key]) == set(st_ref), f"state names of {key!r}"
        for name, a_ref in st_ref.items():
            assert_close(opt.state[key][name], a_ref, f"{name} of {key!r}, {where}")


def snapshot(opt, params):
    """Everything an optimizer holds, copied: to check a failed call changed nothing."""
    return ([p.copy() for p in values_of(params)], opt.state_dict(), opt.step_count)


def assert_unchanged(opt, params, snap):
    ps, sd, count = snap
    for p, p0 in zip(values_of(params), ps):
        assert np.array_equal(p, p0, equal_nan=True)
    assert_state_dicts_equal(opt.state_dict(), sd)
    assert opt.step_count == count


def assert_state_dicts_equal(a, b):
    assert a["param_groups"] == b["param_groups"]
    assert a["state"].keys() == b["state"].keys()
    for key in a["state"]:
        sa, sb = a["state"][key], b["state"][key]
        assert sa.keys() == sb.keys()
        for name in sa:
            if name == "step":
                assert sa[name] == sb[name]
            else:
                assert sa[name].dtype == sb[name].dtype
                assert np.array_equal(sa[name], sb[name]), (key, name)


# ------------------------------------------------------------------------------ vs reference

@pytest.mark.parametrize("info", ROWS)
def test_defaults_drive_the_update(info):
    opt = info.cls([np.zeros(3)])
    assert opt.defaults == info.defaults
    group = dict(opt.param_groups[0])
    assert len(group.pop("params")) == 1
    assert group == info.defaults
    # The defaults also drive the update: steps equal the reference with the row's values.
    rng = np.random.default_rng(1)
    arrays = [rand(rng, 10, f64)]
    ref = RefOptimizer(info, arrays, {})
    opt = info.cls(arrays)
    for _ in range(3):
        g = [rand(rng, 10, f64)]
        opt.step(g)
        ref.step(g)
    compare_with_ref(opt, arrays, ref, "defaults")


@pytest.mark.parametrize("info", TORCH_ROWS)
def test_defaults_are_torch_optims(info):
    """Every hyperparameter the NumPy class shares with torch.optim's class has its default
    there; the others are fastadam's own (the gradient policy, the NumPy-only options)."""
    torch = pytest.importorskip("torch")
    theirs = getattr(torch.optim, info.torch_name)([torch.zeros(3)]).defaults
    ours = {k: v for k, v in info.defaults.items()
            if k not in POLICY and k not in info.numpy_only}
    assert set(ours) <= set(theirs)
    assert ours == {k: theirs[k] for k in ours}


def change_between_steps(info):
    """What a group changes between steps: the values of the last option set that needs
    no state the rich one lacks, where they differ from the rich set's."""
    rich = info.full(RICH[info.name])
    have = set(info.state_names(rich))
    for h in reversed(info.option_sets()):
        change = {k: v for k, v in info.full(h).items() if v != rich[k]}
        if change and set(info.state_names(h)) <= have:
            return change
    raise AssertionError(f"{info.name}: no option set to change to")


@pytest.mark.parametrize("info", ROWS)
def test_hyperparameters_changed_between_steps(info):
    rich = RICH[info.name]
    rng = np.random.default_rng(2)
    arrays = make_arrays(rng)
    grads = [[rand(rng, a.shape, a.dtype) for a in arrays] for _ in range(10)]
    params = [a.copy() for a in arrays]
    unchanged = [a.copy() for a in arrays]
    opt, opt_unchanged = info.cls(params, **rich), info.cls(unchanged, **rich)
    ref = RefOptimizer(info, arrays, rich)
    for t, g in enumerate(grads):
        if t == 5:
            for key, value in change_between_steps(info).items():
                opt.param_groups[0][key] = value
                ref.hyper[key] = value
        opt.step(g)
        opt_unchanged.step(g)
        ref.step(g)
    compare_with_ref(opt, params, ref, "after the change")
    # The change took effect (the comparison above is not vacuous).
    assert not np.array_equal(params[0], unchanged[0])


@pytest.mark.parametrize("info", ROWS)
def test_invalid_hyperparameter_set_between_steps_is_rejected(info):
    rng = np.random.default_rng(3)
    params = make_arrays(rng)
    opt = info.cls(params, **RICH[info.name])
    opt.step([rand(rng, a.shape, a.dtype) for a in params])
    snap = snapshot(opt, params)
    opt.param_groups[0]["lr"] = -0.1
    with pytest.raises(ValueError, match="lr"):
        opt.step([rand(rng, a.shape, a.dtype) for a in params])
    opt.param_groups[0]["lr"] = snap[1]["param_groups"][0]["lr"]
    assert_unchanged(opt, params, snap)


# ------------------------------------------------------------------------------ state_dict

@pytest.mark.parametrize("info", ROWS)
def test_state_dict_is_a_copy(info):
    rich = RICH[info.name]
    rng = np.random.default_rng(4)
    arrays = make_arrays(rng)
    params, twin = [a.copy() for a in arrays], [a.copy() for a in arrays]
    opt, opt_twin = info.cls(params, **rich), info.cls(twin, **rich)
    grads = [[rand(rng, a.shape, a.dtype) for a in arrays] for _ in range(4)]
    for g in grads[:3]:
        opt.step(g)
        opt_twin.step(g)
    sd = opt.state_dict()
    assert set(sd) == {"state", "param_groups"}
    assert sd["param_groups"][0]["params"] == list(range(len(arrays)))
    for key, st in opt.state.items():
        assert sd["state"][key]["step"] == 3
        assert set(sd["state"][key]) == set(st) | {"step"}
        for name, arr in st.items():
            assert np.array_equal(sd["state"][key][name], arr)
            assert not np.shares_memory(sd["state"][key][name], arr)
    # Mutate everything in the returned dict.
    for st in sd["state"].values():
        st["step"] = 99
        for name, arr in st.items():
            if name != "step":
                arr[...] = 123.0
    sd["param_groups"][0]["lr"] = 77.0
    sd["param_groups"][0]["params"].append("x")
    # The optimizer did not change: its next step is its twin's.
    assert opt.param_groups[0]["lr"] == info.full(rich)["lr"]
    assert opt.step_count == 3
    opt.step(grads[3])
    opt_twin.step(grads[3])
    for p, q in zip(params, twin):
        assert np.array_equal(p, q)
    assert_state_dicts_equal(opt.state_dict(), opt_twin.state_dict())


# The hyperparameters that are pairs (betas, etas, step_sizes), per row
PAIRS = [pytest.param(info, name, id=f"{info.name}-{name}") for info in registry.OPTIMIZERS
         for name, value in info.defaults.items() if isinstance(value, tuple)]


@pytest.mark.parametrize("info, name", PAIRS)
def test_state_dict_copies_list_hyperparameters(info, name):
    # A pair given as a list (accepted by the validation) must not be shared with the copy.
    value = list(info.defaults[name])
    opt = info.cls([np.zeros(3)], **{name: value})
    sd = opt.state_dict()
    sd["param_groups"][0][name][0] = -7.0
    assert opt.param_groups[0][name][0] == value[0]


# ------------------------------------------------------------------------------ step() input

@pytest.mark.parametrize("info", ROWS)
def test_step_count_and_wrong_grads(info):
    rng = np.random.default_rng(9)
    arrays = make_arrays(rng)
    params = list(arrays)
    opt = info.cls(params, **RICH[info.name])
    assert opt.step_count == 0

    def grads():
        return [rand(rng, a.shape, a.dtype) for a in arrays]

    for t in (1, 2, 3):
        opt.step(grads())
        assert opt.step_count == t
    snap = snapshot(opt, params)

    def last_wrong(bad, i=len(arrays) - 1):     # grads before index i are valid
        g = grads()
        g[i] = bad
        return g

    # the last param's first state array (a per-tensor scalar state is 0-d)
    state = next(a for a in opt.state[len(arrays) - 1].values() if a.ndim)
    cases = [
        (TypeError, {i: g for i, g in enumerate(grads())}),     # dict for list params
        (TypeError, np.stack([np.zeros(2)] * len(arrays))),
        (ValueError, grads()[:-1]),                             # one short
        (ValueError, grads() + [np.zeros(1)]),                  # one too many
        (ValueError, last_wrong(np.zeros(2, f64))),             # wrong shape
        (TypeError, last_wrong(np.zeros(1, f32))),              # wrong dtype
        (TypeError, last_wrong([0.0])),                         # not an array
        (ValueError, last_wrong(np.zeros(34, f64)[::2], 1)),     # not contiguous
        (ValueError, last_wrong(np.zeros(17, f64)[::-1], 1)),    # negative stride
        (ValueError, last_wrong(params[-1])),                   # the param itself
        (ValueError, last_wrong(state)),                        # a state
    ]
    for exc, bad in cases:
        with pytest.raises(exc):
            opt.step(bad)
        assert_unchanged(opt, params, snap)
    # A tuple of grads is fine.
    opt.step(tuple(grads()))
    assert opt.step_count == 4


@pytest.mark.parametrize("info", ROWS)
def test_step_without_grads_is_rejected(info):
    # grads=None is not "grads in the same structure as the params": it must raise, and
    # must not count as a step (a skipped count would change SGD's first step and Adam's
    # bias correction for the rest of the run).
    params = [np.ones(3)]
    opt = info.cls(params, **RICH[info.name])
    snap = snapshot(opt, params)
    with pytest.raises(TypeError):
        opt.step(None)
    assert_unchanged(opt, params, snap)


@pytest.mark.parametrize("info", ROWS)
def test_dict_params_wrong_grads(info):
    rng = np.random.default_rng(10)
    params = {"x": rand(rng, (4,), f32), "y": rand(rng, (2, 2), f64)}
    opt = info.cls(params, **RICH[info.name])
    good = {"x": rand(rng, (4,), f32), "y": rand(rng, (2, 2), f64)}
    opt.step(good)
    snap = snapshot(opt, params)
    for exc, bad in [
        (TypeError, list(good.values())),
        (ValueError, {"x": good["x"]}),
        (ValueError, dict(good, z=good["x"])),
        (ValueError, {"x": good["x"], "z": good["y"]}),
        (ValueError, {"x": good["x"], "y": np.zeros((4,), f64)}),
    ]:
        with pytest.raises(exc):
            opt.step(bad)
        assert_unchanged(opt, params, snap)
    # Order of the grads' keys does not matter.
    opt.step({"y": good["y"], "x": good["x"]})
    assert opt.step_count == 2


@pytest.mark.parametrize("info", ROWS)
def test_constructor_rejects_bad_params(info):
    cls = info.cls
    with pytest.raises(TypeError):
        cls(np.zeros(3))
    with pytest.raises(ValueError):
        cls([])
    with pytest.raises(TypeError):
        cls([np.zeros(3, np.int64)])
    buf = np.zeros(10)
    with pytest.raises(ValueError):
        cls([buf[:6], buf[4:]])
    with pytest.raises(ValueError):
        cls([np.zeros(3)], lr=-1.0)


# ------------------------------------------------------------------------------ pack

def test_pack_list_views():
    rng = np.random.default_rng(11)
    shapes = [(3, 4), (5,), (), (2, 0), (7, 1)]
    arrays = [rand(rng, s, f32) for s in shapes]
    flat, views = fastadam.pack(arrays)
    assert isinstance(views, list)
    assert flat.ndim == 1 and flat.flags.c_contiguous and flat.dtype == f32
    assert flat.size == 12 + 5 + 1 + 0 + 7
    assert np.array_equal(flat, np.concatenate([a.ravel() for a in arrays]))
    for a, v in zip(arrays, views):
        assert v.shape == a.shape and v.dtype == f32
        assert np.array_equal(v, a)
        assert not np.shares_memory(a, flat)        # pack copies
        if a.size:
            assert np.shares_memory(v, flat)
    views[1][2] = 42.0
    assert flat[12 + 2] == 42.0
    flat[0] = -7.0
    assert views[0][0, 0] == -7.0


def test_pack_dict_and_dtypes():
    a, b = np.ones((2, 2), f32), np.full(3, 2.0, f64)
    flat, views = fastadam.pack({"b": b, "a": a})
    assert list(views) == ["b", "a"]
    assert flat.dtype == f64                        # common type of float32 and float64
    assert np.array_equal(flat, [2, 2, 2, 1, 1, 1, 1])
    assert views["a"].shape == (2, 2) and np.shares_memory(views["a"], flat)
    flat32, _ = fastadam.pack([a, b], dtype=f32)
    assert flat32.dtype == f32
    with pytest.raises(TypeError):
        fastadam.pack([a], dtype=np.int32)


@pytest.mark.parametrize("dtype", [f32, f64])
@pytest.mark.parametrize("kind", ["list", "dict"])
@pytest.mark.parametrize("info", ROWS)
def test_packed_equals_per_array(info, kind, dtype):
    rng = np.random.default_rng(12)
    shapes = [(3, 4), (17,), (), (2, 3, 5), (33,), (1,)]
    arrays = [rand(rng, s, dtype) for s in shapes]
    params = structure([a.copy() for a in arrays], kind)
    flat_p, pviews = fastadam.pack(structure(arrays, kind))
    flat_g, gviews = fastadam.pack(structure([np.zeros_like(a) for a in arrays], kind))
    opt = info.cls(params, **RICH[info.name])
    opt_flat = info.cls([flat_p], **RICH[info.name])
    for _ in range(10):
        grads = [rand(rng, s, dtype) for s in shapes]
        for v, g in zip(values_of(gviews), grads):
            v[...] = g
        opt.step(structure(grads, kind))
        opt_flat.step([flat_g])
    for p, v in zip(values_of(params), values_of(pviews)):
        assert np.array_equal(p, v)
    for name, flat in opt_flat.state[0].items():
        parts = [opt.state[k][name] for k in keys_of(params)]
        if name in info.scalar_names:       # one value per tensor: the same in every one
            assert all(a.tobytes() == flat.tobytes() for a in parts), name
        else:
            assert np.array_equal(np.concatenate([a.ravel() for a in parts]), flat), name


# ------------------------------------------------------------------------------ scale

@pytest.mark.parametrize("info", ROWS)
def test_many_small_tensors(info):
    rng = np.random.default_rng(13)
    arrays = [rand(rng, 100, f32) for _ in range(1000)]
    hyper = RICH[info.name]
    ref = RefOptimizer(info, arrays, hyper)
    opt = info.cls(arrays, **hyper)
    for _ in range(5):
        grads = [rand(rng, 100, f32) for _ in range(1000)]
        opt.step(grads)
        ref.step(grads)
    compare_with_ref(opt, arrays, ref, "1000 tensors")


# ------------------------------------------------------------------------------ memory

def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _steppers():
    """Per row, small optimizers with every state on (and the gradient pre-pass: a check,
    clipping and a loss scale) and a functional call with every state, each as a callable
    named by the class or the functional."""
    rng = np.random.default_rng(14)
    out = []
    for info in registry.OPTIMIZERS:
        rich = RICH[info.name]
        params = [rand(rng, 10, f32), rand(rng, (3, 3), f64)]
        grads = [rand(rng, 10, f32) * 1e-3, rand(rng, (3, 3), f64) * 1e-3]
        opt = info.cls(params, **rich, nonfinite="skip", max_grad_norm=1.0)
        out.append((info.name, lambda opt=opt, grads=grads: opt.step(grads, grad_scale=2.0)))
        p, g = rand(rng, 10, f64), rand(rng, 10, f64) * 1e-3
        states = info.initial_states(rich, p)
        # the call's arguments made once: the loop measures the call alone
        kw = dict(info.kernel_hyper(rich), **{n: states[n] for n in info.optional})
        if info.kernel_step != "none":
            kw["step"] = 7
        args = (p, g) + tuple(states[n] for n in info.arrays[2:])
        out.append((info.kernel_name, lambda fn=info.kernel, args=args, kw=kw: fn(*args, **kw)))
    return out


STEPPERS = [name for info in registry.OPTIMIZERS for name in (info.name, info.kernel_name)]


@pytest.mark.parametrize("name", STEPPERS)
def test_no_python_allocations_retained(name):
    step = dict(_steppers())[name]
    for _ in range(500):        # warm up caches (interned ints, free lists)
        step()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(20000):
            step()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    # A leak of even one small object per step would retain >= 20000 * 16 bytes.
    assert after - before < 32 * 1024, f"{after - before} bytes retained by 20000 steps"


def _asan_loaded():
    """True in a process running AddressSanitizer (the .ci/sanitize.sh build)."""
    try:
        with open("/proc/self/maps") as f:
            return "libasan" in f.read()
    except OSError:
        return False


def _rss_growth(step, steps=100_000, warmup=5_000):
    """Resident memory growth (bytes) over ``steps`` calls of ``step``, after ``warmup``
    calls that fill Python's caches and free lists."""
    for _ in range(warmup):
        step()
    before = _rss_bytes()
    for _ in range(steps):
        step()
    return _rss_bytes() - before


needs_statm = pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")
FLAT = 1024 * 1024      # bytes: a leak of >= 11 bytes a step over 100,000 steps exceeds it


def _rss_growth_in_fresh_process(setup):
    """_rss_growth in a new interpreter, whose heap holds no memory freed by earlier tests
    (memory they freed would take a leak's allocations without growing the resident set).
    ``setup`` is code that defines ``step``."""
    proc = run_python(f"""
        import ctypes
        import numpy as np
        import test_optim as t
        {setup}
        print(t._rss_growth(step))
        """, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout.split()[-1])


@needs_statm
@pytest.mark.skipif(_asan_loaded(), reason="AddressSanitizer holds freed memory in its "
                    "quarantine, so resident memory grows by design; the normal run checks it")
@pytest.mark.parametrize("name", STEPPERS)
def test_resident_memory_flat_over_100000_steps(name):
    """No native allocation survives a step: 100,000 steps with every state on (and the
    gradient pre-pass) leave the resident set within 1 MiB of where it was after warm-up."""
    grown = _rss_growth_in_fresh_process(f"step = dict(t._steppers())[{name!r}]")
    assert grown < FLAT, f"resident memory grew by {grown} bytes over 100,000 {name} steps"


@needs_statm
def test_resident_memory_check_sees_a_small_leak():
    """The measurement above can fail: 64 bytes malloc'ed and never freed per step (the
    size of a small leak in a step's native code) grow the resident set past the bound."""
    grown = _rss_growth_in_fresh_process(
        "libc = ctypes.CDLL(None); libc.malloc.restype = ctypes.c_void_p; "
        "libc.malloc.argtypes = [ctypes.c_size_t]; step = lambda: libc.malloc(64)")
    assert grown >= FLAT, f"a 64-byte-per-step leak grew resident memory by only {grown} B"
