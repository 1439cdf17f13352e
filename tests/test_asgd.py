"""ASGD (torch.optim.ASGD's rule) and its per-tensor scalar states ``eta`` and ``mu``: the
kernel against fastadam.reference bit for bit (params, ``ax`` and both scalars, in float32
and float64) on every SIMD path and thread count, over the steps where the averaging
starts (``mu`` leaves 1 after ``t0``); the NumPy class and fastadam.torch against
torch.optim.ASGD, with params that skip steps and checkpoints moving both ways."""

import copy

import numpy as np
import pytest

import fastadam
from fastadam import _core, reference
from conftest import DTYPES, assert_close, rand

SIZES = (0, 1, 7, 65, 100003)
# t0=30: ax = p for the first 30 steps, a running average afterwards
OPTIONS = [dict(), dict(lr=0.05, lambd=1e-2, t0=30.0),
           dict(lr=0.05, lambd=1e-2, alpha=0.5, t0=30.0, weight_decay=0.1),
           dict(lr=0.02, t0=2.5, weight_decay=0.1, maximize=True)]


def trajectory(fn, dtype, n, steps, scalar_dtype=np.float32, seed=0, **hyper):
    """(param, ax, eta, mu) after ``steps`` steps of ``fn``."""
    rng = np.random.default_rng(seed)
    p, ax = rand(rng, n, dtype), np.zeros(n, dtype)
    eta, mu = np.array(hyper.get("lr", 1e-2), scalar_dtype), np.array(1.0, scalar_dtype)
    for t in range(1, steps + 1):
        fn(p, rand(rng, n, dtype), ax, eta, mu, step=t, **hyper)
    return p, ax, eta, mu


def _ids(o):
    return "-".join(f"{k}={v}" for k, v in o.items()) or "defaults"


