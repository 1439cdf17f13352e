"""The NumPy classes with ``state_bits=8``, from tests/optimizers.py's rows and
fastadam/_registry.py (each state's map, MIN_8BIT_SIZE) alone.

A class with 8-bit states is a loop of the functionals over its params: a param with at
least ``min_8bit_size`` elements gets QuantizedState states (zeros, or its initial value
quantized), a smaller one 32-bit states; so every row's class equals that loop of the
compiled functionals bit for bit, and of fastadam.reference bit for bit where the row's
float32 kernel gives the reference's bits; over param groups, None grads and the
min_8bit_size boundary (4095 and 4096 elements). Also: the state_dict layout (``name``,
``name_absmax``, ``name_qmap``), its round trip and a resumed run's bits, load_state_dict
refusing bad 8-bit entries with nothing changed, master weights, the gradient policy, and
the options refused.
"""

import copy

import ml_dtypes
import numpy as np
import pytest

import fastadam
from fastadam import _registry, quant
import optimizers as registry
from test_registry_kernels import draw

ROWS = [pytest.param(info, id=info.name) for info in registry.OPTIMIZERS]
MIN = _registry.MIN_8BIT_SIZE
# (name, shape): around the boundary, a 2-d one, a small one
SHAPES = (("a", (MIN - 1,)), ("b", (MIN,)), ("c", (40, 130)), ("d", (7,)))
STEPS = 12


def signed(info, name):
    entry = _registry.by_name(info.kernel_name[:-1])
    return {s.name: s.qmap for s in entry.states}[name] == "signed"


def hyper_of(info):
    """An option set with every state, bitwise against the reference when one is."""
    full = [h for h in info.option_sets() if len(info.state_names(h)) == len(info.states)]
    bitwise = [h for h in full if info.bitwise(info.full(h))]
    return (bitwise or full)[0]


def params_of(seed, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(dtype) for k, s in SHAPES}


def grads_of(info, params, seed, none=()):
    """STEPS steps of grads; ``none``: (step, key) pairs given None."""
    rng = np.random.default_rng(seed + 100)
    out = []
    for t in range(STEPS):
        out.append({k: None if (t, k) in none else
                    draw(info.grad_sample, rng, p.shape, np.float32).astype(p.dtype)
                    for k, p in params.items()})
    return out


def loop_states(info, hyper, p, min_size):
    """The states the class starts ``p`` with (8-bit at min_size elements and up)."""
    out = {}
    for name, a in info.initial_states(hyper, p).items():
        if name in info.scalar_names or p.size < min_size:
            out[name] = a
        elif np.all(a == 0):
            out[name] = quant.QuantizedState.zeros(p.shape, signed(info, name))
        else:
            out[name] = quant.QuantizedState.from_float(a.astype(np.float32),
                                                        signed(info, name))
    return out


def run_loop(info, fn, hypers, group_of, params, grads, min_size):
    """The functional ``fn`` per param: each param's own step count (None: skipped)."""
    states = {k: loop_states(info, hypers[group_of[k]], p, min_size)
              for k, p in params.items()}
    steps = {k: 0 for k in params}
    with np.errstate(all="ignore"):
        for gs in grads:
            for k, p in params.items():
                if gs[k] is None:
                    continue
                steps[k] += 1
                info.call(fn, p, gs[k], states[k], hypers[group_of[k]], steps[k])
    return states


def make(info, params, hypers, group_keys, **kw):
    groups = [{"params": {k: params[k] for k in keys}, **h}
              for keys, h in zip(group_keys, hypers)]
    return info.cls(groups if len(groups) > 1 else groups[0]["params"],
                    **(hypers[0] if len(groups) == 1 else {}), **kw)


def assert_same_state(ours, theirs, where):
    for name in theirs:
        a, b = ours[name], theirs[name]
        assert type(a) is type(b), f"{where} {name}: {type(a).__name__}"
        if type(a) is quant.QuantizedState:
            assert a.codes.tobytes() == b.codes.tobytes(), f"{where} {name}.codes"
            assert a.absmax.tobytes() == b.absmax.tobytes(), f"{where} {name}.absmax"
            assert a.qmap.tobytes() == b.qmap.tobytes(), f"{where} {name}.qmap"
        else:
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), f"{where} {name}"


