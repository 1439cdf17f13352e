"""What each optimizer's rule has of its own, beyond what the registry-driven tests check
from its row of tests/optimizers.py (the kernel against fastadam.reference over every option
set, size, SIMD path and thread count, the defaults, the NumPy class, resume, bad input,
state_dict corruption, fuzzing, parity with torch.optim and checkpoints moving both ways):
branches and edge values pinned element by element, options only a constructor reads, the
per-tensor scalar states' rounding and refusals, where fastadam.torch and torch.optim part
ways, and Lion, which torch.optim has no class for, against a torch for-loop of its rule.
"""

import copy

import numpy as np
import pytest

import fastadam
import optimizers as registry
from conftest import DTYPES, assert_close, rand, torch_keys
from fastadam import reference

# (Not importorskip at the top: the NumPy tests run where torch is not installed; each torch
# test asks for it, and skips as "could not import 'torch'" without it.)
try:
    import torch

    import fastadam.torch as ft
except ImportError:
    torch = ft = None

TORCH_DTYPES = ("float32", "float64")


def needs_torch():
    pytest.importorskip("torch")


def _params(dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=dtype) for s in ((7, 5), (65,), (1,))]


def _grads(params, steps, seed=1, zeros=0.0):
    """``steps`` lists of grads like ``params``; a share ``zeros`` of the elements 0."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        gs = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]
        for g in gs if zeros else ():
            g[torch.rand(g.shape, generator=gen) < zeros] = 0.0
        out.append(gs)
    return out


def _run(opt, params, grads):
    for gs in grads:
        for p, g in zip(params, gs):
            p.grad = g
        opt.step()


# ---------------------------------------------------------------------------- Adagrad

def test_adagrad_lr_decay_uses_the_step():
    p, g, s = np.ones(3), np.full(3, 2.0), np.zeros(3)
    fastadam.adagrad_(p, g, s, step=5, lr=1.0, lr_decay=0.25)
    # clr = 1 / (1 + 4*0.25) = 0.5; sum = 4; p = 1 - 0.5*2/(2 + 1e-10)
    np.testing.assert_allclose(p, 1 - 0.5 * 2 / (2 + 1e-10), rtol=0, atol=0)
    assert s.tolist() == [4.0, 4.0, 4.0]


@pytest.mark.parametrize("value", [0.0, 0.1, 2.5])
def test_adagrad_numpy_class_fills_sum_with_initial_accumulator_value(value):
    opt = fastadam.Adagrad({"w": np.ones(4, np.float32)}, initial_accumulator_value=value)
    assert opt.state["w"]["sum"].dtype == np.float32
    assert opt.state["w"]["sum"].tolist() == [np.float32(value)] * 4
    p, s = np.ones(4, np.float32), np.full(4, value, np.float32)
    g = np.linspace(-1, 1, 4).astype(np.float32)
    opt.step({"w": g})
    reference.adagrad_(p, g, s, step=1)
    assert opt.state["w"]["sum"].tobytes() == s.tobytes()


ADAGRAD_HYPER = dict(lr=5e-2, lr_decay=0.02, weight_decay=0.1, initial_accumulator_value=0.3)


@pytest.mark.parametrize("fused", [None, True])
def test_adagrad_state_exists_from_construction_as_torch(fused):
    needs_torch()
    a, b = _params(torch.float32), _params(torch.float32)
    sa = torch.optim.Adagrad(a, **ADAGRAD_HYPER, fused=fused).state_dict()
    sb = ft.Adagrad(b, **ADAGRAD_HYPER, fused=fused).state_dict()
    assert sa["param_groups"] == [torch_keys(g) for g in sb["param_groups"]]
    assert list(sa["param_groups"][0]) == list(torch_keys(sb["param_groups"][0]))
    for i in range(3):
        assert set(sa["state"][i]) == set(sb["state"][i]) == {"step", "sum"}
        assert sb["state"][i]["step"].dtype == sa["state"][i]["step"].dtype
        assert float(sb["state"][i]["step"]) == 0.0
        assert torch.equal(sa["state"][i]["sum"], sb["state"][i]["sum"])


@pytest.mark.parametrize("dtype", TORCH_DTYPES)
def test_adagrad_checkpoint_before_any_step_continues_in_torch(dtype):
    """fastadam.torch.Adagrad's state_dict before its first step (the state exists from
    construction, as torch's) loads into torch.optim.Adagrad, which then runs as it would
    have from the start."""
    needs_torch()
    dtype = getattr(torch, dtype)
    grads = _grads(_params(dtype), 21)
    ref = _params(dtype)
    _run(torch.optim.Adagrad(ref, **ADAGRAD_HYPER, foreach=False), ref, grads)
    fresh = _params(dtype)
    opt = torch.optim.Adagrad(fresh, foreach=False)
    opt.load_state_dict(copy.deepcopy(ft.Adagrad(_params(dtype), **ADAGRAD_HYPER).state_dict()))
    _run(opt, fresh, grads)
    for x, y in zip(fresh, ref):
        assert_close(x.numpy(), y.numpy(), "param from a fresh checkpoint")


def test_adagrad_group_initial_accumulator_value_as_torch():
    needs_torch()
    sums = []
    for cls in (torch.optim.Adagrad, ft.Adagrad):
        a, b, c = torch.zeros(2), torch.zeros(2), torch.zeros(2)
        opt = cls([{"params": [a]}, {"params": [b], "initial_accumulator_value": 0.3}],
                  initial_accumulator_value=0.1)
        opt.add_param_group({"params": [c], "initial_accumulator_value": 0.7})
        for p in (a, b, c):
            p.grad = torch.ones(2)
        opt.step()
        sums.append([opt.state[p]["sum"].tolist() for p in (a, b, c)])
    assert sums[1] == sums[0]
    assert [s[0] for s in sums[0]] == pytest.approx([1.1, 1.1, 1.1])   # the constructor's


# ---------------------------------------------------------------------------- Adamax

@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_adamax_maximum_propagates_nan_from_either_side(dtype):
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


def test_adamax_weight_one_lerp_gives_the_gradient_exactly():
    """beta1 = 0: exp_avg becomes the gradient itself (the lerp from the far end)."""
    p, m, u = np.ones(5), np.full(5, 7.0), np.zeros(5)
    g = np.array([0.3, -1e-30, 1e30, 0.1, -2.0])
    fastadam.adamax_(p, g, m, u, step=3, betas=(0.0, 0.9))
    assert m.tobytes() == g.tobytes()


# ---------------------------------------------------------------------------- Adadelta

def test_adadelta_rho_closed_range():
    """rho's range is [0, 1] (torch.optim allows 1: the averages stay put)."""
    p, g, sq, acc = (np.full(3, 0.5) for _ in range(4))
    fastadam.adadelta_(p, g, sq, acc, rho=1.0)
    assert sq.tolist() == [0.5] * 3 and acc.tolist() == [0.5] * 3
    for bad in (1.0 + 2.0**-52, 2.0):
        before = p.tobytes()
        with pytest.raises(ValueError, match=r"^Invalid rho: .*\[0, 1\]"):
            fastadam.adadelta_(p, g, sq, acc, rho=bad)
        assert p.tobytes() == before


