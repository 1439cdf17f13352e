"""16-bit storage in the NumPy classes, every class from tests/optimizers.py's rows:
``master_weights=True`` is a float32 run exactly, the 16-bit params its masters rounded to
nearest; ``state_dtype`` keeps the states in 16 bits (half the memory) and steps as the
functional does; ``rounding="stochastic"`` is keyed by (seed, step, the tensor's index) and
a state_dict round trip continues it bit for bit; 1 and 2 threads give the same bits; a
float32 group and a bfloat16 group in one optimizer step as each alone; a None grad leaves
a 16-bit param, its master and its states as they are.
"""

import numpy as np
import pytest

import fastadam
from fastadam.optim import MASTER
import optimizers as registry
from conftest import run_python
from test_half_kernels import DT, HALF, call, narrowed, store, widen

ROWS = [pytest.param(info, id=info.name) for info in registry.OPTIMIZERS]
SIZES = (513, 7, 1, 1500)
STEPS = 4
WATCHDOG_S = 300


def arrays(dtype, seed=0, sizes=SIZES, scale=1.0):
    rng = np.random.default_rng(seed)
    return [narrowed(rng.standard_normal(n).astype(np.float32) * scale, dtype)
            for n in sizes]


def grad_steps(dtype, steps=STEPS, seed=1, sizes=SIZES):
    return [arrays(dtype, seed + t, sizes) for t in range(steps)]


def state_bytes(opt, keys):
    return [v.tobytes() for k in keys for _, v in sorted(opt.state[k].items())]


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("info", ROWS)
def test_master_weights_are_a_float32_run(info, dtype):
    hyper = info.richest()
    params = arrays(dtype)
    ref = [widen(p).copy() for p in params]
    opt = info.cls(params, **hyper, master_weights=True)
    ref_opt = info.cls(ref, **hyper)
    for t, gs in enumerate(grad_steps(dtype), 1):
        with np.errstate(all="ignore"):
            assert opt.step(gs) is True
            ref_opt.step([widen(g).copy() for g in gs])
        for i, (p, r) in enumerate(zip(params, ref)):
            st = opt.state[i]
            assert st[MASTER].dtype == np.float32 and p.dtype == DT[dtype]
            assert st[MASTER].tobytes() == r.tobytes(), (i, t)
            assert p.tobytes() == narrowed(r, dtype).tobytes(), (i, t)
            assert set(st) == set(ref_opt.state[i]) | {MASTER}
            for k, v in ref_opt.state[i].items():
                assert st[k].dtype == v.dtype and st[k].tobytes() == v.tobytes(), (i, k, t)


@pytest.mark.parametrize("state_dtype", HALF)
@pytest.mark.parametrize("info", ROWS)
def test_state_dtype_halves_the_states_and_steps_as_the_functional(info, state_dtype):
    hyper, use_step = info.richest(), info.kernel_step != "none"
    params = arrays("float32")
    opt = info.cls(params, **hyper, state_dtype=state_dtype)
    wide = info.cls(arrays("float32"), **hyper)
    scalars = set(info.scalar_names)
    for i in range(len(params)):
        for k, v in opt.state[i].items():
            if k in scalars:
                assert v.dtype == np.float32 and v.shape == ()
            else:
                assert v.dtype == DT[state_dtype]
                assert v.nbytes * 2 == wide.state[i][k].nbytes
    # the functional on copies, tensor by tensor, from the class's initial states
    fp = [p.copy() for p in params]
    fstates = [{k: np.array(v, copy=True) for k, v in opt.state[i].items()}
               for i in range(len(params))]
    for t, gs in enumerate(grad_steps("float32"), 1):
        with np.errstate(all="ignore"):
            opt.step(gs)
            for p, g, st in zip(fp, gs, fstates):
                info.call(info.kernel, p, g, st, hyper, t if use_step else None)
    for i, p in enumerate(params):
        assert p.tobytes() == fp[i].tobytes(), i
        for k, v in opt.state[i].items():
            assert v.tobytes() == fstates[i][k].tobytes(), (i, k)


