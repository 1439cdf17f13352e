"""fastadam.torch: the torch.optim drop-ins.

Parity with torch.optim over hundreds of steps of real training (a small conv net, cross
entropy on random data), both dtypes; param groups, closures, params without a gradient,
state_dict moves in both directions, zero-copy updates, and bad input that must raise and
leave everything as it was.
The last section runs over the optimizer registry (tests/optimizers.py): every option set,
several seeds, sizes 0, 1, the SIMD tails and 2-d, float32 and float64 in one group, param
groups for every optimizer, through fastadam.torch and through the NumPy classes; and
checkpoints moving torch.optim -> fastadam.torch -> torch.optim for every option set.

Tolerances come from measurements (see PARITY_TOL): each model trains on its own, so the
last-bit differences between torch's and fastadam's arithmetic (torch's CPU ``add`` with
``alpha`` uses a fused multiply-add, its Adam divides by ``sqrt(bc2)`` where fastadam
multiplies by ``1/sqrt(bc2)``, its ``lerp`` rounds differently) feed back through the
gradients, as they would between any two implementations.
"""

import copy
import inspect
import io
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fastadam  # noqa: E402
import fastadam.torch as ft  # noqa: E402
from conftest import STORAGE_KEYS, torch_keys  # noqa: E402
import optimizers as registry  # noqa: E402
from torch import nn  # noqa: E402

# Largest |fastadam - torch| over every param and state tensor after STEPS steps, relative
# to that tensor's largest magnitude. Measured on torch 2.13.0 over CASES with seeds 0-4:
# float32 at most 1.1e-5 (1.7e-6 with seed 0, the one tested), float64 at most 4.6e-15;
# the other tests here (groups, skipped grads, closures, state moves) stay below 1.5e-6 and
# 5.3e-15. The tolerances leave a margin of 4x (float32; 30x for seed 0) and 20x (float64).
PARITY_TOL = {torch.float32: 5e-5, torch.float64: 1e-13}
STEPS = 150
DTYPES = (torch.float32, torch.float64)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_model(dtype, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.Tanh(), nn.Flatten(), nn.Linear(144, 16),
                         nn.Tanh(), nn.Linear(16, 3)).to(dtype)


def batches(dtype, seed, n):
    gen = torch.Generator().manual_seed(1000 + seed)
    for _ in range(n):
        yield (torch.randn(8, 2, 8, 8, generator=gen, dtype=dtype),
               torch.randint(0, 3, (8,), generator=gen))


def train_step(model, opt, x, y, sign=1.0, drop=()):
    opt.zero_grad()
    loss = sign * nn.functional.cross_entropy(model(x), y)
    loss.backward()
    params = list(model.parameters())
    for i in drop:                  # these params get no gradient this step
        params[i].grad = None
    opt.step()
    return loss.item()


def deviation(model_a, opt_a, model_b, opt_b):
    """max |a - b| / max |a| over params and every state tensor; asserts equal steps."""
    worst = 0.0
    for pa, pb in zip(model_a.parameters(), model_b.parameters()):
        sa, sb = opt_a.state[pa], opt_b.state[pb]
        assert set(sa) == set(sb)
        pairs = [(pa.detach(), pb.detach())]
        for k in sa:
            if k == "step":
                assert sb[k].dtype == sa[k].dtype and sb[k].shape == sa[k].shape == ()
                assert float(sb[k]) == float(sa[k])
            else:
                pairs.append((sa[k], sb[k]))
        for a, b in pairs:
            assert a.dtype == b.dtype and a.shape == b.shape
            scale = a.abs().max().item()
            if scale:
                worst = max(worst, (a - b).abs().max().item() / scale)
    return worst


def run_pair(name, kw, dtype, seed=0, steps=STEPS, sign=1.0, drop=lambda t: ()):
    """Train two copies of one model, with torch.optim.<name> and fastadam.torch.<name>."""
    a = make_model(dtype, seed)
    b = copy.deepcopy(a)
    opt_a = getattr(torch.optim, name)(a.parameters(), **kw)
    opt_b = getattr(ft, name)(b.parameters(), **kw)
    for t, (x, y) in enumerate(batches(dtype, seed, steps)):
        la = train_step(a, opt_a, x, y, sign, drop(t))
        lb = train_step(b, opt_b, x, y, sign, drop(t))
        assert np.isfinite(la) and np.isfinite(lb)
    return a, opt_a, b, opt_b


# The training option sets (tests/optimizers.py: TRAINING_CASES; bench/parity_report.py
# reports over the same list).
CASES = registry.TRAINING_CASES


def _case_id(case):
    name, kw, _ = case
    return name + "-" + ("-".join(f"{k}={v}" for k, v in kw.items()) or "defaults")


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_matches_torch_optim_over_training(case, dtype):
    name, kw, sign = case
    a, opt_a, b, opt_b = run_pair(name, kw, dtype, sign=sign)
    dev = deviation(a, opt_a, b, opt_b)
    assert dev <= PARITY_TOL[dtype], f"{name} {kw}: deviation {dev:.2e}"
    # the same optimizer, not a look-alike: same defaults, options and state layout
    assert opt_b.defaults == {**opt_a.defaults, **STORAGE_KEYS}
    assert_state_dict_equal(opt_b.state_dict(), opt_a.state_dict(), exact=False)