# ---------------------------------------------------------------------------- RAdam

def _rho_t(beta2, t):
    rho_inf = 2 / (1 - beta2) - 1
    return rho_inf - 2 * t * beta2 ** t / (1 - beta2 ** t)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_radam_first_steps_are_unrectified_then_rectified(dtype):
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


@pytest.mark.parametrize("dtype", TORCH_DTYPES)
def test_radam_every_step_of_the_switch_matches_torch(dtype):
    """Step by step across the rho_t = 5 switch: fastadam.torch.RAdam against
    torch.optim.RAdam's for-loop after each of the first 10 steps."""
    needs_torch()
    dtype = getattr(torch, dtype)
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


# ---------------------------------------------------------------------------- Rprop

@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_rprop_sign_flips_element_by_element(dtype):
    """Same sign: the step size grows by etaplus and p moves against g; a flip: it shrinks
    by etaminus, p stays, prev becomes 0; a zero product: the size stays; a NaN gradient
    element (torch's sign(NaN) = 0) leaves its size and param and is remembered in prev."""
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
    assert size[5] == c and p[5] == one and np.isnan(prev[5])
    q, r = p.copy(), size.copy()            # a NaN prev: likewise the next step
    fastadam.rprop_(p, np.ones(6, dtype), prev, size, etas=(0.5, 2.0),
                    step_sizes=(0.01, 0.15))
    assert size[5] == r[5] and p[5] == q[5] - r[5]


