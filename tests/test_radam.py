"""RAdam (torch.optim.RAdam's rule): what the registry-driven tests cannot express. The
kernel against fastadam.reference bit for bit (both dtypes, sizes 0 to 100003, 100 steps,
every SIMD path), 1 vs 2 threads, the rho_t <= 5 branch of the first steps and the switch
to the rectified update, and checkpoints moving between torch.optim.RAdam and
fastadam.torch.RAdam both ways."""

import copy

import numpy as np
import pytest

import fastadam
from fastadam import _core, reference
from conftest import DTYPES, assert_close, rand

SIZES = (0, 1, 7, 65, 100003)
OPTIONS = [dict(), dict(lr=1e-2, weight_decay=0.1),
           dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True, maximize=True),
           dict(lr=3e-3, betas=(0.5, 0.9), eps=1e-6),
           dict(lr=1e-2, betas=(0.9, 0.6)),          # rho_inf = 4: never rectified
           dict(lr=1e-2, betas=(0.3, 0.99))]         # lerp from the far end (weight > 0.5)


def trajectory(fn, dtype, n, steps, seed=0, **hyper):
    """(param, exp_avg, exp_avg_sq) after ``steps`` steps of ``fn`` from fixed data."""
    rng = np.random.default_rng(seed)
    p, m, v = rand(rng, n, dtype), rand(rng, n, dtype) * 0.1, rand(rng, n, dtype, "pos")
    for t in range(1, steps + 1):
        fn(p, rand(rng, n, dtype), m, v, step=t, **hyper)
    return p, m, v


@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in
                                                                 o.items()) or "defaults")
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_kernel_matches_reference_bit_for_bit(simd_path, dtype, n, opts):
    got = trajectory(fastadam.radam_, dtype, n, 100, **opts)
    want = trajectory(reference.radam_, dtype, n, 100, **opts)
    for a, b, name in zip(got, want, ("param", "exp_avg", "exp_avg_sq")):
        assert a.dtype == dtype and a.shape == (n,)
        assert a.tobytes() == b.tobytes(), f"{name} differs from the reference"


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_one_and_two_threads_bit_identical(dtype):
    opts = dict(lr=1e-2, weight_decay=0.1)
    old_threads, old_min = fastadam.set_num_threads(1), _core._set_min_per_thread(1024)
    try:
        one = trajectory(fastadam.radam_, dtype, 100003, 20, **opts)
        fastadam.set_num_threads(2)
        two = trajectory(fastadam.radam_, dtype, 100003, 20, **opts)
    finally:
        fastadam.set_num_threads(old_threads)
        _core._set_min_per_thread(old_min)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(one, two))


def _rho_t(beta2, t):
    rho_inf = 2 / (1 - beta2) - 1
    return rho_inf - 2 * t * beta2 ** t / (1 - beta2 ** t)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_first_steps_are_unrectified_then_rectified(dtype):
    """While rho_t <= 5 (steps 1 to 5 at beta2 = 0.999) the update is ``lr * m/bc1``: it
    ignores exp_avg_sq and eps; from step 6 on, eps and exp_avg_sq change it."""
    assert [_rho_t(0.999, t) > 5 for t in range(1, 8)] == [False] * 5 + [True] * 2
    rng = np.random.default_rng(3)
    n = 33
    p = rand(rng, n, dtype)
    m, v = np.zeros(n, dtype), np.zeros(n, dtype)
    alt = [p.copy(), m.copy(), v.copy() + dtype(7.0)]        # another exp_avg_sq
    for t in range(1, 8):
        g = rand(rng, n, dtype)
        before, m_before = p.copy(), m.copy()
        fastadam.radam_(p, g, m, v, step=t, lr=0.1)
        fastadam.radam_(*alt[:1], g, *alt[1:], step=t, lr=0.1, eps=1.0)
        if t <= 5:
            q, mq, vq = before.copy(), m_before.copy(), np.zeros(n, dtype)
            reference.radam_(q, g, mq, vq, step=t, lr=0.1)
            assert p.tobytes() == q.tobytes()
            mt = m.astype(np.float64)
            expected = before - mt / (1 - 0.9 ** t) * 0.1
            np.testing.assert_allclose(p, expected, rtol=1e-5 if dtype == np.float32 else 1e-13)
            assert p.tobytes() == alt[0].tobytes(), f"step {t}: eps/exp_avg_sq mattered"
        else:
            assert not np.array_equal(p, alt[0]), f"step {t}: the update is not rectified"


def test_defaults_and_bad_hyperparameters():
    opt = fastadam.RAdam([np.ones(3)])
    assert {k: v for k, v in opt.param_groups[0].items() if k != "params"} == dict(
        lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled_weight_decay=False,
        maximize=False, nonfinite="propagate", max_grad_norm=None)
    p, g, m, v = (np.ones(4, np.float32) for _ in range(4))
    with pytest.raises(TypeError, match="step"):
        fastadam.radam_(p, g, m, v)
    with pytest.raises(ValueError, match="^Invalid step"):
        fastadam.radam_(p, g, m, v, step=0)
    with pytest.raises(ValueError, match=r"^Invalid betas\[1\]"):
        fastadam.RAdam([np.ones(3)], betas=(0.9, 1.0))
    assert p.tobytes() == np.ones(4, np.float32).tobytes()


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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_every_step_of_the_switch_matches_torch(dtype):
    """Step by step across the rho_t = 5 switch: fastadam.torch.RAdam against
    torch.optim.RAdam's for-loop after each of the first 10 steps."""
    grads = _grads(_params(dtype), 10)
    a, b = _params(dtype), _params(dtype)
    opt_a = torch.optim.RAdam(a, lr=0.05, foreach=False)
    opt_b = ft.RAdam(b, lr=0.05)
    for t, gs in enumerate(grads, 1):
        _run(opt_a, a, [gs])
        _run(opt_b, b, [gs])
        for x, y in zip(a, b):
            assert_close(y.numpy(), x.numpy(), f"step {t}")
            assert float(opt_b.state[y]["step"]) == t


def test_state_dict_moves_both_ways():
    """A torch.optim.RAdam checkpoint resumes in fastadam.torch.RAdam and back, continuing
    the same trajectory (both weight-decay modes)."""
    for hyper in (dict(lr=1e-2, weight_decay=0.1),
                  dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True)):
        grads = _grads(_params(torch.float64), 20)
        ref = _params(torch.float64)
        _run(torch.optim.RAdam(ref, foreach=False, **hyper), ref, grads)

        a = _params(torch.float64)
        opt_a = torch.optim.RAdam(a, foreach=False, **hyper)
        _run(opt_a, a, grads[:4])                   # before the switch at step 6
        b = [p.detach().clone() for p in a]
        opt_b = ft.RAdam(b, **hyper)
        opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))
        _run(opt_b, b, grads[4:12])
        sd = opt_b.state_dict()
        assert all(set(st) == {"step", "exp_avg", "exp_avg_sq"} and st["step"].dtype
                   == torch.float32 for st in sd["state"].values())
        assert sd["param_groups"][0].keys() == opt_a.state_dict()["param_groups"][0].keys()
        c = [p.detach().clone() for p in b]
        opt_c = torch.optim.RAdam(c, foreach=False, **hyper)
        opt_c.load_state_dict(copy.deepcopy(sd))
        _run(opt_c, c, grads[12:])
        for x, y in zip(c, ref):
            assert_close(x.numpy(), y.numpy())