@pytest.mark.parametrize("info", registry.TORCH_OPTIMIZERS, ids=lambda i: i.name)
def test_defaults_equal_torch(info):
    p = [nn.Parameter(torch.zeros(3))]
    ours, theirs = getattr(ft, info.torch_name)(p), getattr(torch.optim, info.torch_name)(p)
    assert isinstance(ours, torch.optim.Optimizer)
    assert ours.defaults == {**theirs.defaults, **STORAGE_KEYS}
    # the same group keys in the same order: the state_dict format (the storage keys last
    # before 'params')
    theirs_items = list(theirs.state_dict()["param_groups"][0].items())
    assert list(ours.state_dict()["param_groups"][0].items()) == \
        theirs_items[:-1] + list(STORAGE_KEYS.items()) + theirs_items[-1:]


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("name, kw", [("Adam", {}), ("AdamW", dict(amsgrad=True)),
                                      ("SGD", dict(lr=0.01, momentum=0.9)),
                                      ("RMSprop", dict(lr=1e-3, momentum=0.5, centered=True))])
def test_params_without_grad_are_skipped(name, kw, dtype):
    """Params whose .grad is None are left alone and their step counts lag (so one group
    steps params at different counts): as torch.optim."""
    # params 1 and 3 (conv bias, first linear bias) miss every third step, param 5 the first 10
    drop = lambda t: ((1, 3) if t % 3 == 0 else ()) + ((5,) if t < 10 else ())  # noqa: E731
    a, opt_a, b, opt_b = run_pair(name, kw, dtype, steps=120, drop=drop)
    assert deviation(a, opt_a, b, opt_b) <= PARITY_TOL[dtype]
    if name != "SGD":
        steps = [float(opt_b.state[p]["step"]) for p in b.parameters()]
        assert steps == [120, 80, 120, 80, 120, 110]


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_param_groups_with_their_own_options(dtype):
    def groups(m):
        return [{"params": m[0].parameters(), "lr": 3e-3},
                {"params": m[3].parameters(), "weight_decay": 0.1, "amsgrad": True},
                {"params": m[5].parameters(), "lr": 1e-4, "betas": (0.8, 0.99)}]

    a = make_model(dtype)
    b = copy.deepcopy(a)
    opt_a, opt_b = torch.optim.AdamW(groups(a), lr=1e-3), ft.AdamW(groups(b), lr=1e-3)
    for t, (x, y) in enumerate(batches(dtype, 0, STEPS)):
        if t == 50:                         # options may change between steps
            for o in (opt_a, opt_b):
                o.param_groups[2]["lr"] = 2e-3
        train_step(a, opt_a, x, y)
        train_step(b, opt_b, x, y)
    assert deviation(a, opt_a, b, opt_b) <= PARITY_TOL[dtype]
    assert [g["lr"] for g in opt_b.param_groups] == [3e-3, 1e-3, 2e-3]


def test_add_param_group_later():
    a = make_model(torch.float64)
    b = copy.deepcopy(a)
    opts = []
    for m, cls in ((a, torch.optim.Adam), (b, ft.Adam)):
        opts.append(cls(m[0].parameters(), lr=2e-3))
    for t, (x, y) in enumerate(batches(torch.float64, 3, 100)):
        if t == 30:
            for m, o in zip((a, b), opts):
                o.add_param_group({"params": list(m[3].parameters()) + list(m[5].parameters()),
                                   "lr": 1e-3})
        for m, o in zip((a, b), opts):
            train_step(m, o, x, y)
    assert deviation(a, opts[0], b, opts[1]) <= PARITY_TOL[torch.float64]
    assert float(opts[1].state[b[0].weight]["step"]) == 100
    assert float(opts[1].state[b[5].bias]["step"]) == 70


@pytest.mark.parametrize("name", ["Adam", "SGD", "RMSprop"])
def test_closure_runs_with_grad_and_returns_its_loss(name):
    a = make_model(torch.float64)
    b = copy.deepcopy(a)
    kw = dict(lr=0.01, momentum=0.9) if name == "SGD" else {}
    opt_a, opt_b = getattr(torch.optim, name)(a.parameters(), **kw), \
        getattr(ft, name)(b.parameters(), **kw)
    for x, y in batches(torch.float64, 2, 100):
        results = []
        for m, o in ((a, opt_a), (b, opt_b)):
            def closure(m=m, o=o):
                assert torch.is_grad_enabled()
                o.zero_grad()
                loss = nn.functional.cross_entropy(m(x), y)
                loss.backward()
                return loss
            with torch.no_grad():               # the closure still gets gradients
                results.append(o.step(closure))
        assert torch.is_tensor(results[1])
        assert abs(results[0].item() - results[1].item()) <= 1e-12 * abs(results[0].item())
    assert deviation(a, opt_a, b, opt_b) <= PARITY_TOL[torch.float64]
    assert opt_b.step() is None                # no closure: returns None (grads still set)


def test_works_with_lr_schedulers_and_grad_clipping():
    a = make_model(torch.float64)
    b = copy.deepcopy(a)
    opts, scheds = [], []
    for m, cls in ((a, torch.optim.AdamW), (b, ft.AdamW)):
        o = cls(m.parameters(), lr=3e-3)
        opts.append(o)
        scheds.append(torch.optim.lr_scheduler.OneCycleLR(o, max_lr=1e-2, total_steps=100))
    for x, y in batches(torch.float64, 8, 100):
        for m, o, sch in zip((a, b), opts, scheds):
            o.zero_grad()
            nn.functional.cross_entropy(m(x), y).backward()
            nn.utils.clip_grad_norm_(m.parameters(), 0.5)
            o.step()
            sch.step()
    assert opts[1].param_groups[0]["lr"] == opts[0].param_groups[0]["lr"]
    assert deviation(a, opts[0], b, opts[1]) <= PARITY_TOL[torch.float64]


def test_zero_grad_then_step_changes_nothing():
    m = make_model(torch.float32)
    opt = ft.Adam(m.parameters())
    x, y = next(batches(torch.float32, 0, 1))
    train_step(m, opt, x, y)
    before = copy.deepcopy((list(m.parameters()), opt.state_dict()))
    opt.zero_grad()
    assert all(p.grad is None for p in m.parameters())
    opt.step()
    after = (list(m.parameters()), opt.state_dict())
    for p, q in zip(before[0], after[0]):
        assert torch.equal(p, q)
    assert_state_dict_equal(before[1], after[1])