def test_rprop_clamp_order_and_nan_step_size():
    """np.clip / torch.clamp: max with step_sizes[0] first, then min with step_sizes[1]
    (lower > upper: every size becomes the upper); a NaN step size stays NaN."""
    p, g = np.zeros(3), np.array([1.0, 1.0, 1.0])
    prev = np.array([1.0, 0.0, 1.0])
    size = np.array([1e-9, 1.0, np.nan])
    fastadam.rprop_(p, g, prev, size, step_sizes=(0.5, 0.02))
    assert size[:2].tolist() == [0.02, 0.02] and np.isnan(size[2])


def test_rprop_bad_etas_message_says_the_rule():
    p, g, prev, size = (np.ones(4, np.float32) for _ in range(4))
    for etas in [(0.5, 1.0), (1.0, 1.2), (0.0, 2.0), (1.5, 0.5)]:
        with pytest.raises(ValueError, match=r"^Invalid etas: .*0 < etaminus < 1 < etaplus"):
            fastadam.rprop_(p, g, prev, size, etas=etas)
    assert p.tobytes() == np.ones(4, np.float32).tobytes()


@pytest.mark.parametrize("dtype", TORCH_DTYPES)
def test_rprop_every_path_matches_torch_with_zero_grads(dtype):
    """torch.optim.Rprop's for-loop against fastadam.torch.Rprop, fastadam.Rprop and
    fastadam.rprop_ (step sizes started at lr), 100 steps of grads a fifth of whose
    elements are 0 (the sign rule's third branch): the same values (Rprop's arithmetic is
    exact but for the step size's product)."""
    needs_torch()
    dtype = getattr(torch, dtype)
    hyper = dict(lr=0.05, etas=(0.3, 1.5), step_sizes=(1e-3, 0.2))
    grads = _grads(_params(dtype), 100, zeros=0.2)
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


# ----------------------------------------------------- per-tensor scalar states: NAdam, ASGD

def test_nadam_mu_product_float32_rounds_every_step():
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


def test_nadam_mu_product_that_zeroes_a_denominator_is_refused():
    """A mu_product with ``1 - mu_product*mu == 0`` (the bias correction's denominator at
    this step) is refused, and nothing is written."""
    p, g, m, v = (np.full(5, 0.5) for _ in range(4))
    mu_product = np.array(1 / 0.9 / (1.0 - 0.5 * 0.96 ** 4e-3))
    before = [a.tobytes() for a in (p, g, m, v, mu_product)]
    with pytest.raises(ValueError, match="^Invalid mu_product"):
        fastadam.nadam_(p, g, m, v, mu_product, step=1)
    assert [a.tobytes() for a in (p, g, m, v, mu_product)] == before


@pytest.mark.parametrize("info", [i for i in registry.OPTIMIZERS if i.scalar_names],
                         ids=lambda i: i.name)
def test_skipped_or_refused_step_leaves_the_scalar_states(info):
    """A step that nonfinite="skip" skips, or that is refused, advances no scalar state;
    the next applied step advances every param's alike."""
    opt = info.cls([np.ones(3), np.ones(2)], nonfinite="skip")
    opt.step([np.ones(3), np.ones(2)])

    def scalars():
        return [[opt.state[i][n].tobytes() for n in info.scalar_names] for i in range(2)]

    after_one = scalars()
    assert opt.step([np.array([1.0, np.nan, 1.0]), np.ones(2)]) is False
    assert scalars() == after_one
    with pytest.raises(ValueError):
        opt.step([np.ones(3), np.ones(3)])              # a grad of the wrong shape
    assert scalars() == after_one
    opt.step([np.ones(3), np.ones(2)])
    now = scalars()
    assert now[0] == now[1] != after_one[0]


