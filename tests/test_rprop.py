"""Rprop (torch.optim.Rprop's rule): what the registry-driven tests cannot express. The
kernel against fastadam.reference bit for bit (both dtypes, sizes 0 to 100003, 100 steps,
every SIMD path, with zero and sign-flipping gradients), 1 vs 2 threads, the sign-flip
rule element by element, NaN, the clamp's order, the step sizes starting at lr, and
checkpoints moving between torch.optim.Rprop and fastadam.torch.Rprop both ways."""

import copy

import numpy as np
import pytest

import fastadam
from fastadam import _core, reference
from conftest import DTYPES, assert_close, rand

SIZES = (0, 1, 7, 65, 100003)
OPTIONS = [dict(), dict(lr=0.05, etas=(0.3, 1.5), step_sizes=(1e-3, 0.2)),
           dict(maximize=True),
           dict(step_sizes=(0.5, 0.02)),                 # lower bound above the upper
           dict(lr=0.02, etas=[0.9, 1.1], step_sizes=[-1.0, 0.05])]


def trajectory(fn, dtype, n, steps, seed=0, **hyper):
    """(param, prev, step_size) after ``steps`` steps of ``fn`` from fixed data; a third of
    the gradient elements are +-0 at each step, so that every branch of the rule runs."""
    rng = np.random.default_rng(seed)
    p = rand(rng, n, dtype)
    prev, size = np.zeros(n, dtype), np.full(n, hyper.get("lr", 1e-2), dtype)
    for _ in range(steps):
        g = rand(rng, n, dtype)
        g[rng.random(n) < 0.2] = 0.0
        g[rng.random(n) < 0.1] = -0.0
        fn(p, g, prev, size, **hyper)
    return p, prev, size


@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in
                                                                 o.items()) or "defaults")
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_kernel_matches_reference_bit_for_bit(simd_path, dtype, n, opts):
    got = trajectory(fastadam.rprop_, dtype, n, 100, **opts)
    want = trajectory(reference.rprop_, dtype, n, 100, **opts)
    for a, b, name in zip(got, want, ("param", "prev", "step_size")):
        assert a.dtype == dtype and a.shape == (n,)
        assert a.tobytes() == b.tobytes(), f"{name} differs from the reference"


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_one_and_two_threads_bit_identical(dtype):
    opts = dict(lr=0.05, etas=(0.3, 1.5), step_sizes=(1e-3, 0.2))
    old_threads, old_min = fastadam.set_num_threads(1), _core._set_min_per_thread(1024)
    try:
        one = trajectory(fastadam.rprop_, dtype, 100003, 20, **opts)
        fastadam.set_num_threads(2)
        two = trajectory(fastadam.rprop_, dtype, 100003, 20, **opts)
    finally:
        fastadam.set_num_threads(old_threads)
        _core._set_min_per_thread(old_min)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(one, two))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_sign_flips_element_by_element(dtype):
    """Same sign: the step size grows by etaplus and p moves against g; a flip: it shrinks
    by etaminus, p stays, prev becomes 0; a zero product: the size stays; NaN propagates
    into that element's size and param only."""
    p = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.0], dtype)
    prev = np.array([2.0, -2.0, 2.0, 0.0, 3.0, 1.0], dtype)
    g = np.array([1.0, -3.0, -1.0, 5.0, 0.0, np.nan], dtype)
    size = np.full(6, 0.1, dtype)
    fastadam.rprop_(p, g, prev, size, etas=(0.5, 2.0), step_sizes=(0.01, 0.15))
    one, c, hi = dtype(1), dtype(0.1), dtype(0.15)
    assert size[:5].tolist() == [hi, hi, c * dtype(0.5), c, c]     # clamped at 0.15
    assert p[:5].tolist() == [one - hi, one + hi, one, one - c, one]
    assert prev[:5].tolist() == [1.0, -3.0, 0.0, 5.0, 0.0]
    assert not np.signbit(prev[2])
    assert np.isnan(size[5]) and np.isnan(p[5]) and np.isnan(prev[5])


def test_clamp_order_and_nan_step_size():
    """np.clip / torch.clamp: max with step_sizes[0] first, then min with step_sizes[1]
    (lower > upper: every size becomes the upper); a NaN step size stays NaN."""
    p, g = np.zeros(3), np.array([1.0, 1.0, 1.0])
    prev = np.array([1.0, 0.0, 1.0])
    size = np.array([1e-9, 1.0, np.nan])
    fastadam.rprop_(p, g, prev, size, step_sizes=(0.5, 0.02))
    assert size[:2].tolist() == [0.02, 0.02] and np.isnan(size[2])


def test_defaults_bad_etas_and_initial_state():
    opt = fastadam.Rprop([np.ones(3), np.ones((2, 2), np.float32)], lr=0.03)
    assert {k: v for k, v in opt.param_groups[0].items() if k != "params"} == dict(
        lr=0.03, etas=(0.5, 1.2), step_sizes=(1e-6, 50), maximize=False,
        nonfinite="propagate", max_grad_norm=None)
    for st, dt in zip(opt.state.values(), (np.float64, np.float32)):
        assert st["prev"].dtype == dt and not st["prev"].any()
        assert st["step_size"].dtype == dt and (st["step_size"] == dt(0.03)).all()
    p, g, prev, size = (np.ones(4, np.float32) for _ in range(4))
    for etas in [(0.5, 1.0), (1.0, 1.2), (0.0, 2.0), (1.5, 0.5)]:
        with pytest.raises(ValueError, match=r"^Invalid etas: .*0 < etaminus < 1 < etaplus"):
            fastadam.rprop_(p, g, prev, size, etas=etas)
        with pytest.raises(ValueError, match="^Invalid etas"):
            fastadam.Rprop([np.ones(3)], etas=etas)
    assert p.tobytes() == np.ones(4, np.float32).tobytes()


