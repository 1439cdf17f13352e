"""NAdam (torch.optim.NAdam's rule) and its per-tensor scalar state ``mu_product``: the
kernel against fastadam.reference bit for bit (params, states and mu_product, in float32
and float64 mu_product) on every SIMD path and thread count; the 0-d array checks, which
write nothing; the NumPy class and fastadam.torch against torch.optim.NAdam, with params
that skip steps (several native calls, one per distinct step and mu_product) and
checkpoints moving both ways."""

import copy

import numpy as np
import pytest

import fastadam
from fastadam import _core, reference
from conftest import DTYPES, assert_close, rand

SIZES = (0, 1, 7, 65, 100003)
OPTIONS = [dict(), dict(lr=1e-2, weight_decay=0.1),
           dict(lr=3e-3, betas=(0.8, 0.95), weight_decay=0.1, decoupled_weight_decay=True),
           dict(lr=1e-2, betas=(0.3, 0.9), momentum_decay=0.1, maximize=True, eps=1e-4)]


def trajectory(fn, dtype, n, steps, scalar_dtype=np.float32, seed=0, **hyper):
    """(param, exp_avg, exp_avg_sq, mu_product) after ``steps`` steps of ``fn``."""
    rng = np.random.default_rng(seed)
    p, m, v = rand(rng, n, dtype), np.zeros(n, dtype), np.zeros(n, dtype)
    mu = np.array(1.0, scalar_dtype)
    for t in range(1, steps + 1):
        fn(p, rand(rng, n, dtype), m, v, mu, step=t, **hyper)
    return p, m, v, mu


def _ids(o):
    return "-".join(f"{k}={v}" for k, v in o.items()) or "defaults"


@pytest.mark.parametrize("opts", OPTIONS, ids=_ids)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("sdt", DTYPES, ids=["mu32", "mu64"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_kernel_matches_reference_bit_for_bit(simd_path, dtype, sdt, n, opts):
    got = trajectory(fastadam.nadam_, dtype, n, 100, sdt, **opts)
    want = trajectory(reference.nadam_, dtype, n, 100, sdt, **opts)
    for a, b, name in zip(got, want, ("param", "exp_avg", "exp_avg_sq", "mu_product")):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == b.tobytes(), f"{name} differs from the reference"
        assert_close(a, b, name)
    assert got[3].dtype == sdt and got[3].shape == ()


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_one_and_two_threads_bit_identical(dtype):
    old_threads, old_min = fastadam.set_num_threads(1), _core._set_min_per_thread(1024)
    try:
        one = trajectory(fastadam.nadam_, dtype, 100003, 20, weight_decay=0.1)
        fastadam.set_num_threads(2)
        two = trajectory(fastadam.nadam_, dtype, 100003, 20, weight_decay=0.1)
    finally:
        fastadam.set_num_threads(old_threads)
        _core._set_min_per_thread(old_min)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(one, two))


def test_mu_product_float32_rounds_every_step():
    # torch's mu_product is a float32 0-d tensor: mu_product *= mu rounds each step
    mu32, mu64 = np.array(1.0, np.float32), np.array(1.0)
    for t in range(1, 6):
        for mu in (mu32, mu64):
            fastadam.nadam_(np.zeros(2), np.ones(2), np.zeros(2), np.zeros(2), mu, step=t)
    want = np.float32(1.0)
    for t in range(1, 6):
        want = want * np.float32(0.9 * (1.0 - 0.5 * 0.96 ** (t * 4e-3)))
    assert mu32.tobytes() == np.array(want, np.float32).tobytes()
    assert float(mu64) != float(mu32) and abs(float(mu64) - float(mu32)) < 1e-6


@pytest.mark.parametrize("bad, exc, match", [
    (None, TypeError, "^Invalid mu_product: expected a 0-d numpy.ndarray"),
    (1.0, TypeError, "^Invalid mu_product: expected a 0-d"),
    (np.ones(1, np.float32), ValueError, r"^Invalid mu_product shape: expected a 0-d"),
    (np.array(1, np.int64), TypeError, "^Invalid mu_product dtype"),
    (np.array(1.0, np.float16), TypeError, "^Invalid mu_product dtype"),
    (np.array(1.0, ">f8"), TypeError, "^Invalid mu_product dtype"),
    ("readonly", ValueError, "^Invalid mu_product: read-only"),
    ("alias", ValueError, "^Invalid mu_product: it shares memory with the param"),
    (np.array(1 / 0.9 / (1.0 - 0.5 * 0.96 ** 4e-3)), ValueError, "^Invalid mu_product"),
])
def test_bad_mu_product_writes_nothing(bad, exc, match):
    p, g, m, v = (np.full(5, 0.5) for _ in range(4))
    if bad == "readonly":
        bad = np.array(1.0)
        bad.flags.writeable = False
    elif bad == "alias":
        bad = p[2:3].reshape(())
    before = [a.tobytes() for a in (p, g, m, v)]
    mu_before = bad.tobytes() if isinstance(bad, np.ndarray) else None
    with pytest.raises(exc, match=match):
        fastadam.nadam_(p, g, m, v, bad, step=1)
    assert [a.tobytes() for a in (p, g, m, v)] == before
    if mu_before is not None:
        assert bad.tobytes() == mu_before


def test_defaults():
    opt = fastadam.NAdam([np.ones(3)])
    assert {k: v for k, v in opt.param_groups[0].items() if k != "params"} == dict(
        lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, momentum_decay=4e-3,
        decoupled_weight_decay=False, maximize=False, nonfinite="propagate",
        max_grad_norm=None)
    st = opt.state[0]
    assert list(st) == ["mu_product", "exp_avg", "exp_avg_sq"]
    assert st["mu_product"].shape == () and st["mu_product"].dtype == np.float32
    with pytest.raises(ValueError, match="^Invalid momentum_decay"):
        fastadam.NAdam([np.ones(3)], momentum_decay=-1.0)


def test_class_state_dict_scalar_checks():
    opt = fastadam.NAdam({"a": np.ones(3), "b": np.ones(2, np.float32)}, lr=1e-2)
    for _ in range(3):
        opt.step({"a": np.ones(3), "b": np.ones(2, np.float32)})
    sd = opt.state_dict()
    assert sd["state"]["a"]["mu_product"].tobytes() == sd["state"]["b"]["mu_product"].tobytes()
    bad = copy.deepcopy(sd)
    bad["state"]["b"]["mu_product"] = np.array(0.5)      # float64: not the state's dtype
    with pytest.raises(ValueError, match="mu_product"):
        opt.load_state_dict(bad)
    assert opt.state_dict()["state"]["b"]["mu_product"] == sd["state"]["b"]["mu_product"]


def test_skipped_or_refused_step_leaves_mu_product():
    opt = fastadam.NAdam([np.ones(3), np.ones(2)], nonfinite="skip")
    opt.step([np.ones(3), np.ones(2)])
    after_one = [opt.state[i]["mu_product"].tobytes() for i in range(2)]
    assert opt.step([np.array([1.0, np.nan, 1.0]), np.ones(2)]) is False
    assert [opt.state[i]["mu_product"].tobytes() for i in range(2)] == after_one
    with pytest.raises(ValueError):
        opt.step([np.ones(3), np.ones(3)])              # a grad of the wrong shape
    assert [opt.state[i]["mu_product"].tobytes() for i in range(2)] == after_one
    opt.step([np.ones(3), np.ones(2)])
    assert opt.state[0]["mu_product"].tobytes() == opt.state[1]["mu_product"].tobytes()
    assert float(opt.state[1]["mu_product"]) < float(np.frombuffer(after_one[1], np.float32)[0])


# ------------------------------------------------------------------------- against torch

torch = pytest.importorskip("torch")
import fastadam.torch as ft  # noqa: E402

TORCH_OPTIONS = [dict(lr=1e-2), dict(lr=1e-2, weight_decay=0.1),
                 dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True, maximize=True)]


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
    a, b = torch.optim.NAdam(tp, foreach=False, **opts), fastadam.NAdam(ours, **opts)
    for _ in range(60):
        gs = [rand(rng, p.shape, p.dtype) for p in ps]
        for t, g in zip(tp, gs):
            t.grad = torch.tensor(g)
        a.step()
        b.step(gs)
    for t, p in zip(tp, ours):
        _tol(t, torch.tensor(p), "param")
    for i, t in enumerate(tp):
        assert a.state[t]["mu_product"].numpy().tobytes() == b.state[i]["mu_product"].tobytes()


