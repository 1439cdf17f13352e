"""Adamax (torch.optim.Adamax's rule): the kernel against fastadam.reference bit for bit on
every SIMD path and at 1 and 2 threads, with both ends of torch's lerp (1 - beta1 below and
above 0.5), the NaN rule of ``maximum`` and checkpoints moving between torch.optim.Adamax
and fastadam.torch.Adamax in both directions."""

import copy

import numpy as np
import pytest

import fastadam
from fastadam import _core, reference
from conftest import DTYPES, assert_close, rand

SIZES = (0, 1, 7, 65, 100003)
OPTIONS = [dict(lr=1e-2), dict(lr=1e-2, weight_decay=0.1),
           dict(lr=3e-3, betas=(0.2, 0.95), eps=1e-6, maximize=True),      # lerp from g
           dict(lr=1e-2, betas=(0.5, 0.5), weight_decay=0.5, maximize=True),  # weight 0.5
           dict(lr=1e-2, betas=(0.0, 0.0), eps=1e-3)]


def trajectory(fn, dtype, n, steps, seed=0, **hyper):
    """(param, exp_avg, exp_inf) after ``steps`` steps of ``fn`` from fixed random data."""
    rng = np.random.default_rng(seed)
    p, m, u = rand(rng, n, dtype), rand(rng, n, dtype) * 0.1, np.abs(rand(rng, n, dtype))
    for t in range(1, steps + 1):
        fn(p, rand(rng, n, dtype), m, u, step=t, **hyper)
    return p, m, u


@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in
                                                                 o.items()))
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_kernel_matches_reference_bit_for_bit(simd_path, dtype, n, opts):
    got = trajectory(fastadam.adamax_, dtype, n, 100, **opts)
    want = trajectory(reference.adamax_, dtype, n, 100, **opts)
    for a, b, name in zip(got, want, ("param", "exp_avg", "exp_inf")):
        assert a.dtype == dtype and a.shape == (n,)
        assert a.tobytes() == b.tobytes(), f"{name} differs from the reference"


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_one_and_two_threads_bit_identical(dtype):
    old_threads, old_min = fastadam.set_num_threads(1), _core._set_min_per_thread(1024)
    try:
        kw = dict(lr=1e-2, betas=(0.3, 0.9), weight_decay=0.1)
        one = trajectory(fastadam.adamax_, dtype, 100003, 20, **kw)
        fastadam.set_num_threads(2)
        two = trajectory(fastadam.adamax_, dtype, 100003, 20, **kw)
    finally:
        fastadam.set_num_threads(old_threads)
        _core._set_min_per_thread(old_min)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(one, two))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_maximum_propagates_nan_from_either_side(dtype):
    """A NaN in the gradient or in exp_inf makes exp_inf (and the param) NaN, as
    np.maximum and torch.maximum do; the other elements are as the reference's."""
    p = np.array([1.0, 2.0, 3.0, 4.0], dtype)
    g = np.array([np.nan, 0.5, -0.5, 0.0], dtype)
    m = np.zeros(4, dtype)
    u = np.array([0.1, np.nan, 0.2, 0.0], dtype)
    q, h, v = p.copy(), m.copy(), u.copy()
    fastadam.adamax_(p, g, m, u, step=1, lr=0.1)
    with np.errstate(invalid="ignore"):
        reference.adamax_(q, g, h, v, step=1, lr=0.1)
    assert np.isnan(u[:2]).all() and np.isnan(p[:2]).all()
    assert u[2:].tobytes() == v[2:].tobytes() and p[2:].tobytes() == q[2:].tobytes()
    assert u[3] == dtype(1e-8) and p[3] == 4.0             # g = 0: u = eps, m = 0


def test_weight_one_lerp_gives_the_gradient_exactly():
    """beta1 = 0: exp_avg becomes the gradient itself (the lerp from the far end)."""
    p, m, u = np.ones(5), np.full(5, 7.0), np.zeros(5)
    g = np.array([0.3, -1e-30, 1e30, 0.1, -2.0])
    fastadam.adamax_(p, g, m, u, step=3, betas=(0.0, 0.9))
    assert m.tobytes() == g.tobytes()


# ------------------------------------------------------------------------- against torch

torch = pytest.importorskip("torch")
import fastadam.torch as ft  # noqa: E402


def _params(dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=dtype) for s in ((7, 5), (65,), (1,))]


def _grads(params, steps, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]
            for _ in range(steps)]


def _run(opt, params, grads):
    for gs in grads:
        for p, g in zip(params, gs):
            p.grad = g
        opt.step()


HYPER = dict(lr=1e-2, betas=(0.8, 0.95), weight_decay=0.1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_state_dict_moves_both_ways(dtype):
    """torch.optim.Adamax -> fastadam.torch.Adamax -> torch.optim.Adamax continues the
    trajectory of torch alone."""
    grads = _grads(_params(dtype), 21)
    ref = _params(dtype)
    _run(torch.optim.Adamax(ref, **HYPER, foreach=False), ref, grads)

    a = _params(dtype)
    opt_a = torch.optim.Adamax(a, **HYPER, foreach=False)
    _run(opt_a, a, grads[:7])
    b = [p.detach().clone() for p in a]
    opt_b = ft.Adamax(b, **HYPER)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))
    _run(opt_b, b, grads[7:14])
    sd = opt_b.state_dict()
    assert all(set(st) == {"step", "exp_avg", "exp_inf"} for st in sd["state"].values())
    assert all(float(st["step"]) == 14 for st in sd["state"].values())
    assert list(sd["param_groups"][0]) == list(opt_a.state_dict()["param_groups"][0])
    c = [p.detach().clone() for p in b]
    opt_c = torch.optim.Adamax(c, **HYPER, foreach=False)
    opt_c.load_state_dict(copy.deepcopy(sd))
    _run(opt_c, c, grads[14:])
    for x, y in zip(c, ref):
        assert_close(x.numpy(), y.numpy(), "param after the round trip")


def test_capturable_and_differentiable_refused():
    for flag in ("capturable", "differentiable"):
        with pytest.raises(ValueError, match=f"^Invalid {flag}=True"):
            ft.Adamax(_params(torch.float32), **{flag: True})