def test_state_dtype_refuses_16bit_states_on_a_float64_param():
    with pytest.raises(TypeError, match="^Invalid state_dtype"):
        fastadam.Adam([np.zeros(3)], state_dtype="bfloat16")


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("info", ROWS)
def test_stochastic_rounding_is_keyed_by_seed_step_and_tensor(info, dtype):
    """Each step of the class is the simulation with key fa_sr_key(seed, step, i) for
    tensor i (fastadam/_rounding.py's mirror around the float32 kernel)."""
    from fastadam import _rounding as R
    hyper, use_step = info.richest(), info.kernel_step != "none"
    params = arrays(dtype)
    opt = info.cls(params, **hyper, rounding="stochastic", seed=77)
    sim = [p.copy() for p in params]
    sstates = [{k: np.array(v, copy=True) for k, v in opt.state[i].items()}
               for i in range(len(params))]
    for t, gs in enumerate(grad_steps(dtype), 1):
        with np.errstate(all="ignore"):
            opt.step(gs)
            for i, (p, g, st) in enumerate(zip(sim, gs, sstates)):
                wp = widen(p)
                wide = {k: v if k in info.scalar_names else widen(v) for k, v in st.items()}
                info.call(info.kernel, wp, widen(g), wide, hyper, t if use_step else None)
                for k, v in st.items():
                    if k not in info.scalar_names:
                        store(wide[k], v)
                store(wp, p, R.sr_key(77, t, i))
        for i, p in enumerate(params):
            assert p.tobytes() == sim[i].tobytes(), (i, t)
            for k, v in opt.state[i].items():
                assert v.tobytes() == sstates[i][k].tobytes(), (i, k, t)
    nearest = arrays(dtype)
    near_opt = info.cls(nearest, **hyper)
    for gs in grad_steps(dtype):
        with np.errstate(all="ignore"):
            near_opt.step(gs)
    assert any(a.tobytes() != b.tobytes() for a, b in zip(params, nearest))


@pytest.mark.parametrize("info", ROWS)
def test_stochastic_rounding_resumes_bit_for_bit(info):
    hyper = dict(info.richest(), rounding="stochastic", seed=2**64 - 1)
    dtypes = ("bfloat16", "float16", "bfloat16", "float16")
    params = [narrowed(a, d) for a, d in zip(arrays("float32"), dtypes)]
    grads = [[narrowed(a, d) for a, d in zip(gs, dtypes)]
             for gs in grad_steps("float32", steps=12)]
    opt = info.cls(params, **hyper)
    with np.errstate(all="ignore"):
        for gs in grads[:6]:
            opt.step(gs)
        sd = opt.state_dict()
        saved = [p.copy() for p in params]
        for gs in grads[6:]:
            opt.step(gs)
        again = info.cls(saved, **dict(hyper, seed=5))
        again.load_state_dict(sd)
        assert again.param_groups[0]["seed"] == 2**64 - 1
        for gs in grads[6:]:
            again.step(gs)
    keys = range(len(params))
    assert [p.tobytes() for p in params] == [p.tobytes() for p in saved]
    assert state_bytes(opt, keys) == state_bytes(again, keys)


@pytest.mark.parametrize("info", ROWS)
def test_master_weights_resume_bit_for_bit(info):
    params = arrays("bfloat16")
    grads = grad_steps("bfloat16", steps=8)
    opt = info.cls(params, **info.richest(), master_weights=True)
    with np.errstate(all="ignore"):
        for gs in grads[:4]:
            opt.step(gs)
        sd = opt.state_dict()
        assert all(MASTER in sd["state"][i] for i in range(len(params)))
        saved = [p.copy() for p in params]
        for gs in grads[4:]:
            opt.step(gs)
        again = info.cls(saved, **info.richest(), master_weights=True)
        again.load_state_dict(sd)
        for gs in grads[4:]:
            again.step(gs)
    keys = range(len(params))
    assert [p.tobytes() for p in params] == [p.tobytes() for p in saved]
    assert state_bytes(opt, keys) == state_bytes(again, keys)


