"""Lion (Chen et al. 2023): ``c = b1*m + (1-b1)*g; p = p*(1 - lr*wd) - lr*sign(c);
m = b2*m + (1-b2)*g``, sign(0) = 0. What is Lion's own: sign(0) and NaN, the defaults, and
the functional, NumPy-class and fastadam.torch paths against a torch for-loop of the rule
(torch.optim has no Lion), whose state_dict format (lion-pytorch's: ``exp_avg`` alone)
moves both ways. The kernel against fastadam.reference (the same bits) over every option
set, size, SIMD path and thread count, the NumPy class, resume, bad hyperparameters and
state_dict corruption are the registry's (tests/optimizers.py's Lion row)."""

import copy

import numpy as np
import pytest

import fastadam
from fastadam import reference
from conftest import assert_close


def test_sign_of_zero_is_zero_and_nan_propagates():
    p = np.array([1.0, -0.0, 2.0, 3.0, 4.0], np.float32)
    g = np.array([0.0, 0.0, 5.0, -5.0, np.nan], np.float32)
    m = np.zeros(5, np.float32)
    q, h = p.copy(), m.copy()
    fastadam.lion_(p, g, m, lr=0.5)
    with np.errstate(invalid="ignore"):
        reference.lion_(q, g, h, lr=0.5)
    assert p[0] == 1.0 and p[1] == 0.0 and np.signbit(p[1])     # c = 0: p unchanged
    assert p[2] == 1.5 and p[3] == 3.5 and np.isnan(p[4]) and np.isnan(m[4])
    assert p.tobytes() == q.tobytes() and m.tobytes() == h.tobytes()


def test_defaults_and_a_missing_state():
    p, g, m = (np.ones(4, np.float32) for _ in range(3))
    q, h = p.copy(), m.copy()
    fastadam.lion_(p, g, m)
    reference.lion_(q, g, h, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0)
    assert p.tobytes() == q.tobytes() and m.tobytes() == h.tobytes()
    opt = fastadam.Lion([np.ones(3)])
    assert {k: v for k, v in opt.param_groups[0].items() if k != "params"} == dict(
        lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, maximize=False, nonfinite="propagate",
        max_grad_norm=None)
    with pytest.raises(TypeError, match="^Invalid exp_avg"):
        fastadam.lion_(p, g, None)


# ------------------------------------------------------------------------- against torch

torch = pytest.importorskip("torch")
import fastadam.torch as ft  # noqa: E402


class TorchLion(torch.optim.Optimizer):
    """The rule as a torch for-loop, with lion-pytorch's groups and state (``exp_avg``)."""

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = -p.grad if group.get("maximize") else p.grad
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                m = state["exp_avg"]
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(torch.sign(m * beta1 + g * (1 - beta1)), alpha=-group["lr"])
                m.mul_(beta2).add_(g, alpha=1 - beta2)


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


HYPER = [dict(lr=1e-2), dict(lr=1e-2, betas=(0.8, 0.9), weight_decay=0.1)]


@pytest.mark.parametrize("hyper", HYPER, ids=["defaults", "wd"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_matches_torch_for_loop_on_every_path(dtype, hyper):
    grads = _grads(_params(dtype), 100)
    want = _params(dtype)
    _run(TorchLion(want, **hyper), want, grads)
    npdt = np.float32 if dtype == torch.float32 else np.float64

    drop_in = _params(dtype)                                    # fastadam.torch.Lion
    _run(ft.Lion(drop_in, **hyper), drop_in, grads)
    numpy_params = [p.numpy().copy() for p in _params(dtype)]   # fastadam.Lion
    opt = fastadam.Lion(numpy_params, **hyper)
    for gs in grads:
        opt.step([g.numpy() for g in gs])
    functional = [p.numpy().copy() for p in _params(dtype)]     # fastadam.lion_
    states = [np.zeros_like(p) for p in functional]
    for gs in grads:
        for p, g, m in zip(functional, gs, states):
            fastadam.lion_(p, g.numpy(), m, **hyper)
    for i, w in enumerate(want):
        w = w.numpy().astype(npdt)
        assert_close(drop_in[i].detach().numpy(), w, f"fastadam.torch param {i}")
        assert_close(numpy_params[i], w, f"fastadam.Lion param {i}")
        assert_close(functional[i], w, f"fastadam.lion_ param {i}")


def test_maximize_is_descent_on_the_negated_grad():
    a, b = _params(torch.float32), _params(torch.float32)
    grads = _grads(a, 10)
    _run(ft.Lion(a, lr=1e-2, maximize=True), a, grads)
    _run(ft.Lion(b, lr=1e-2), b, [[-g for g in gs] for gs in grads])
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_state_dict_moves_both_ways():
    """A checkpoint of the torch for-loop (lion-pytorch's format) resumes in
    fastadam.torch.Lion and back, continuing the same trajectory."""
    grads = _grads(_params(torch.float64), 20)
    ref = _params(torch.float64)
    ref_opt = TorchLion(ref, lr=1e-2, weight_decay=0.1)
    _run(ref_opt, ref, grads)

    a = _params(torch.float64)
    opt_a = TorchLion(a, lr=1e-2, weight_decay=0.1)
    _run(opt_a, a, grads[:7])
    b = [p.detach().clone() for p in a]
    opt_b = ft.Lion(b, lr=1e-2, weight_decay=0.1)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))
    _run(opt_b, b, grads[7:14])
    sd = opt_b.state_dict()
    assert all(set(st) == {"exp_avg"} for st in sd["state"].values())     # no 'step'
    assert sd["param_groups"][0]["maximize"] is False
    c = [p.detach().clone() for p in b]
    opt_c = TorchLion(c, lr=1e-2, weight_decay=0.1)
    opt_c.load_state_dict(copy.deepcopy(sd))
    _run(opt_c, c, grads[14:])
    for x, y in zip(c, ref):
        assert_close(x.numpy(), y.numpy())