# ------------------------------------------------------------------- state_dict interop

def assert_state_dict_equal(sa, sb, exact=True):
    assert [torch_keys(g) for g in sa["param_groups"]] == \
        [torch_keys(g) for g in sb["param_groups"]]
    assert sa["state"].keys() == sb["state"].keys()
    for k in sa["state"]:
        ta, tb = sa["state"][k], sb["state"][k]
        assert list(ta) == list(tb), (k, list(ta), list(tb))    # same names, same order
        for name in ta:
            assert type(ta[name]) is type(tb[name])
            assert ta[name].dtype == tb[name].dtype and ta[name].shape == tb[name].shape
            if exact:
                assert torch.equal(ta[name], tb[name]), (k, name)


def checkpoint(opt):
    """What a real run does: torch.save then torch.load (weights_only, torch's default)."""
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    return torch.load(buf)


MOVES = [("Adam", dict(lr=3e-3)), ("AdamW", dict(amsgrad=True, lr=3e-3)),
         ("SGD", dict(lr=0.01, momentum=0.9, nesterov=True)),
         ("RMSprop", dict(lr=1e-3, momentum=0.5, centered=True))]


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("name, kw", MOVES, ids=[m[0] for m in MOVES])
def test_state_dict_moves_both_ways(name, kw, dtype):
    """torch.optim -> fastadam.torch -> torch.optim continues the same run as one that
    stayed with torch.optim throughout."""
    data = list(batches(dtype, 5, 150))
    ref = make_model(dtype, 5)
    model = copy.deepcopy(ref)
    opt_ref = getattr(torch.optim, name)(ref.parameters(), **kw)
    opt = getattr(torch.optim, name)(model.parameters(), **kw)
    for x, y in data[:50]:
        train_step(ref, opt_ref, x, y)
        train_step(model, opt, x, y)
    assert deviation(ref, opt_ref, model, opt) == 0.0

    # torch.optim -> fastadam.torch: the state dict loads unchanged and round-trips
    sd = checkpoint(opt)
    opt = getattr(ft, name)(model.parameters(), **kw)
    opt.load_state_dict(sd)
    assert_state_dict_equal(opt.state_dict(), sd)
    for x, y in data[50:100]:
        train_step(ref, opt_ref, x, y)
        train_step(model, opt, x, y)
    dev1 = deviation(ref, opt_ref, model, opt)
    assert dev1 <= PARITY_TOL[dtype]
    assert_state_dict_equal(opt.state_dict(), opt_ref.state_dict(), exact=False)

    # fastadam.torch -> torch.optim
    sd = checkpoint(opt)
    opt = getattr(torch.optim, name)(model.parameters(), **kw)
    opt.load_state_dict(sd)
    for x, y in data[100:]:
        train_step(ref, opt_ref, x, y)
        train_step(model, opt, x, y)
    assert deviation(ref, opt_ref, model, opt) <= PARITY_TOL[dtype]


def test_state_dict_from_fused_and_foreach_torch_loads():
    for flavour in ({"fused": True}, {"foreach": True}):
        a = make_model(torch.float32)
        b = copy.deepcopy(a)
        opt_a = torch.optim.Adam(a.parameters(), **flavour)
        data = list(batches(torch.float32, 6, 60))
        for x, y in data[:20]:
            train_step(a, opt_a, x, y)
        opt_b = ft.Adam(b.parameters())
        opt_b.load_state_dict(checkpoint(opt_a))
        b.load_state_dict(a.state_dict())
        assert opt_b.param_groups[0][next(iter(flavour))] is True   # kept for the way back
        for x, y in data[20:]:
            train_step(a, opt_a, x, y)
            train_step(b, opt_b, x, y)
        assert deviation(a, opt_a, b, opt_b) <= PARITY_TOL[torch.float32]


def test_resume_within_fastadam_is_bit_for_bit():
    data = list(batches(torch.float32, 7, 80))
    a = make_model(torch.float32, 7)
    b = copy.deepcopy(a)
    opt_a = ft.AdamW(a.parameters(), amsgrad=True)
    opt_b = ft.AdamW(b.parameters(), amsgrad=True)
    for x, y in data[:40]:
        train_step(a, opt_a, x, y)
        train_step(b, opt_b, x, y)
    sd = copy.deepcopy(opt_b.state_dict())
    opt_b = ft.AdamW(b.parameters())
    opt_b.load_state_dict(sd)
    for x, y in data[40:]:
        train_step(a, opt_a, x, y)
        train_step(b, opt_b, x, y)
    assert deviation(a, opt_a, b, opt_b) == 0.0


def test_load_state_dict_checks_before_it_keeps_anything():
    m = make_model(torch.float32)
    opt = ft.Adam(m.parameters())
    x, y = next(batches(torch.float32, 0, 1))
    train_step(m, opt, x, y)
    good = copy.deepcopy(opt.state_dict())
    bad = copy.deepcopy(good)
    bad["state"][3]["exp_avg"] = torch.zeros(5)
    with pytest.raises(ValueError, match=r"Invalid state 'exp_avg' of param_groups\[0\]"
                                         r"\['params'\]\[3\] shape"):
        opt.load_state_dict(bad)
    assert_state_dict_equal(opt.state_dict(), good)
    bad = copy.deepcopy(good)
    bad["state"][0]["step"] = torch.tensor(-1.0)
    with pytest.raises(ValueError, match="Invalid state 'step'"):
        opt.load_state_dict(bad)
    assert_state_dict_equal(opt.state_dict(), good)
    train_step(m, opt, x, y)                   # still usable
    assert float(opt.state[m[0].weight]["step"]) == 2


@pytest.mark.parametrize("name", [info.torch_name for info in registry.TORCH_OPTIMIZERS
                                  if info.scalar_names])