def thread_mismatches():
    """1 vs 2 threads over every class, 16-bit layouts, work split into small parts."""
    from fastadam import _core
    bad = []
    layouts = [dict(dtype="bfloat16", kw=dict(rounding="stochastic", seed=3)),
               dict(dtype="float16", kw={}),
               dict(dtype="bfloat16", kw=dict(master_weights=True)),
               dict(dtype="float32", kw=dict(state_dtype="float16"))]
    sizes = (3001, 5, 4099, 700)
    old_threads, old_min = fastadam.get_num_threads(), _core._set_min_per_thread(64)
    try:
        for info in registry.OPTIMIZERS:
            for lay in layouts:
                runs = []
                for threads in (1, 2):
                    fastadam.set_num_threads(threads)
                    params = arrays(lay["dtype"], sizes=sizes)
                    opt = info.cls(params, **info.richest(), **lay["kw"])
                    with np.errstate(all="ignore"):
                        for gs in grad_steps(lay["dtype"], steps=3, sizes=sizes):
                            opt.step(gs)
                    runs.append([p.tobytes() for p in params]
                                + state_bytes(opt, range(len(params))))
                if runs[0] != runs[1]:
                    bad.append(f"{info.name} {lay}")
    finally:
        fastadam.set_num_threads(old_threads)
        _core._set_min_per_thread(old_min)
    return bad


def test_one_and_two_threads_bit_identical():
    """In a child process, so that a hang in the thread pool fails this test only."""
    r = run_python("""
        import sys
        import test_half_classes as t
        bad = t.thread_mismatches()
        print("\\n".join(bad))
        print("done", flush=True)
        sys.exit(1 if bad else 0)
        """, timeout=WATCHDOG_S)
    assert r.returncode == 0 and "done" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("master", [False, True])
@pytest.mark.parametrize("info", ROWS)
def test_float32_and_bfloat16_groups_step_as_each_alone(info, master):
    hyper = info.richest()
    f32, bf16 = arrays("float32", seed=3), arrays("bfloat16", seed=4)
    alone = [[p.copy() for p in f32], [p.copy() for p in bf16]]
    opt = info.cls([{"params": f32}, {"params": bf16, "lr": hyper.get("lr", 1e-3) / 2}],
                   **hyper, master_weights=master)
    solo = [info.cls(alone[0], **hyper, master_weights=master),
            info.cls(alone[1], **dict(hyper, lr=hyper.get("lr", 1e-3) / 2),
                     master_weights=master)]
    g32, g16 = grad_steps("float32"), grad_steps("bfloat16", seed=9)
    with np.errstate(all="ignore"):
        for a, b in zip(g32, g16):
            assert opt.step(a + b) is True
            solo[0].step(a)
            solo[1].step(b)
    n = len(SIZES)
    assert [p.tobytes() for p in f32 + bf16] == [p.tobytes() for p in alone[0] + alone[1]]
    assert state_bytes(opt, range(2 * n)) == \
        state_bytes(solo[0], range(n)) + state_bytes(solo[1], range(n))
    assert all(p.dtype == DT["bfloat16"] for p in bf16)


@pytest.mark.parametrize("kw", [dict(), dict(master_weights=True),
                                dict(rounding="stochastic", seed=8)],
                         ids=["nearest", "master", "stochastic"])
@pytest.mark.parametrize("info", ROWS)
def test_none_grad_leaves_a_16bit_param_alone(info, kw):
    hyper = info.richest()
    params = arrays("bfloat16")
    opt = info.cls(params, **hyper, **kw)
    with np.errstate(all="ignore"):
        opt.step(grad_steps("bfloat16", steps=1)[0])
        before = [params[1].tobytes()] + state_bytes(opt, [1])
        others = [params[i].copy() for i in (0, 2, 3)]
        gs = grad_steps("bfloat16", steps=1, seed=20)[0]
        assert opt.step([gs[0], None, gs[2], gs[3]]) is True
    assert [params[1].tobytes()] + state_bytes(opt, [1]) == before
    assert all(params[i].tobytes() != o.tobytes() for i, o in zip((0, 2, 3), others)
               if params[i].size > 1)


def test_functional_and_class_agree_on_the_first_tensor_key():
    """The class's tensor 0 at step t and the functional at step=t share the key
    fa_sr_key(seed, t, 0)."""
    info = registry.ADAM
    hyper = info.richest()
    p = arrays("bfloat16", sizes=(1500,))
    q = [p[0].copy()]
    opt = info.cls(p, **hyper, rounding="stochastic", seed=41)
    st = {k: np.array(v, copy=True) for k, v in opt.state[0].items()}
    for t, gs in enumerate(grad_steps("bfloat16", sizes=(1500,)), 1):
        opt.step(gs)
        call(info, info.kernel, q[0], gs[0], st, hyper, t, rounding="stochastic", seed=41)
        assert p[0].tobytes() == q[0].tobytes(), t