def test_asgd_ax_is_param_until_t0_then_averages():
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
def test_asgd_mu_one_copies_the_param_into_ax(simd_path, dtype):
    # with mu == 1, ax = param exactly, whatever ax held (ax + (param - ax)*1 is not always
    # param: the branch is per call, as torch's)
    rng = np.random.default_rng(3)
    p, g = rand(rng, 1003, dtype), rand(rng, 1003, dtype)
    ax = rand(rng, 1003, dtype) * 1e3
    fastadam.asgd_(p, g, ax, np.array(0.1, np.float32), np.array(1.0, np.float32), step=1)
    assert ax.tobytes() == p.tobytes()


def test_asgd_lambd_that_makes_no_real_power_is_refused():
    p, g, ax = (np.full(4, 0.5) for _ in range(3))
    eta, mu = np.array(0.01), np.array(1.0)
    with pytest.raises(ValueError, match="^Invalid lambd"):
        fastadam.asgd_(p, g, ax, eta, mu, step=5, lambd=-100.0)
    assert float(eta) == 0.01 and (p == 0.5).all()


# torch.optim.ASGD computes each new eta and mu in float32 (torch.as_tensor of a Python
# float) and copies it into the state, even where its load_state_dict made that state
# float64 (a float64 param's); fastadam computes them in the state's dtype, as
# fastadam.reference does. So with float64 params the two agree to float64's accuracy only
# while eta and mu are float32, as torch.optim makes them (the registry's checkpoint round
# trip takes float32 params for ASGD).
ASGD_HYPER = dict(lr=0.05, lambd=1e-2, alpha=0.5, t0=5.0, foreach=False)


def _asgd_float64_run():
    """Float64 params and 12 steps of grads, the second param lagging (no grad every
    third step: its own step, eta and mu)."""
    grads = _grads(_params(torch.float64), 12)
    for t, gs in enumerate(grads):
        if t % 3 == 2:
            gs[1] = None
    return _params(torch.float64), _params(torch.float64), grads


def test_asgd_float64_params_match_torch_without_a_checkpoint():
    needs_torch()
    ref, run, grads = _asgd_float64_run()
    ref_opt, opt = torch.optim.ASGD(ref, **ASGD_HYPER), ft.ASGD(run, **ASGD_HYPER)
    _run(ref_opt, ref, grads)
    _run(opt, run, grads)
    for p, q in zip(ref, run):
        assert_close(q.detach().numpy(), p.detach().numpy(), "param")
        for k in ("step", "eta", "mu"):
            sa, sb = ref_opt.state[p][k], opt.state[q][k]
            assert sa.dtype == sb.dtype == torch.float32 and torch.equal(sa, sb), k


def test_asgd_float64_checkpoint_round_trip_drifts_at_float32_rounding():
    """torch.optim -> fastadam.torch -> torch.optim checkpoints against torch.optim's own
    run through the same checkpoints: fastadam's eta is the float64 value, torch's its
    float32 rounding; the params agree to float32's accuracy, not float64's."""
    needs_torch()
    ref, run, grads = _asgd_float64_run()
    ref_opt, opt = torch.optim.ASGD(ref, **ASGD_HYPER), torch.optim.ASGD(run, **ASGD_HYPER)
    for segment, cls in enumerate((torch.optim.ASGD, ft.ASGD, torch.optim.ASGD)):
        if segment:
            sd, ref_sd = copy.deepcopy(opt.state_dict()), copy.deepcopy(ref_opt.state_dict())
            ref_opt, opt = torch.optim.ASGD(ref, **ASGD_HYPER), cls(run, **ASGD_HYPER)
            ref_opt.load_state_dict(ref_sd)
            opt.load_state_dict(sd)
        _run(ref_opt, ref, grads[4 * segment:4 * segment + 4])
        _run(opt, run, grads[4 * segment:4 * segment + 4])
        if cls is ft.ASGD:
            for p, q in zip(ref, run):
                step = float(opt.state[q]["step"])
                want = 0.05 / (1 + 1e-2 * 0.05 * step) ** 0.5       # torch.optim's formula
                theirs, ours = ref_opt.state[p]["eta"], opt.state[q]["eta"]
                assert theirs.dtype == ours.dtype == torch.float64
                assert float(ours) == want != float(theirs) == float(np.float32(want))
    drift = 0.0
    for p, q in zip(ref, run):
        a, b = p.detach().numpy(), q.detach().numpy()
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6 * np.abs(a).max())
        drift = max(drift, float(np.max(np.abs(b - a))) / float(np.abs(a).max()))
    assert drift > 1e-12