@pytest.mark.parametrize("opts", TORCH_OPTIONS, ids=_ids)
def test_torch_dropin_matches_torch_with_lagging_params_and_checkpoints(opts):
    torch.manual_seed(0)
    ps = [torch.randn(n, dtype=dt) for n, dt in
          [(10, torch.float32), (33, torch.float64), (7, torch.float32)]]
    a = [p.clone().requires_grad_() for p in ps]
    b = [p.clone().requires_grad_() for p in ps]
    oa, ob = torch.optim.NAdam(a, foreach=False, **opts), ft.NAdam(b, **opts)
    for t in range(40):
        gs = [torch.randn_like(p) for p in ps]
        for i, (x, y, g) in enumerate(zip(a, b, gs)):
            lag = i == 1 and t % 3 == 0      # a lagging param: its own step and mu_product
            x.grad = None if lag else g.clone()
            y.grad = None if lag else g.clone()
        oa.step()
        ob.step()
        if t == 15:
            # torch -> ours (and torch's own reload, which casts its scalar states to the
            # param's dtype as ours does)
            sd = oa.state_dict()
            ob.load_state_dict(copy.deepcopy(sd))
            oa.load_state_dict(copy.deepcopy(sd))
        if t == 30:
            sd = ob.state_dict()                                    # ours -> torch
            oa.load_state_dict(copy.deepcopy(sd))
            ob.load_state_dict(copy.deepcopy(sd))
    for x, y in zip(a, b):
        _tol(x, y, "param")
        sa, sb = oa.state[x], ob.state[y]
        assert list(sa) == list(sb) == ["step", "mu_product", "exp_avg", "exp_avg_sq"]
        for k in ("step", "mu_product"):
            assert sb[k].shape == () and sb[k].dtype == sa[k].dtype
            assert torch.equal(sa[k], sb[k]), k
        for k in ("exp_avg", "exp_avg_sq"):
            _tol(sa[k], sb[k], k)


def test_torch_construction_errors_as_torch():
    p = [torch.zeros(3, requires_grad=True)]
    for bad in (dict(lr=-1.0), dict(eps=-1.0), dict(betas=(1.0, 0.9)),
                dict(betas=(0.9, -0.1)), dict(weight_decay=-1.0), dict(momentum_decay=-1.0)):
        with pytest.raises(ValueError):
            torch.optim.NAdam(p, **bad)
        with pytest.raises(ValueError):
            ft.NAdam(p, **bad)
    ft.NAdam(p, eps=0.0)        # torch accepts eps=0 too
