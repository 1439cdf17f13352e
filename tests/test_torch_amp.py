"""torch.amp.GradScaler("cpu") with fastadam.torch: the optimizer declares
``_step_supports_amp_scaling``, so GradScaler makes only its inf check and fastadam
unscales inside its fused update; a step with an inf changes nothing."""

import pytest

torch = pytest.importorskip("torch")

import fastadam.torch as ft  # noqa: E402
from torch import nn  # noqa: E402

NAMES = ["Adam", "AdamW", "SGD", "Adagrad", "RMSprop", "NAdam", "Adamax", "RAdam"]


def model(dtype, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 2)).to(dtype)


def train(m, opt, scaler, dtype, steps=8, inf_at=None):
    g = torch.Generator().manual_seed(1)
    scales = []
    for t in range(steps):
        x = torch.randn(16, 6, generator=g, dtype=dtype)
        y = torch.randn(16, 2, generator=g, dtype=dtype)
        opt.zero_grad()
        scaler.scale(nn.functional.mse_loss(m(x), y)).backward()
        if t == inf_at:
            m[0].weight.grad[0, 0] = float("inf")
        scaler.step(opt)
        scaler.update()
        scales.append(float(scaler.get_scale()))
    return scales


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", NAMES)
def test_matches_torch_optim_under_grad_scaler(name, dtype):
    a, b = model(dtype), model(dtype)
    oa, ob = getattr(ft, name)(a.parameters()), getattr(torch.optim, name)(b.parameters())
    sa = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10, growth_interval=3)
    sb = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10, growth_interval=3)
    assert train(a, oa, sa, dtype, inf_at=4) == train(b, ob, sb, dtype, inf_at=4)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=tol, atol=tol)


def test_an_inf_step_changes_nothing_and_no_unscale_pass(monkeypatch):
    m = model(torch.float32)
    opt = ft.Adam(m.parameters())
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 8)
    train(m, opt, scaler, torch.float32, steps=2)
    calls = []
    real = torch._amp_foreach_non_finite_check_and_unscale_

    def counting(grads, found_inf, inv_scale):
        calls.append(float(inv_scale))
        return real(grads, found_inf, inv_scale)

    monkeypatch.setattr(torch, "_amp_foreach_non_finite_check_and_unscale_", counting)
    before = [p.detach().clone() for p in m.parameters()]
    x, y = torch.randn(4, 6), torch.randn(4, 2)
    opt.zero_grad()
    scaler.scale(nn.functional.mse_loss(m(x), y)).backward()
    scaled = [p.grad.clone() for p in m.parameters()]
    scaler.step(opt)
    # one call: GradScaler's own inf check, with an inv_scale of 1 (not an unscale pass)
    assert calls == [1.0]
    assert all(torch.equal(p.grad, g) for p, g in zip(m.parameters(), scaled))
    scaler.update()
    m[2].bias.grad[0] = float("nan")
    scaler.step(opt)
    scaler.update()
    assert float(scaler.get_scale()) == 2.0 ** 7           # backed off, as torch
    opt.zero_grad()
    # the NaN step wrote nothing: params as after the step before it
    after = [p.detach().clone() for p in m.parameters()]
    assert not all(torch.equal(x, y) for x, y in zip(before, after))   # the first applied
    step_states = [v.clone() for p in m.parameters() for v in opt.state[p].values()]
    m[0].weight.grad = torch.full_like(m[0].weight, float("inf"))
    for p in list(m.parameters())[1:]:
        p.grad = torch.zeros_like(p)
    opt.step(found_inf=torch.tensor(1.0), grad_scale=torch.tensor(4.0))
    assert all(torch.equal(x, p) for x, p in zip(after, m.parameters()))
    now = [v for p in m.parameters() for v in opt.state[p].values()]
    assert len(now) == len(step_states) and all(
        torch.equal(x, v) for x, v in zip(step_states, now))


def test_grad_scale_argument_divides_the_grads():
    a, b = model(torch.float64), model(torch.float64)
    oa, ob = ft.Adam(a.parameters()), ft.Adam(b.parameters())
    g = torch.Generator().manual_seed(3)
    for p, q in zip(a.parameters(), b.parameters()):
        p.grad = torch.randn(p.shape, generator=g, dtype=torch.float64)
        q.grad = p.grad * 4
    oa.step()
    ob.step(grad_scale=torch.tensor(4.0), found_inf=torch.tensor(0.0))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("bad, exc", [(0.0, ValueError), (-1.0, ValueError),
                                      (float("nan"), ValueError), ("x", ValueError)])
def test_bad_grad_scale_is_refused_before_writing(bad, exc):
    m = model(torch.float32)
    opt = ft.Adam(m.parameters())
    for p in m.parameters():
        p.grad = torch.ones_like(p)
    before = [p.detach().clone() for p in m.parameters()]
    with pytest.raises(exc, match="grad_scale"):
        opt.step(grad_scale=bad)
    assert all(torch.equal(x, p) for x, p in zip(before, m.parameters())) and not opt.state