def test_load_state_dict_checks_the_scalar_states(name):
    # NAdam's mu_product, ASGD's eta and mu: a number or a one-element tensor, checked at
    # load as the step count is, and nothing kept from a refused state dict.
    m = make_model(torch.float32)
    opt = getattr(ft, name)(m.parameters())
    x, y = next(batches(torch.float32, 0, 1))
    train_step(m, opt, x, y)
    good = copy.deepcopy(opt.state_dict())
    scalar = next(k for k in good["state"][0] if k in ("mu_product", "eta", "mu"))
    for value in ("a string", torch.zeros(3), None):
        bad = copy.deepcopy(good)
        bad["state"][0][scalar] = value
        with pytest.raises(ValueError, match=rf"Invalid state '{scalar}' of param_groups"):
            opt.load_state_dict(bad)
        assert_state_dict_equal(opt.state_dict(), good)
    train_step(m, opt, x, y)                   # still usable


# ------------------------------------------------------------------------- zero copy

def test_updates_in_place_through_zero_copy_views():
    m = make_model(torch.float32)
    opt = ft.Adam(m.parameters())
    params = list(m.parameters())
    ptrs = [p.data_ptr() for p in params]
    x, y = next(batches(torch.float32, 0, 1))
    train_step(m, opt, x, y)
    entry = opt._entries[0]
    for p, view, sv in zip(params, entry.views, entry.state_views):
        assert view.ctypes.data == p.data_ptr()                 # the kernel's memory is p's
        assert sv[0].ctypes.data == opt.state[p]["exp_avg"].data_ptr()
        assert sv[1].ctypes.data == opt.state[p]["exp_avg_sq"].data_ptr()
    state_ptrs = [(opt.state[p]["exp_avg"].data_ptr(), opt.state[p]["exp_avg_sq"].data_ptr())
                  for p in params]
    versions = [p._version for p in params]
    old = [p.detach().clone() for p in params]
    for x, y in batches(torch.float32, 1, 5):
        train_step(m, opt, x, y)
    assert opt._entries[0] is entry                             # validated once, reused
    assert [p.data_ptr() for p in params] == ptrs
    assert [(opt.state[p]["exp_avg"].data_ptr(), opt.state[p]["exp_avg_sq"].data_ptr())
            for p in params] == state_ptrs
    assert all(not torch.equal(p, q) for p, q in zip(params, old))
    # autograd hears of the in-place update, as after torch.optim's step
    assert all(p._version > v for p, v in zip(params, versions))


def test_inplace_update_is_seen_by_autograd():
    p = nn.Parameter(torch.ones(3))
    opt = ft.SGD([p], lr=0.1)
    p.grad = torch.ones(3)
    y = (p * p).sum()                    # saves p for backward
    opt.step()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward()


def test_rebuilds_when_a_param_is_replaced():
    p = nn.Parameter(torch.zeros(4))
    opt = ft.SGD([p], lr=1.0)
    p.grad = torch.ones(4)
    opt.step()
    p.data = torch.full((4,), 5.0)       # new memory: the cached view must not be used
    opt.step()
    assert torch.equal(p.detach(), torch.full((4,), 4.0))


def test_step_hooks_run():
    p = nn.Parameter(torch.zeros(2))
    opt = ft.RMSprop([p])
    calls = []
    opt.register_step_pre_hook(lambda o, a, k: calls.append("pre"))
    opt.register_step_post_hook(lambda o, a, k: calls.append("post"))
    p.grad = torch.ones(2)
    opt.step()
    assert calls == ["pre", "post"]


# ------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("make, exc, match", [
    (lambda: torch.zeros(3, dtype=torch.int64), TypeError,
     r"Invalid param_groups\[0\]\['params'\]\[1\] dtype: expected torch.float32 or "
     r"torch.float64 or torch.bfloat16 or torch.float16, got torch.int64"),
    (lambda: torch.zeros(3, dtype=torch.complex64), TypeError, "got torch.complex64"),
    (lambda: torch.zeros(3, device="meta"), ValueError,
     r"\['params'\]\[1\]: on device meta; fastadam.torch steps CPU tensors only"),
    (lambda: torch.zeros(4, 3).t(), ValueError, r"\['params'\]\[1\]: not contiguous"),
    (lambda: torch.zeros(3).to_sparse(), ValueError, "layout torch.sparse_coo"),
])
def test_bad_params_are_rejected_when_built(make, exc, match):
    with pytest.raises(exc, match=match):
        ft.Adam([torch.zeros(2), make()])


def test_bad_param_group_added_later_is_not_kept():
    opt = ft.SGD([torch.zeros(2)])
    with pytest.raises(TypeError, match=r"param_groups\[1\]\['params'\]\[0\] dtype"):
        opt.add_param_group({"params": [torch.zeros(2, dtype=torch.int32)]})
    with pytest.raises(ValueError, match="Invalid lr"):
        opt.add_param_group({"params": [torch.zeros(2)], "lr": -1.0})
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize("cls, kw, exc, match", [
    (ft.Adam, dict(lr=-1.0), ValueError, "Invalid lr"),
    (ft.Adam, dict(betas=(0.9, 1.0)), ValueError, r"Invalid betas\[1\]"),
    (ft.Adam, dict(eps=0.0), ValueError, "Invalid eps"),
    (ft.AdamW, dict(weight_decay=-0.1), ValueError, "Invalid weight_decay"),
    (ft.SGD, dict(nesterov=True), ValueError, "Invalid nesterov"),
    (ft.RMSprop, dict(alpha=-0.5), ValueError, "Invalid alpha"),
    (ft.Adam, dict(capturable=True), ValueError, r"Invalid capturable=True in param_groups\[0\]"),
    (ft.Adam, dict(differentiable=True), ValueError, "Invalid differentiable=True"),
    (ft.SGD, dict(differentiable=True), ValueError, "Invalid differentiable=True"),
    (ft.RMSprop, dict(capturable=True), ValueError, "Invalid capturable=True"),
    (ft.Adam, dict(fused=True, foreach=True), ValueError, "cannot be True together"),
    (ft.Adam, dict(fused="yes"), TypeError, "Invalid fused='yes'"),
])
def test_bad_options_are_rejected(cls, kw, exc, match):
    with pytest.raises(exc, match=match):
        cls([torch.zeros(3)], **kw)