@pytest.mark.parametrize("opts", OPTIONS, ids=_ids)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("sdt", DTYPES, ids=["s32", "s64"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_kernel_matches_reference_bit_for_bit(simd_path, dtype, sdt, n, opts):
    got = trajectory(fastadam.asgd_, dtype, n, 100, sdt, **opts)
    want = trajectory(reference.asgd_, dtype, n, 100, sdt, **opts)
    for a, b, name in zip(got, want, ("param", "ax", "eta", "mu")):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == b.tobytes(), f"{name} differs from the reference"
        assert_close(a, b, name)
    if opts.get("t0", 1e6) < 100:
        assert float(got[3]) < 1.0       # the averaging did start


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_one_and_two_threads_bit_identical(dtype):
    old_threads, old_min = fastadam.set_num_threads(1), _core._set_min_per_thread(1024)
    try:
        one = trajectory(fastadam.asgd_, dtype, 100003, 20, t0=5.0, weight_decay=0.1)
        fastadam.set_num_threads(2)
        two = trajectory(fastadam.asgd_, dtype, 100003, 20, t0=5.0, weight_decay=0.1)
    finally:
        fastadam.set_num_threads(old_threads)
        _core._set_min_per_thread(old_min)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(one, two))


def test_ax_is_param_until_t0_then_averages():
    p, g, ax = np.ones(3), np.ones(3), np.zeros(3)
    eta, mu = np.array(0.1), np.array(1.0)
    for t in range(1, 4):
        fastadam.asgd_(p, g, ax, eta, mu, step=t, lr=0.1, t0=2.0)
        if t < 3:
            assert ax.tobytes() == p.tobytes() and float(mu) == 1.0
    # step 3 ran with mu = 1/max(1, 2 - 2) = 1, so ax = p; mu is now 1/(3-2) = 1
    assert float(mu) == 1.0
    fastadam.asgd_(p, g, ax, eta, mu, step=4, lr=0.1, t0=2.0)
    assert float(mu) == 0.5


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_mu_one_copies_the_param_into_ax(simd_path, dtype):
    # with mu == 1, ax = param exactly, whatever ax held (ax + (param - ax)*1 is not always
    # param: the branch is per call, as torch's)
    rng = np.random.default_rng(3)
    p, g = rand(rng, 1003, dtype), rand(rng, 1003, dtype)
    ax = rand(rng, 1003, dtype) * 1e3
    fastadam.asgd_(p, g, ax, np.array(0.1, np.float32), np.array(1.0, np.float32), step=1)
    assert ax.tobytes() == p.tobytes()


@pytest.mark.parametrize("opts", [dict(), dict(weight_decay=0.1, maximize=True)], ids=_ids)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_streamed_ax_matches_reference_at_every_alignment(simd_path, dtype, opts):
    # While mu == 1 a large range streams its stores to ax (kernels/asgd.pxi: from 32 KiB
    # per call), element by element up to ax's first 64-byte-aligned element: ax starts at
    # every offset within a cache line here (NumPy's own placement varies from run to run).
    n, per_line = 20011, 64 // np.dtype(dtype).itemsize
    for offset in range(per_line):
        rng = np.random.default_rng(offset)
        buf = np.empty(n + per_line, dtype)
        start = (offset - buf.ctypes.data // buf.itemsize) % per_line
        ax = buf[start:start + n]
        assert ax.ctypes.data % 64 == offset * buf.itemsize
        p, g = rand(rng, n, dtype), rand(rng, n, dtype)
        ax[:] = rand(rng, n, dtype)
        p_ref, ax_ref = p.copy(), ax.copy()
        for fn, q, a in ((fastadam.asgd_, p, ax), (reference.asgd_, p_ref, ax_ref)):
            eta, mu = np.array(0.05, np.float32), np.array(1.0, np.float32)
            for t in range(1, 4):
                fn(q, g, a, eta, mu, step=t, **opts)
        assert p.tobytes() == p_ref.tobytes() and ax.tobytes() == ax_ref.tobytes(), offset
        assert ax.tobytes() == p.tobytes()


@pytest.mark.parametrize("which, bad, exc, match", [
    ("eta", None, TypeError, "^Invalid eta"),
    ("mu", np.ones(2), ValueError, "^Invalid mu shape"),
    ("mu", "eta", ValueError, "^Invalid mu: it shares memory with eta"),
    ("eta", np.array(1.0, np.float16), TypeError, "^Invalid eta dtype"),
])
def test_bad_scalars_write_nothing(which, bad, exc, match):
    p, g, ax = (np.full(4, 0.5) for _ in range(3))
    sc = {"eta": np.array(0.01), "mu": np.array(1.0)}
    sc[which] = sc["eta"] if isinstance(bad, str) else bad
    arrays = [p, g, ax] + [a for a in sc.values() if isinstance(a, np.ndarray)]
    before = [a.tobytes() for a in arrays]
    with pytest.raises(exc, match=match):
        fastadam.asgd_(p, g, ax, sc["eta"], sc["mu"], step=1)
    assert [a.tobytes() for a in arrays] == before


def test_lambd_that_makes_no_real_power_is_refused():
    p, g, ax = (np.full(4, 0.5) for _ in range(3))
    eta, mu = np.array(0.01), np.array(1.0)
    with pytest.raises(ValueError, match="^Invalid lambd"):
        fastadam.asgd_(p, g, ax, eta, mu, step=5, lambd=-100.0)
    assert float(eta) == 0.01 and (p == 0.5).all()


def test_defaults():
    opt = fastadam.ASGD([np.ones(3)], lr=0.5)
    assert {k: v for k, v in opt.param_groups[0].items() if k != "params"} == dict(
        lr=0.5, lambd=1e-4, alpha=0.75, t0=1e6, weight_decay=0.0, maximize=False,
        nonfinite="propagate", max_grad_norm=None)
    st = opt.state[0]
    assert list(st) == ["eta", "mu", "ax"]
    assert st["eta"].dtype == np.float32 and float(st["eta"]) == 0.5 and float(st["mu"]) == 1


# ------------------------------------------------------------------------- against torch

torch = pytest.importorskip("torch")
import fastadam.torch as ft  # noqa: E402

TORCH_OPTIONS = [dict(lr=0.05), dict(lr=0.05, lambd=1e-2, t0=10.0, weight_decay=0.1),
                 dict(lr=0.05, alpha=0.5, t0=5.0, maximize=True)]


def _tol(a, b, what):
    a, b = a.detach().numpy(), b.detach().numpy()
    if a.dtype == np.float64:
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-12, err_msg=what)
    else:
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6, err_msg=what)


