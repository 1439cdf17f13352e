"""Adagrad (torch.optim.Adagrad's rule): the kernel against fastadam.reference bit for bit
on every SIMD path and at 1 and 2 threads (lr_decay makes the step count matter), and what
the registry-driven tests cannot express: ``initial_accumulator_value`` (a class option that
fills ``sum``, refused when negative) and checkpoints moving between torch.optim.Adagrad
(whose state exists from construction) and fastadam.torch.Adagrad in both directions."""

import copy

import numpy as np
import pytest

import fastadam
from fastadam import _core, reference
from conftest import DTYPES, assert_close, rand

SIZES = (0, 1, 7, 65, 100003)
OPTIONS = [dict(lr=1e-2), dict(lr=5e-2, lr_decay=0.05, weight_decay=0.1),
           dict(lr=3e-2, eps=1e-6, maximize=True),
           dict(lr=1e-1, lr_decay=1.0, weight_decay=0.5, eps=1e-3, maximize=True)]


def trajectory(fn, dtype, n, steps, seed=0, init=0.0, **hyper):
    """(param, sum) after ``steps`` steps of ``fn`` from fixed random data."""
    rng = np.random.default_rng(seed)
    p, s = rand(rng, n, dtype), np.full(n, init, dtype)
    for t in range(1, steps + 1):
        fn(p, rand(rng, n, dtype), s, step=t, **hyper)
    return p, s


@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in
                                                                 o.items()))
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_kernel_matches_reference_bit_for_bit(simd_path, dtype, n, opts):
    got = trajectory(fastadam.adagrad_, dtype, n, 100, init=0.1, **opts)
    want = trajectory(reference.adagrad_, dtype, n, 100, init=0.1, **opts)
    for a, b, name in zip(got, want, ("param", "sum")):
        assert a.dtype == dtype and a.shape == (n,)
        assert a.tobytes() == b.tobytes(), f"{name} differs from the reference"


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_one_and_two_threads_bit_identical(dtype):
    old_threads, old_min = fastadam.set_num_threads(1), _core._set_min_per_thread(1024)
    try:
        kw = dict(lr=5e-2, lr_decay=0.05, weight_decay=0.1)
        one = trajectory(fastadam.adagrad_, dtype, 100003, 20, **kw)
        fastadam.set_num_threads(2)
        two = trajectory(fastadam.adagrad_, dtype, 100003, 20, **kw)
    finally:
        fastadam.set_num_threads(old_threads)
        _core._set_min_per_thread(old_min)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(one, two))


def test_lr_decay_uses_the_step():
    p, g, s = np.ones(3), np.full(3, 2.0), np.zeros(3)
    fastadam.adagrad_(p, g, s, step=5, lr=1.0, lr_decay=0.25)
    # clr = 1 / (1 + 4*0.25) = 0.5; sum = 4; p = 1 - 0.5*2/(2 + 1e-10)
    np.testing.assert_allclose(p, 1 - 0.5 * 2 / (2 + 1e-10), rtol=0, atol=0)
    assert s.tolist() == [4.0, 4.0, 4.0]


@pytest.mark.parametrize("value", [0.0, 0.1, 2.5])
def test_numpy_class_fills_sum_with_initial_accumulator_value(value):
    opt = fastadam.Adagrad({"w": np.ones(4, np.float32)}, initial_accumulator_value=value)
    assert opt.state["w"]["sum"].dtype == np.float32
    assert opt.state["w"]["sum"].tolist() == [np.float32(value)] * 4
    p, s = np.ones(4, np.float32), np.full(4, value, np.float32)
    g = np.linspace(-1, 1, 4).astype(np.float32)
    opt.step({"w": g})
    reference.adagrad_(p, g, s, step=1)
    assert opt.state["w"]["sum"].tobytes() == s.tobytes()


@pytest.mark.parametrize("bad, exc", [(-0.1, ValueError), (float("nan"), ValueError),
                                      (float("inf"), ValueError), ("0.1", TypeError),
                                      (None, TypeError), (True, TypeError)])
def test_bad_initial_accumulator_value(bad, exc):
    with pytest.raises(exc, match="^Invalid initial_accumulator_value"):
        fastadam.Adagrad([np.ones(3)], initial_accumulator_value=bad)


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


HYPER = dict(lr=5e-2, lr_decay=0.02, weight_decay=0.1, initial_accumulator_value=0.3)


@pytest.mark.parametrize("fused", [None, True])
def test_state_exists_from_construction_as_torch(fused):
    a, b = _params(torch.float32), _params(torch.float32)
    sa = torch.optim.Adagrad(a, **HYPER, fused=fused).state_dict()
    sb = ft.Adagrad(b, **HYPER, fused=fused).state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    assert list(sa["param_groups"][0]) == list(sb["param_groups"][0])
    for i in range(3):
        assert set(sa["state"][i]) == set(sb["state"][i]) == {"step", "sum"}
        assert sb["state"][i]["step"].dtype == sa["state"][i]["step"].dtype
        assert float(sb["state"][i]["step"]) == 0.0
        assert torch.equal(sa["state"][i]["sum"], sb["state"][i]["sum"])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_state_dict_moves_both_ways(dtype):
    """torch.optim.Adagrad -> fastadam.torch.Adagrad -> torch.optim.Adagrad continues the
    trajectory of torch alone (also from a checkpoint taken before any step)."""
    grads = _grads(_params(dtype), 21)
    ref = _params(dtype)
    _run(torch.optim.Adagrad(ref, **HYPER, foreach=False), ref, grads)

    a = _params(dtype)
    opt_a = torch.optim.Adagrad(a, **HYPER, foreach=False)
    _run(opt_a, a, grads[:7])
    b = [p.detach().clone() for p in a]
    opt_b = ft.Adagrad(b, **HYPER)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))
    _run(opt_b, b, grads[7:14])
    sd = opt_b.state_dict()
    assert all(float(st["step"]) == 14 for st in sd["state"].values())
    c = [p.detach().clone() for p in b]
    opt_c = torch.optim.Adagrad(c, **HYPER, foreach=False)
    opt_c.load_state_dict(copy.deepcopy(sd))
    _run(opt_c, c, grads[14:])
    for x, y in zip(c, ref):
        assert_close(x.numpy(), y.numpy(), "param after the round trip")

    fresh = _params(dtype)                   # a checkpoint of fastadam.torch before a step
    opt_f = torch.optim.Adagrad(fresh, foreach=False)
    opt_f.load_state_dict(copy.deepcopy(ft.Adagrad(_params(dtype), **HYPER).state_dict()))
    _run(opt_f, fresh, grads)
    for x, y in zip(fresh, ref):
        assert_close(x.numpy(), y.numpy(), "param from a fresh checkpoint")


def test_torch_class_refuses_bad_initial_accumulator_value():
    with pytest.raises(ValueError, match="^Invalid initial_accumulator_value"):
        ft.Adagrad(_params(torch.float32), initial_accumulator_value=-1.0)
    with pytest.raises(ValueError):
        torch.optim.Adagrad(_params(torch.float32), initial_accumulator_value=-1.0)