# ------------------------------------------------------------------------------ the loop

@pytest.mark.parametrize("info", ROWS)
def test_class_is_the_loop_of_functionals(info):
    """Two groups (the second with another lr), None grads for some params at some steps,
    params of 4095, 4096, 5200 and 7 elements: the class's params and states equal the
    functional loop's bit for bit, and the reference loop's where the row is bitwise."""
    h = hyper_of(info)
    h2 = dict(h, lr=info.full(h)["lr"] * 0.5)
    group_keys = (("a", "b"), ("c", "d"))
    group_of = {k: gi for gi, keys in enumerate(group_keys) for k in keys}
    none = {(1, "b"), (2, "b"), (3, "d"), (4, "a"), (9, "c")}
    p0 = params_of(1)
    grads = grads_of(info, p0, 1, none)
    opt_params = copy.deepcopy(p0)
    opt = make(info, opt_params, [h, h2], group_keys, state_bits=8)
    for k, p in opt_params.items():
        kinds = {type(v) for n, v in opt.state[k].items() if n not in info.scalar_names}
        assert kinds == ({quant.QuantizedState} if p.size >= MIN else {np.ndarray}), k
    with np.errstate(all="ignore"):
        for gs in grads:
            opt.step(gs)
    fn_params = copy.deepcopy(p0)
    fn_states = run_loop(info, info.kernel, [h, h2], group_of, fn_params, grads, MIN)
    for k in p0:
        assert opt_params[k].tobytes() == fn_params[k].tobytes(), f"param {k}"
        assert_same_state(opt.state[k], fn_states[k], f"functional, {k}")
    if info.bitwise(info.full(h)):
        ref_params = copy.deepcopy(p0)
        ref_states = run_loop(info, info.reference, [h, h2], group_of, ref_params, grads,
                              MIN)
        for k in p0:
            assert opt_params[k].tobytes() == ref_params[k].tobytes(), f"reference {k}"
            assert_same_state(opt.state[k], ref_states[k], f"reference, {k}")


@pytest.mark.parametrize("min_size", [0, 4096, 4097, 10 ** 9])
def test_min_8bit_size_boundary(min_size):
    """Exactly the params with at least min_8bit_size elements are 8-bit."""
    params = params_of(2)
    opt = fastadam.Adam(params, state_bits=8, min_8bit_size=min_size)
    for k, p in params.items():
        q8 = type(opt.state[k]["exp_avg"]) is quant.QuantizedState
        assert q8 == (p.size >= min_size), (k, p.size)
        if q8:
            assert opt.state[k]["exp_avg"].qmap.tobytes() == quant.SIGNED_MAP.tobytes()
            assert opt.state[k]["exp_avg_sq"].qmap.tobytes() == quant.UNSIGNED_MAP.tobytes()
    assert all(np.asarray(v).dtype == np.float32 for st in fastadam.Adam(
        params, state_bits=32).state.values() for v in st.values())


def test_nonzero_initial_values_are_quantized():
    p = {"w": np.zeros(5000, np.float32)}
    sums = fastadam.Adagrad(p, initial_accumulator_value=0.3, state_bits=8).state["w"]["sum"]
    assert np.array_equal(sums.dequantize(), np.full(5000, np.float32(0.3)))
    sizes = fastadam.Rprop(p, lr=0.02, state_bits=8).state["w"]["step_size"]
    assert np.array_equal(sizes.dequantize(), np.full(5000, np.float32(0.02)))