@pytest.mark.parametrize("info", registry.TORCH_OPTIMIZERS, ids=lambda i: i.name)
def test_registry_capturable_and_differentiable_refused(info):
    """Whichever of the two options the torch.optim class has, its drop-in refuses True."""
    cls = getattr(ft, info.torch_name)
    flags = [f for f in ("capturable", "differentiable")
             if f in inspect.signature(getattr(torch.optim, info.torch_name)).parameters]
    assert "differentiable" in flags
    for flag in flags:
        with pytest.raises(ValueError, match=rf"^Invalid {flag}=True"):
            cls([torch.zeros(3)], **{flag: True})


def test_fused_and_foreach_are_accepted():
    for kw in (dict(fused=True), dict(foreach=True), dict(fused=False, foreach=False)):
        p = nn.Parameter(torch.ones(3))
        opt = ft.Adam([p], **kw)
        p.grad = torch.ones(3)
        opt.step()
        assert torch.allclose(p.detach(), torch.full((3,), 1 - 1e-3))


def _trained():
    m = make_model(torch.float32)
    opt = ft.Adam([{"params": m[0].parameters()},
                   {"params": list(m[3].parameters()) + list(m[5].parameters()),
                    "lr": 1e-2}])
    x, y = next(batches(torch.float32, 0, 1))
    train_step(m, opt, x, y)
    opt.zero_grad()
    nn.functional.cross_entropy(m(x), y).backward()
    return m, opt, list(m.parameters())


def snapshot(opt, params):
    return ([p.detach().clone() for p in params],
            [{k: v.clone() for k, v in opt.state[p].items()} for p in params])


def assert_unchanged(snap, opt, params):
    for p, q, st in zip(params, snap[0], snap[1]):
        assert torch.equal(p.detach(), q)
        assert opt.state[p].keys() == st.keys()
        for k, v in st.items():
            assert torch.equal(opt.state[p][k], v), k


@pytest.mark.parametrize("spoil, exc, match", [
    (lambda ps, opt: setattr(ps[4], "grad", torch.zeros(16, 3).t()), ValueError,
     r"Invalid grad of param_groups\[1\]\['params'\]\[2\]: not contiguous"),
    (lambda ps, opt: setattr(ps[3], "grad", torch.zeros(16).to_sparse()), ValueError,
     r"Invalid grad of param_groups\[1\]\['params'\]\[1\]: layout torch.sparse_coo; sparse"),
    # (a float16 param takes a float32 grad, not its float32 states)
    (lambda ps, opt: setattr(ps[5], "data", ps[5].data.half()), TypeError,
     r"Invalid state 'exp_avg' of param_groups\[1\]\['params'\]\[3\] dtype: a "
     r"torch.float16 param takes torch.float16 states, got torch.float32"),
    (lambda ps, opt: setattr(ps[2], "data", ps[2].data.t()), ValueError,
     r"param_groups\[1\]\['params'\]\[0\]: not contiguous"),
    (lambda ps, opt: opt.param_groups[1].__setitem__("lr", float("nan")), ValueError,
     "Invalid lr"),
    (lambda ps, opt: opt.param_groups[1].__setitem__("betas", (0.9, 1.5)), ValueError,
     r"Invalid betas\[1\]"),
    (lambda ps, opt: opt.param_groups[1].__setitem__("amsgrad", True), ValueError,
     "'max_exp_avg_sq' is missing"),
    (lambda ps, opt: opt.param_groups[1].__setitem__("capturable", True), ValueError,
     r"Invalid capturable=True in param_groups\[1\]"),
    (lambda ps, opt: opt.state[ps[4]]["step"].fill_(2.5), ValueError,
     r"Invalid state 'step' of param_groups\[1\]\['params'\]\[2\]: 2.5"),
    (lambda ps, opt: opt.state[ps[4]].__setitem__("exp_avg", torch.zeros(3, 17)),
     ValueError, r"Invalid state 'exp_avg' of param_groups\[1\]\['params'\]\[2\] shape"),
    (lambda ps, opt: opt.state[ps[4]].__setitem__("exp_avg_sq", torch.zeros(3, 16).double()),
     TypeError, r"Invalid state 'exp_avg_sq' of param_groups\[1\]\['params'\]\[2\] dtype"),
    # a grad that is part of a param of the other group
    (lambda ps, opt: setattr(ps[3], "grad", ps[0].detach().view(-1)[:16]), ValueError,
     r"Invalid grad of param_groups\[1\]\['params'\]\[1\]: it shares memory"),
])
def test_bad_step_raises_and_writes_nothing(spoil, exc, match):
    """Whatever is wrong in the second group, no param or state of either group changes."""
    m, opt, params = _trained()
    spoil(params, opt)
    snap = snapshot(opt, params)
    with pytest.raises(exc, match=match):
        opt.step()
    assert_unchanged(snap, opt, params)


def test_grad_sharing_a_params_memory_in_one_group():
    a, b = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(3))
    opt = ft.Adam([a, b])
    a.grad = torch.ones(3)
    b.grad = a.detach()
    with pytest.raises(ValueError, match=r"Invalid grads\[1\]: it shares memory"):
        opt.step()
    assert torch.equal(a.detach(), torch.ones(3)) and len(opt.state) == 0