# ---------------------------------------------------------------------------- Lion
# Lion (Chen et al. 2023): ``c = b1*m + (1-b1)*g; p = p*(1 - lr*wd) - lr*sign(c);
# m = b2*m + (1-b2)*g``, sign(0) = 0. torch.optim has no Lion: the functional, NumPy-class
# and fastadam.torch paths against a torch for-loop of the rule, whose state_dict format
# (lion-pytorch's: ``exp_avg`` alone) moves both ways.

def test_lion_sign_of_zero_is_zero_and_nan_propagates():
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


def test_lion_missing_state():
    p, g = np.ones(4, np.float32), np.ones(4, np.float32)
    with pytest.raises(TypeError, match="^Invalid exp_avg"):
        fastadam.lion_(p, g, None)
    assert (p == 1).all()


if torch is not None:
    class TorchLion(torch.optim.Optimizer):
        """The rule as a torch for-loop, with lion-pytorch's groups and state
        (``exp_avg``)."""

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


LION_HYPER = [dict(lr=1e-2), dict(lr=1e-2, betas=(0.8, 0.9), weight_decay=0.1)]


@pytest.mark.parametrize("hyper", LION_HYPER, ids=["defaults", "wd"])
@pytest.mark.parametrize("dtype", TORCH_DTYPES)
def test_lion_matches_torch_for_loop_on_every_path(dtype, hyper):
    needs_torch()
    dtype = getattr(torch, dtype)
    grads = _grads(_params(dtype), 100)
    want = _params(dtype)
    _run(TorchLion(want, **hyper), want, grads)
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
        w = w.numpy()
        assert_close(drop_in[i].numpy(), w, f"fastadam.torch param {i}")
        assert_close(numpy_params[i], w, f"fastadam.Lion param {i}")
        assert_close(functional[i], w, f"fastadam.lion_ param {i}")


def test_lion_maximize_is_descent_on_the_negated_grad():
    needs_torch()
    a, b = _params(torch.float32), _params(torch.float32)
    grads = _grads(a, 10)
    _run(ft.Lion(a, lr=1e-2, maximize=True), a, grads)
    _run(ft.Lion(b, lr=1e-2), b, [[-g for g in gs] for gs in grads])
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_lion_state_dict_moves_both_ways():
    """A checkpoint of the torch for-loop (lion-pytorch's format) resumes in
    fastadam.torch.Lion and back, continuing the same trajectory."""
    needs_torch()
    grads = _grads(_params(torch.float64), 20)
    ref = _params(torch.float64)
    _run(TorchLion(ref, lr=1e-2, weight_decay=0.1), ref, grads)

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


@pytest.mark.parametrize("alpha", [7e8, -7e8, 1e308, -1e308])
def test_asgd_reference_eta_overflows_as_the_kernel(alpha):
    """eta = lr / (1 + lambd*lr*t)**alpha with an extreme alpha: the reference computes it
    in IEEE float64 as the kernel does (0 or inf), instead of raising as Python floats'
    ** and / would."""
    out = []
    for fn in (fastadam.asgd_, reference.asgd_):
        p, g, ax = np.ones(5), np.full(5, 0.5), np.zeros(5)
        eta, mu = np.array(0.01), np.array(1.0)
        fn(p, g, ax, eta, mu, step=3, alpha=alpha)
        out.append((p.tobytes(), ax.tobytes(), eta.tobytes(), mu.tobytes()))
    assert out[0] == out[1]
    assert float(np.frombuffer(out[0][2])[0]) in (0.0, np.inf)


@pytest.mark.parametrize("opts", [dict(), dict(weight_decay=0.1, maximize=True)],
                         ids=["defaults", "wd-maximize"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_asgd_streamed_ax_matches_reference_at_every_alignment(simd_path, dtype, opts):
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