@pytest.mark.parametrize("opts", TORCH_OPTIONS, ids=_ids)
def test_numpy_class_matches_torch(opts):
    rng = np.random.default_rng(1)
    ps = [rand(rng, (4, 3), np.float32), rand(rng, 7, np.float64)]
    ours = [p.copy() for p in ps]
    tp = [torch.tensor(p, requires_grad=True) for p in ps]
    a, b = torch.optim.ASGD(tp, foreach=False, **opts), fastadam.ASGD(ours, **opts)
    for _ in range(40):
        gs = [rand(rng, p.shape, p.dtype) for p in ps]
        for t, g in zip(tp, gs):
            t.grad = torch.tensor(g)
        a.step()
        b.step(gs)
    for i, (t, p) in enumerate(zip(tp, ours)):
        _tol(t, torch.tensor(p), "param")
        _tol(a.state[t]["ax"], torch.tensor(b.state[i]["ax"]), "ax")
        for k in ("eta", "mu"):
            assert a.state[t][k].numpy().tobytes() == b.state[i][k].tobytes(), k


# torch.optim.ASGD stores each new eta and mu through torch.as_tensor (its default dtype,
# float32) even when the state is float64 (its load_state_dict casts a float64 param's
# state to float64); fastadam stores them in the state's own dtype, as fastadam.reference
# does. So checkpoints are reloaded here with float64 params only when ``reload`` is off.
@pytest.mark.parametrize("reload", [True, False], ids=["reload-f32", "f64"])
@pytest.mark.parametrize("opts", TORCH_OPTIONS, ids=_ids)
def test_torch_dropin_matches_torch_with_lagging_params_and_checkpoints(opts, reload):
    torch.manual_seed(0)
    dt1 = torch.float32 if reload else torch.float64
    ps = [torch.randn(n, dtype=dt) for n, dt in
          [(10, torch.float32), (33, dt1), (7, torch.float32)]]
    a = [p.clone().requires_grad_() for p in ps]
    b = [p.clone().requires_grad_() for p in ps]
    oa, ob = torch.optim.ASGD(a, foreach=False, **opts), ft.ASGD(b, **opts)
    for t in range(30):
        gs = [torch.randn_like(p) for p in ps]
        for i, (x, y, g) in enumerate(zip(a, b, gs)):
            lag = i == 1 and t % 3 == 0      # a lagging param: its own step, eta and mu
            x.grad = None if lag else g.clone()
            y.grad = None if lag else g.clone()
        oa.step()
        ob.step()
        if reload and t == 10:
            # torch -> ours (and torch's own reload, which casts its scalar states to the
            # param's dtype as ours does)
            sd = oa.state_dict()
            ob.load_state_dict(copy.deepcopy(sd))
            oa.load_state_dict(copy.deepcopy(sd))
        if reload and t == 20:
            sd = ob.state_dict()                                    # ours -> torch
            oa.load_state_dict(copy.deepcopy(sd))
            ob.load_state_dict(copy.deepcopy(sd))
    for x, y in zip(a, b):
        _tol(x, y, "param")
        sa, sb = oa.state[x], ob.state[y]
        assert list(sa) == list(sb) == ["step", "eta", "mu", "ax"]
        for k in ("step", "eta", "mu"):
            assert sb[k].shape == () and sb[k].dtype == sa[k].dtype
            assert torch.equal(sa[k], sb[k]), k
        _tol(sa["ax"], sb["ax"], "ax")


def test_torch_construction_errors_as_torch():
    p = [torch.zeros(3, requires_grad=True)]
    for bad in (dict(lr=-1.0), dict(weight_decay=-1.0)):
        with pytest.raises(ValueError):
            torch.optim.ASGD(p, **bad)
        with pytest.raises(ValueError):
            ft.ASGD(p, **bad)
    ft.ASGD(p, lambd=-1e-4, alpha=2.0, t0=0.0)      # unchecked by torch, accepted here too