def test_failed_first_step_leaves_no_state():
    a, b = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(4, 2))
    opt = ft.Adam([a, b])
    a.grad = torch.ones(3)
    b.grad = torch.ones(2, 4).t()
    with pytest.raises(ValueError, match="not contiguous"):
        opt.step()
    assert len(opt.state) == 0 and torch.equal(a.detach(), torch.ones(3))
    b.grad = torch.ones(4, 2)
    opt.step()
    assert float(opt.state[a]["step"]) == 1 and float(opt.state[b]["step"]) == 1


def test_duplicate_param_is_rejected():
    p = nn.Parameter(torch.ones(3))
    with pytest.warns(UserWarning, match="duplicate parameters"):
        opt = ft.SGD([p, p], lr=0.1)
    p.grad = torch.ones(3)
    with pytest.raises(ValueError, match="shares memory"):
        opt.step()
    assert torch.equal(p.detach(), torch.ones(3))


# ----------------------------------------------------------------- import and packaging

def _python(code):
    where = os.path.dirname(os.path.dirname(fastadam.__file__))
    env = dict(os.environ, PYTHONPATH=where + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=os.path.dirname(__file__),
                          capture_output=True, text=True, timeout=300)


def test_import_fastadam_does_not_import_torch():
    r = _python("import sys, fastadam; fastadam.Adam([__import__('numpy').zeros(2)]); "
                "assert 'torch' not in sys.modules, 'torch imported'; print('ok')")
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_import_without_torch_says_how_to_install():
    r = _python("import sys; sys.modules['torch'] = None\n"
                "try:\n    import fastadam.torch\n"
                "except ImportError as e:\n    print(e)\n")
    assert r.returncode == 0, r.stderr
    assert 'pip install "fastadam[torch]"' in r.stdout


def test_module_imports_the_real_torch():
    assert ft.torch is torch and ft.torch.__name__ == "torch"
    assert ft.__name__ == "fastadam.torch"


# ----------------------------------------------------------------- benchmark section

def test_bench_transformer_section(capsys, monkeypatch):
    from fastadam import bench
    assert sum(int(np.prod(s)) for s in bench.transformer_shapes(**bench.TRANSFORMER)) \
        == 24_833_280
    # the section's shape, on a small transformer (the real one is 25 M params)
    monkeypatch.setattr(bench, "TRANSFORMER", dict(layers=2, d=32, vocab=100, context=16))
    threads = torch.get_num_threads()
    try:
        bench.main(["--only", "transformer", "--quick", "--repeats", "1"])
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "transformer-shaped params: one Adam step over 28 float32 tensors (GPT-2-like: " \
           "2 layers, d=32, vocab 100), 0.0 M params" in out
    rows = {line[2:30].strip(): line for line in out.splitlines()
            if line.startswith("  ") and "GB/s" in line}
    for name in ("fastadam Adam.step (NumPy)", "fastadam.torch Adam",
                 "torch Adam(fused=True)", "torch Adam(foreach=True)", "torch Adam (for-loop)"):
        assert name in rows, out
        ms = float(rows[name][30:].split()[0])
        assert np.isfinite(ms) and ms > 0
    assert "optimizer" not in out and "per call" not in out      # only this section


# ------------------------------------------------------------ parity over the registry
# Every optimizer of tests/optimizers.py that torch.optim has (registry.TORCH_OPTIMIZERS;
# Lion's torch for-loop is tests/test_optimizer_rules.py's), every option set torch.optim
# has, several seeds:
# fastadam.torch.X and fastadam.X (the NumPy class) against torch.optim.X(foreach=False),
# stepping the same fixed gradients (no model: nothing feeds a difference back), on
# tensors of sizes 0, 1, the SIMD tails and 2-d, float32 and float64 mixed in one group.
# Compared after every few steps with conftest.assert_close (docs/contract.md#accuracy
# tolerances: float64 rtol 1e-12 / atol 1e-14, float32 rtol 1e-5 / atol 1e-6 of the
# tensor's largest magnitude).

from conftest import assert_close  # noqa: E402

PARITY_SHAPES = [(0,), (1,), (7,), (15,), (17,), (63,), (65,), (127,), (3, 5), (4, 16), ()]
PARITY_SEEDS = (0, 1, 2)
NUMPY_SEEDS = (0, 1)            # the NumPy classes step the same kernels: fewer seeds
PARITY_STEPS = 20
CHECK_EVERY = 10
_OPTION_CASES, _OPTION_IDS = registry.option_cases(torch_only=True)
# Largest relative difference seen per (optimizer, dtype), for the summary below.
WORST: dict = {}


def parity_tensors(seed, shapes=PARITY_SHAPES, steps=PARITY_STEPS):
    """Params (float32 and float64 alternating) and ``steps`` gradients per param."""
    gen = torch.Generator().manual_seed(seed)
    dtypes = [torch.float32 if i % 2 == 0 else torch.float64 for i in range(len(shapes))]
    if seed % 2:
        dtypes = dtypes[::-1]
    params = [torch.randn(s, generator=gen, dtype=d) for s, d in zip(shapes, dtypes)]
    grads = [[torch.randn(s, generator=gen, dtype=d) for s, d in zip(shapes, dtypes)]
             for _ in range(steps)]
    return params, grads


def _np(x):
    return x.detach().numpy() if torch.is_tensor(x) else np.asarray(x)