def test_master_weights_with_8bit_states():
    """bfloat16 params, float32 masters, 8-bit states: the functional with the master as
    the param and the bfloat16 param as its param_copy."""
    p0 = params_of(3, ml_dtypes.bfloat16)
    params = copy.deepcopy(p0)
    opt = fastadam.Adam(params, lr=1e-2, master_weights=True, state_bits=8)
    rng = np.random.default_rng(3)
    grads = [{k: rng.standard_normal(p.shape).astype(ml_dtypes.bfloat16)
              for k, p in p0.items()} for _ in range(4)]
    masters = {k: p.astype(np.float32) for k, p in p0.items()}
    ours = copy.deepcopy(p0)
    states = {k: (quant.QuantizedState.zeros(p.shape), quant.QuantizedState.zeros(
        p.shape, signed=False)) if p.size >= MIN else
        (np.zeros(p.shape, np.float32), np.zeros(p.shape, np.float32))
        for k, p in p0.items()}
    for t, gs in enumerate(grads, 1):
        opt.step(gs)
        for k in p0:
            fastadam.adam_(masters[k], gs[k], *states[k], step=t, lr=1e-2,
                           param_copy=ours[k])
    for k in p0:
        assert opt.state[k]["master_param"].tobytes() == masters[k].tobytes(), k
        assert params[k].tobytes() == ours[k].tobytes(), k
        assert_same_state(opt.state[k], dict(zip(("exp_avg", "exp_avg_sq"), states[k])), k)


# ------------------------------------------------------------------------------ state_dict

@pytest.mark.parametrize("info", ROWS)
def test_state_dict_round_trip_and_resume(info):
    h = hyper_of(info)
    p0 = params_of(4)
    grads = grads_of(info, p0, 4, none={(4, "c")})
    params = copy.deepcopy(p0)
    opt = info.cls(params, **h, state_bits=8)
    with np.errstate(all="ignore"):
        for gs in grads[:5]:
            opt.step(gs)
        sd = opt.state_dict()
        saved = copy.deepcopy(params)
        for gs in grads[5:]:
            opt.step(gs)
    for k, p in p0.items():
        st = sd["state"][k]
        for name in info.state_names(h):
            if name in info.scalar_names:
                continue
            if p.size >= MIN:
                assert st[name].dtype == np.uint8 and st[name].shape == p.shape
                assert st[name + "_absmax"].dtype == np.float32
                assert st[name + "_absmax"].shape == (quant.nblocks(p.size),)
                want = quant.SIGNED_MAP if signed(info, name) else quant.UNSIGNED_MAP
                assert st[name + "_qmap"].tobytes() == want.tobytes()
            else:
                assert st[name].dtype == np.float32 and name + "_absmax" not in st
        assert all(isinstance(v, (int, np.ndarray)) for v in st.values())
    resumed = copy.deepcopy(saved)
    opt2 = info.cls(resumed, **h, state_bits=8)
    opt2.load_state_dict(copy.deepcopy(sd))
    again = opt2.state_dict()
    for k in sd["state"]:
        for name, v in sd["state"][k].items():
            assert np.asarray(again["state"][k][name]).tobytes() == np.asarray(v).tobytes()
    with np.errstate(all="ignore"):
        for gs in grads[5:]:
            opt2.step(gs)
    for k in p0:
        assert resumed[k].tobytes() == params[k].tobytes(), k
        assert_same_state(opt2.state[k], opt.state[k], k)


def _bad_loads():
    def drop(sd):
        del sd["state"]["b"]["exp_avg_absmax"]

    def codes_dtype(sd):
        sd["state"]["b"]["exp_avg"] = sd["state"]["b"]["exp_avg"].astype(np.float32)

    def codes_shape(sd):
        sd["state"]["c"]["exp_avg"] = sd["state"]["c"]["exp_avg"].reshape(-1)

    def absmax_shape(sd):
        sd["state"]["b"]["exp_avg_sq_absmax"] = np.ones(3, np.float32)

    def absmax_dtype(sd):
        sd["state"]["b"]["exp_avg_sq_absmax"] = sd["state"]["b"][
            "exp_avg_sq_absmax"].astype(np.float64)

    def other_map(sd):
        sd["state"]["b"]["exp_avg_qmap"] = quant.dynamic_map(False)

    def from_32bit(sd):      # a 32-bit state where an 8-bit one is
        st = sd["state"]["b"]
        st["exp_avg"] = np.zeros(MIN, np.float32)
        del st["exp_avg_absmax"], st["exp_avg_qmap"]

    return [drop, codes_dtype, codes_shape, absmax_shape, absmax_dtype, other_map,
            from_32bit]


