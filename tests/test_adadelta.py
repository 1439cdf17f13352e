"""Adadelta (torch.optim.Adadelta's rule): the kernel against fastadam.reference bit for bit
on every SIMD path and at 1 and 2 threads, rho's closed range [0, 1] (torch allows 1, the
other [0, 1) options do not), and checkpoints moving between torch.optim.Adadelta and
fastadam.torch.Adadelta in both directions (its 'step' is kept though the rule ignores it)."""

import copy

import numpy as np
import pytest

import fastadam
from fastadam import _core, reference
from conftest import DTYPES, assert_close, rand

SIZES = (0, 1, 7, 65, 100003)
OPTIONS = [dict(), dict(lr=0.5, weight_decay=0.1), dict(rho=0.5, eps=1e-4, maximize=True),
           dict(lr=2.0, rho=0.0, weight_decay=0.5, maximize=True),
           dict(lr=0.1, rho=1.0, eps=1e-3)]


def trajectory(fn, dtype, n, steps, seed=0, **hyper):
    """(param, square_avg, acc_delta) after ``steps`` steps of ``fn``."""
    rng = np.random.default_rng(seed)
    p, sq, acc = rand(rng, n, dtype), np.abs(rand(rng, n, dtype)), np.zeros(n, dtype)
    for _ in range(steps):
        fn(p, rand(rng, n, dtype), sq, acc, **hyper)
    return p, sq, acc


@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in
                                                                 o.items()) or "defaults")
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_kernel_matches_reference_bit_for_bit(simd_path, dtype, n, opts):
    got = trajectory(fastadam.adadelta_, dtype, n, 100, **opts)
    want = trajectory(reference.adadelta_, dtype, n, 100, **opts)
    for a, b, name in zip(got, want, ("param", "square_avg", "acc_delta")):
        assert a.dtype == dtype and a.shape == (n,)
        assert a.tobytes() == b.tobytes(), f"{name} differs from the reference"


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_one_and_two_threads_bit_identical(dtype):
    old_threads, old_min = fastadam.set_num_threads(1), _core._set_min_per_thread(1024)
    try:
        kw = dict(lr=0.5, rho=0.8, weight_decay=0.1)
        one = trajectory(fastadam.adadelta_, dtype, 100003, 20, **kw)
        fastadam.set_num_threads(2)
        two = trajectory(fastadam.adadelta_, dtype, 100003, 20, **kw)
    finally:
        fastadam.set_num_threads(old_threads)
        _core._set_min_per_thread(old_min)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(one, two))


def test_rho_closed_range():
    p, g, sq, acc = (np.full(3, 0.5) for _ in range(4))
    fastadam.adadelta_(p, g, sq, acc, rho=1.0)          # allowed: the averages stay put
    assert sq.tolist() == [0.5] * 3 and acc.tolist() == [0.5] * 3
    for bad in (1.0 + 2.0**-52, 2.0):
        before = p.tobytes()
        with pytest.raises(ValueError, match=r"^Invalid rho: .*\[0, 1\]"):
            fastadam.adadelta_(p, g, sq, acc, rho=bad)
        with pytest.raises(ValueError, match="^Invalid rho"):
            fastadam.Adadelta([np.ones(3)], rho=bad)
        assert p.tobytes() == before


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


HYPER = dict(lr=0.5, rho=0.8, weight_decay=0.1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_state_dict_moves_both_ways(dtype):
    """torch.optim.Adadelta -> fastadam.torch.Adadelta -> torch.optim.Adadelta continues the
    trajectory of torch alone, with the same 'step' counts."""
    grads = _grads(_params(dtype), 21)
    ref = _params(dtype)
    _run(torch.optim.Adadelta(ref, **HYPER, foreach=False), ref, grads)

    a = _params(dtype)
    opt_a = torch.optim.Adadelta(a, **HYPER, foreach=False)
    _run(opt_a, a, grads[:7])
    b = [p.detach().clone() for p in a]
    opt_b = ft.Adadelta(b, **HYPER)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))
    _run(opt_b, b, grads[7:14])
    sd = opt_b.state_dict()
    assert all(set(st) == {"step", "square_avg", "acc_delta"} for st in sd["state"].values())
    assert all(float(st["step"]) == 14 for st in sd["state"].values())
    assert list(sd["param_groups"][0]) == list(opt_a.state_dict()["param_groups"][0])
    c = [p.detach().clone() for p in b]
    opt_c = torch.optim.Adadelta(c, **HYPER, foreach=False)
    opt_c.load_state_dict(copy.deepcopy(sd))
    _run(opt_c, c, grads[14:])
    for x, y in zip(c, ref):
        assert_close(x.numpy(), y.numpy(), "param after the round trip")
    assert all(float(opt_c.state[p]["step"]) == 21 for p in c)


def test_torch_refuses_rho_above_one_as_torch():
    for cls in (torch.optim.Adadelta, ft.Adadelta):
        with pytest.raises(ValueError):
            cls(_params(torch.float32), rho=1.5)
        cls(_params(torch.float32), rho=1.0)