def assert_parity(info, pairs, where):
    """``pairs``: {(name, dtype): [(label, torch.optim's, fastadam's)]}. The tolerances of
    docs/contract.md#accuracy:
    float64 rtol 1e-12, atol 1e-14 (conftest.assert_close); float32 rtol 1e-5, atol 1e-6 of
    the largest magnitude of that state over every param of the dtype (the data's scale, as
    conftest's, taken over the whole param list: a 0-d or 1-element tensor whose value
    cancels to near zero, ``buf = momentum*buf + g/avg`` from -4 to 0.018, say, carries the
    absolute rounding of its operands, which its own magnitude cannot bound)."""
    for (name, dtype), rows in pairs.items():
        scale = max((float(np.max(np.abs(_np(a)))) for _, a, _ in rows if _np(a).size),
                    default=0.0)
        for label, a, b in rows:
            a, b = _np(a), _np(b)
            if a.dtype == np.float64:
                assert_close(b, a, f"{where}: {label}")
            else:
                assert b.dtype == a.dtype and b.shape == a.shape, label
                np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6 * scale,
                                           err_msg=f"{where}: {label}")
            if a.size and scale:
                dev = float(np.max(np.abs(b.astype(np.float64) - a))) / scale
                WORST[(info.name, str(a.dtype))] = max(WORST.get((info.name, str(a.dtype)),
                                                                 0.0), dev)


def expected_state_keys(info, hyper):
    return (["step"] if info.torch_has_step else []) + info.state_names(hyper)


def compare_torch_states(info, hypers, params_a, opt_a, params_b, opt_b, where):
    """Params and every state tensor of fastadam.torch (b) against torch.optim (a)."""
    pairs = {}
    for i, (pa, pb, h) in enumerate(zip(params_a, params_b, hypers)):
        pairs.setdefault(("param", pa.dtype), []).append((f"param {i}", pa, pb))
        sa, sb = opt_a.state[pa], opt_b.state[pb]
        assert sorted(sa) == sorted(sb) == sorted(expected_state_keys(info, h)), (i, list(sb))
        for k in sa:
            if k == "step" or k in info.scalar_names:
                assert_same_scalar(sb[k], sa[k], f"{where}: {k} of param {i}")
            else:
                pairs.setdefault((k, pa.dtype), []).append((f"{k} of param {i}", sa[k], sb[k]))
    assert_parity(info, pairs, where)


def assert_same_scalar(ours, theirs, where):
    """A step count or per-tensor scalar state: torch.optim's value, dtype and shape
    exactly (fastadam computes them as torch.optim does, rounded to their dtype)."""
    ours, theirs = _np(ours), _np(theirs)
    assert (ours.dtype, ours.shape) == (theirs.dtype, theirs.shape), where
    assert ours.tobytes() == theirs.tobytes(), (where, ours, theirs)


def run_torch_parity(info, groups, seed, steps=PARITY_STEPS, change=None):
    """torch.optim.X and fastadam.torch.X over ``groups``: [(hyper, param indices)].
    ``change(step, opt)`` may change the groups' options before a step."""
    params, grads = parity_tensors(seed, steps=steps)
    params_a = [p.clone() for p in params]
    params_b = [p.clone() for p in params]

    def spec(ps):
        return [{"params": [ps[j] for j in idx], **info.torch_kwargs(h), "foreach": False}
                for h, idx in groups]

    opt_a = getattr(torch.optim, info.torch_name)(spec(params_a))
    opt_b = getattr(ft, info.torch_name)(spec(params_b))
    hyper_of = {}
    for h, idx in groups:
        for j in idx:
            hyper_of[j] = h
    order = [j for _, idx in groups for j in idx]
    for t in range(steps):
        if change is not None:
            change(t, opt_a)
            change(t, opt_b)
        for ps in (params_a, params_b):
            for p, g in zip(ps, grads[t]):
                p.grad = g.clone()
        opt_a.step()
        opt_b.step()
        if (t + 1) % CHECK_EVERY == 0 or t + 1 == steps:
            compare_torch_states(info, [hyper_of[j] for j in order],
                                 [params_a[j] for j in order], opt_a,
                                 [params_b[j] for j in order], opt_b,
                                 f"{info.name} seed {seed} after {t + 1} steps")
    return opt_a, opt_b


@pytest.mark.parametrize("seed", PARITY_SEEDS)
@pytest.mark.parametrize("info, hyper", _OPTION_CASES, ids=_OPTION_IDS)
def test_registry_torch_parity(info, hyper, seed):
    run_torch_parity(info, [(hyper, list(range(len(PARITY_SHAPES))))], seed)