# ------------------------------------------------------------------------- against torch

torch = pytest.importorskip("torch")
import fastadam.torch as ft  # noqa: E402


def _params(dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=dtype) for s in ((7, 5), (65,), (1,))]


def _grads(params, steps, seed=1):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        gs = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]
        for g in gs:
            g[torch.rand(g.shape, generator=gen) < 0.2] = 0.0
        out.append(gs)
    return out


def _run(opt, params, grads):
    for gs in grads:
        for p, g in zip(params, gs):
            p.grad = g
        opt.step()


def test_construction_errors_are_torchs():
    """torch.optim.Rprop's construction errors, as ValueError; step_sizes torch does not
    check (it unpacks it at the first step): fastadam asks for a pair of finite numbers."""
    w = [torch.zeros(3)]
    for etas in [(0.5, 1.0), (1.0, 1.2), (0.0, 1.2)]:
        with pytest.raises(ValueError, match="Invalid eta values"):
            torch.optim.Rprop(w, etas=etas)
        with pytest.raises(ValueError, match="^Invalid etas"):
            ft.Rprop(w, etas=etas)
    with pytest.raises(ValueError, match="Invalid learning rate"):
        torch.optim.Rprop(w, lr=-1.0)
    with pytest.raises(ValueError, match="^Invalid lr"):
        ft.Rprop(w, lr=-1.0)
    torch.optim.Rprop(w, step_sizes=(1e-6, float("inf")))
    with pytest.raises(ValueError, match=r"^Invalid step_sizes\[1\]"):
        ft.Rprop(w, step_sizes=(1e-6, float("inf")))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_every_path_matches_torch(dtype):
    """torch.optim.Rprop's for-loop against fastadam.torch.Rprop, fastadam.Rprop and
    fastadam.rprop_ (step sizes started at lr), 100 steps: the same values (Rprop's
    arithmetic is exact but for the step size's product)."""
    hyper = dict(lr=0.05, etas=(0.3, 1.5), step_sizes=(1e-3, 0.2))
    grads = _grads(_params(dtype), 100)
    want = _params(dtype)
    opt_t = torch.optim.Rprop(want, foreach=False, **hyper)
    _run(opt_t, want, grads)
    drop_in = _params(dtype)
    _run(ft.Rprop(drop_in, **hyper), drop_in, grads)
    arrays = [p.numpy().copy() for p in _params(dtype)]
    opt = fastadam.Rprop(arrays, **hyper)
    for gs in grads:
        opt.step([g.numpy() for g in gs])
    functional = [p.numpy().copy() for p in _params(dtype)]
    states = [(np.zeros_like(p), np.full_like(p, 0.05)) for p in functional]
    for gs in grads:
        for p, g, (prev, size) in zip(functional, gs, states):
            fastadam.rprop_(p, g.numpy(), prev, size, **hyper)
    for i, w in enumerate(want):
        w = w.numpy()
        assert_close(drop_in[i].numpy(), w, f"fastadam.torch param {i}")
        assert_close(arrays[i], w, f"fastadam.Rprop param {i}")
        assert_close(functional[i], w, f"fastadam.rprop_ param {i}")
        assert_close(states[i][1], opt_t.state[want[i]]["step_size"].numpy(), "step_size")


def test_state_dict_moves_both_ways():
    """A torch.optim.Rprop checkpoint resumes in fastadam.torch.Rprop and back, continuing
    the same trajectory; the state is step, prev and step_size, as torch's."""
    hyper = dict(lr=0.02, etas=(0.4, 1.3), step_sizes=(1e-4, 0.5))
    grads = _grads(_params(torch.float64), 30)
    ref = _params(torch.float64)
    _run(torch.optim.Rprop(ref, foreach=False, **hyper), ref, grads)

    a = _params(torch.float64)
    opt_a = torch.optim.Rprop(a, foreach=False, **hyper)
    _run(opt_a, a, grads[:10])
    b = [p.detach().clone() for p in a]
    opt_b = ft.Rprop(b, **hyper)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))
    _run(opt_b, b, grads[10:20])
    sd = opt_b.state_dict()
    assert all(set(st) == {"step", "prev", "step_size"} and float(st["step"]) == 20
               for st in sd["state"].values())
    assert sd["param_groups"][0].keys() == opt_a.state_dict()["param_groups"][0].keys()
    c = [p.detach().clone() for p in b]
    opt_c = torch.optim.Rprop(c, foreach=False, **hyper)
    opt_c.load_state_dict(copy.deepcopy(sd))
    _run(opt_c, c, grads[20:])
    for x, y in zip(c, ref):
        assert_close(x.numpy(), y.numpy())