@pytest.mark.parametrize("corrupt", _bad_loads(), ids=lambda f: f.__name__)
def test_bad_state_dict_is_refused_and_changes_nothing(corrupt):
    params = params_of(5)
    opt = fastadam.Adam(params, lr=1e-2, state_bits=8)
    rng = np.random.default_rng(5)
    for _ in range(2):
        opt.step({k: rng.standard_normal(p.shape).astype(np.float32)
                  for k, p in params.items()})
    sd = opt.state_dict()
    before = opt.state_dict()
    corrupt(sd)
    with pytest.raises((ValueError, TypeError), match=r"^Invalid state_dict\['state'\]"):
        opt.load_state_dict(sd)
    after = opt.state_dict()
    for k in before["state"]:
        for name, v in before["state"][k].items():
            assert np.asarray(after["state"][k][name]).tobytes() == np.asarray(v).tobytes()


# ------------------------------------------------------------------------------ policy

def test_gradient_policy_with_8bit_states():
    params = params_of(6)
    rng = np.random.default_rng(6)
    grads = [{k: rng.standard_normal(p.shape).astype(np.float32) for k, p in params.items()}
             for _ in range(3)]
    bad = copy.deepcopy(grads[1])
    bad["b"][17] = np.nan

    def snapshot(opt, ps):
        sd = opt.state_dict()
        return [p.tobytes() for p in ps.values()] + [
            np.asarray(v).tobytes() for st in sd["state"].values() for v in st.values()]

    for policy in ("skip", "raise"):
        ps = copy.deepcopy(params)
        opt = fastadam.Adam(ps, state_bits=8, nonfinite=policy)
        opt.step(grads[0])
        snap = snapshot(opt, ps)
        if policy == "skip":
            assert opt.step(bad) is False
        else:
            with pytest.raises(FloatingPointError):
                opt.step(bad)
        assert snapshot(opt, ps) == snap, policy
    # clipping that does not bind: the unclipped bits; clipping that does: another step
    runs = {}
    for mgn in (None, 1e30, 1.0):
        ps = copy.deepcopy(params)
        opt = fastadam.Adam(ps, state_bits=8, max_grad_norm=mgn)
        for gs in grads:
            assert opt.step(gs) is True
        if mgn is not None:
            norm = np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in grads[-1].values()))
            assert opt.grad_norm == pytest.approx(norm, rel=1e-12)
        runs[mgn] = snapshot(opt, ps)
    assert runs[None] == runs[1e30] != runs[1.0]


# ------------------------------------------------------------------------------ refused

@pytest.mark.parametrize("kw, exc, arg", [
    (dict(state_bits=16), ValueError, "state_bits"),
    (dict(state_bits=4), ValueError, "state_bits"),
    (dict(state_bits="8"), TypeError, "state_bits"),
    (dict(state_bits=True), TypeError, "state_bits"),
    (dict(state_bits=8.0), TypeError, "state_bits"),
    (dict(state_bits=8, min_8bit_size=-1), ValueError, "min_8bit_size"),
    (dict(state_bits=8, min_8bit_size=1.5), TypeError, "min_8bit_size"),
    (dict(state_bits=8, min_8bit_size=None), TypeError, "min_8bit_size"),
    (dict(state_bits=8, state_dtype="bfloat16"), ValueError, "state_dtype"),
    (dict(state_bits=8, state_dtype=np.float16), ValueError, "state_dtype"),
])
@pytest.mark.parametrize("info", [registry.OPTIMIZERS[0], registry.OPTIMIZERS[2]],
                         ids=lambda i: i.name)
def test_bad_options(info, kw, exc, arg):
    with pytest.raises(exc, match=rf"^Invalid {arg}\b"):
        info.cls(params_of(7), **kw)


def test_float64_params():
    """A float64 param that would be 8-bit is refused naming it; a small one keeps its
    float64 states."""
    params = {"small": np.zeros(10), "big": np.zeros(MIN)}
    with pytest.raises(TypeError, match=r"^Invalid params\['big'\]"):
        fastadam.Adam(params, state_bits=8)
    opt = fastadam.Adam({"small": params["small"]}, state_bits=8)
    assert opt.state["small"]["exp_avg"].dtype == np.float64
    opt = fastadam.Adam([np.zeros(10, np.float32)], state_bits=8, min_8bit_size=100)
    with pytest.raises(TypeError, match=r"^Invalid params\[1\]"):
        opt.add_param_group({"params": [np.zeros(200)]})