def _group_sets(info):
    """Three option sets of ``info`` that differ in options and scalars."""
    sets = info.torch_option_sets()
    return [sets[0], sets[len(sets) // 2], sets[-1]]


@pytest.mark.parametrize("seed", PARITY_SEEDS)
@pytest.mark.parametrize("info", registry.TORCH_OPTIMIZERS, ids=lambda i: i.name)
def test_registry_torch_parity_param_groups(info, seed):
    """Three param groups with their own options (float32 and float64 in each), one of
    them changed between steps."""
    n = len(PARITY_SHAPES)
    idx = [list(range(0, n, 3)), list(range(1, n, 3)), list(range(2, n, 3))]
    sets = _group_sets(info)
    assert len({registry.set_id(h) for h in sets}) == 3

    def change(t, opt):
        if t == PARITY_STEPS // 2:
            opt.param_groups[1]["lr"] *= 0.5
            opt.param_groups[2]["weight_decay"] = 0.05

    opt_a, opt_b = run_torch_parity(info, list(zip(sets, idx)), seed, change=change)
    assert [g["lr"] for g in opt_b.param_groups] == [g["lr"] for g in opt_a.param_groups]


@pytest.mark.parametrize("info", registry.TORCH_OPTIMIZERS, ids=lambda i: i.name)
def test_registry_torch_parity_many_steps(info):
    """The option set with every state, 200 steps: the differences stay at rounding level
    (the gradients do not depend on the params, so nothing amplifies them)."""
    run_torch_parity(info, [(info.rich(), list(range(len(PARITY_SHAPES))))], seed=5,
                     steps=200)


@pytest.mark.parametrize("seed", NUMPY_SEEDS)
@pytest.mark.parametrize("info, hyper", _OPTION_CASES, ids=_OPTION_IDS)
def test_registry_numpy_class_parity(info, hyper, seed):
    """fastadam.X (the NumPy class, through .numpy() arrays) against torch.optim.X."""
    params, grads = parity_tensors(seed)
    params_a = [p.clone() for p in params]
    opt_a = getattr(torch.optim, info.torch_name)(params_a, **info.torch_kwargs(hyper),
                                                   foreach=False)
    arrays = [p.numpy().copy() for p in params]
    opt_b = info.cls(arrays, **hyper)
    for t in range(PARITY_STEPS):
        for p, g in zip(params_a, grads[t]):
            p.grad = g.clone()
        opt_a.step()
        opt_b.step([g.numpy() for g in grads[t]])
        if (t + 1) % CHECK_EVERY:
            continue
        pairs = {}
        for i, (pa, b) in enumerate(zip(params_a, arrays)):
            pairs.setdefault(("param", pa.dtype), []).append((f"param {i}", pa, b))
            sa = opt_a.state[pa]
            assert sorted(k for k in sa if k != "step") == sorted(opt_b.state[i]) \
                == sorted(info.state_names(hyper))
            for k, arr in opt_b.state[i].items():
                if k in info.scalar_names:
                    assert_same_scalar(arr, sa[k], f"{info.name}: {k} of param {i}")
                else:
                    pairs.setdefault((k, pa.dtype), []).append((f"{k} of param {i}", sa[k],
                                                                arr))
            if info.torch_has_step:
                assert float(sa["step"]) == opt_b.step_count == t + 1
        assert_parity(info, pairs, f"{info.name} seed {seed} after {t + 1} steps")


# Checkpoints over the registry: torch.optim -> fastadam.torch -> torch.optim.
ROUND_TRIP_SHAPES = [(0,), (1,), (17,), (3, 5), ()]
ROUND_TRIP_K = 4        # steps per optimizer: RAdam rectifies from step 6, in the middle
LAGGING = 1             # this param gets no grad every third step: its own step count


def round_trip_tensors(info, seed):
    """Params of the row's ``torch_reload_dtypes`` (alternating) and 3*K steps of grads
    (None where the lagging param gets none)."""
    gen = torch.Generator().manual_seed(seed)
    dtypes = [getattr(torch, info.torch_reload_dtypes[i % len(info.torch_reload_dtypes)])
              for i in range(len(ROUND_TRIP_SHAPES))]
    params = [torch.randn(s, generator=gen, dtype=d) for s, d in zip(ROUND_TRIP_SHAPES, dtypes)]
    grads = [[None if i == LAGGING and t % 3 == 2 else torch.randn(p.shape, generator=gen,
                                                                     dtype=p.dtype)
              for i, p in enumerate(params)] for t in range(3 * ROUND_TRIP_K)]
    return params, grads


def step_with(opt, params, grads):
    for gs in grads:
        for p, g in zip(params, gs):
            p.grad = None if g is None else g.clone()
        opt.step()


def reloaded(cls, params, kw, opt):
    """A new ``cls`` over ``params`` from ``opt``'s checkpoint."""
    new = cls(params, **kw)
    new.load_state_dict(checkpoint(opt))
    return new


@pytest.mark.parametrize("info, hyper", _OPTION_CASES, ids=_OPTION_IDS)
def test_registry_checkpoint_round_trip(info, hyper):
    """torch.optim.X steps K times, its checkpoint (torch.save, torch.load) loads into
    fastadam.torch.X, which steps K more, and its checkpoint into torch.optim.X, which steps
    K more: the same run as torch.optim.X's taking the same checkpoints itself (its
    load_state_dict casts a per-tensor scalar state to its param's dtype, which changes a
    float64 param's run), to the accuracy tolerances, with the step counts and scalar
    states exactly; fastadam.torch's state_dict is torch.optim's, keys, order and format."""
    torch_cls, ours = getattr(torch.optim, info.torch_name), getattr(ft, info.torch_name)
    kw = dict(info.torch_kwargs(hyper), foreach=False)
    params, grads = round_trip_tensors(info, seed=3)
    hypers = [hyper] * len(params)
    ref, run = [p.clone() for p in params], [p.clone() for p in params]
    ref_opt, opt = torch_cls(ref, **kw), torch_cls(run, **kw)
    k = ROUND_TRIP_K
    for segment, cls in enumerate((torch_cls, ours, torch_cls)):
        if segment:
            ref_opt, opt = reloaded(torch_cls, ref, kw, ref_opt), reloaded(cls, run, kw, opt)
            if cls is ours:     # loaded as torch.optim loads it
                assert_state_dict_equal(opt.state_dict(), ref_opt.state_dict())
        step_with(ref_opt, ref, grads[segment * k:(segment + 1) * k])
        step_with(opt, run, grads[segment * k:(segment + 1) * k])
        compare_torch_states(info, hypers, ref, ref_opt, run, opt,
                             f"{info.name} after {(segment + 1) * k} steps ({cls.__module__})")
        assert_state_dict_equal(opt.state_dict(), ref_opt.state_dict(), exact=False)
    if info.torch_has_step:
        assert float(opt.state[run[LAGGING]]["step"]) < float(opt.state[run[0]]["step"])


@pytest.fixture(autouse=True, scope="module")
def parity_summary(request):
    """After the module: the largest difference the parity tests saw per optimizer and
    dtype (max |fastadam - torch.optim| over the largest magnitude of that state over the
    param list), on pytest's terminal."""
    yield
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if WORST and reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line("")
            reporter.write_line("registry parity: largest |fastadam - torch.optim| / scale:")
            for (name, dtype), dev in sorted(WORST.items()):
                reporter.write_line(f"  {name:8s} {dtype:8s} {dev:.2e}")
