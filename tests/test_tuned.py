"""fastadam/_tuned.py (the benchmark's "tuned NumPy" baseline) computes the same steps as
fastadam.reference, for the configuration each function implements: SGD with momentum 0.9
after the first step, RMSprop with its defaults, Adam with its defaults, AdamW (Adam with
decoupled weight decay 1e-2). So the benchmark compares like with like."""

import numpy as np
import pytest

from fastadam import _tuned, reference
from conftest import DTYPES, rand

SIZES = (1, 7, 100, 1000, 4099)
STEPS = 6


def close(actual, expected, what):
    """rtol 1e-5 (float32) / 1e-12 (float64), plus a small atol for elements that pass near
    zero by cancellation (``p - u`` rounds at the ulp of its operands)."""
    assert actual.dtype == expected.dtype, what
    assert actual.shape == expected.shape, what
    if actual.dtype == np.float32:
        rtol, atol = 1e-5, 1e-6 * max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    else:
        rtol, atol = 1e-12, 1e-14
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


def _states(rng, n, dtype, kinds):
    return [rand(rng, n, dtype, k) for k in kinds]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_sgd_momentum(dtype, n):
    rng = np.random.default_rng(n)
    p, buf = _states(rng, n, dtype, ("normal", "normal"))
    p_ref, buf_ref = p.copy(), buf.copy()
    tmp = np.empty_like(p)
    for step in range(2, 2 + STEPS):                   # after the first step
        g = rand(rng, n, dtype)
        _tuned.sgd_momentum_(p, g, buf, tmp, lr=1e-3, momentum=0.9)
        reference.sgd_(p_ref, g, momentum_buffer=buf_ref, lr=1e-3, momentum=0.9, step=step)
        close(buf, buf_ref, f"momentum_buffer, step {step}")
        close(p, p_ref, f"param, step {step}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_sgd_momentum_after_a_reference_first_step(dtype, n):
    """The first step (buf = g) is the reference's; every later one is the tuned code's."""
    rng = np.random.default_rng(100 + n)
    p = rand(rng, n, dtype)
    buf = np.zeros_like(p)
    g = rand(rng, n, dtype)
    reference.sgd_(p, g, momentum_buffer=buf, lr=1e-3, momentum=0.9, step=1)
    p_ref, buf_ref = p.copy(), buf.copy()
    tmp = np.empty_like(p)
    for step in range(2, 2 + STEPS):
        g = rand(rng, n, dtype)
        _tuned.sgd_momentum_(p, g, buf, tmp, lr=1e-3, momentum=0.9)
        reference.sgd_(p_ref, g, momentum_buffer=buf_ref, lr=1e-3, momentum=0.9, step=step)
    close(buf, buf_ref, "momentum_buffer")
    close(p, p_ref, "param")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_rmsprop_defaults(dtype, n):
    rng = np.random.default_rng(200 + n)
    p, sq = _states(rng, n, dtype, ("normal", "pos"))
    p_ref, sq_ref = p.copy(), sq.copy()
    tmp = np.empty_like(p)
    for step in range(1, 1 + STEPS):
        g = rand(rng, n, dtype)
        _tuned.rmsprop_(p, g, sq, tmp)
        reference.rmsprop_(p_ref, g, sq_ref)
        close(sq, sq_ref, f"square_avg, step {step}")
        close(p, p_ref, f"param, step {step}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("kind", ("adam", "adamw"))
@pytest.mark.parametrize("start", ("zeros", "random"))
def test_adam_and_adamw_defaults(dtype, n, kind, start):
    """Adam at its defaults; AdamW = weight_decay 1e-2 decoupled, against reference.adamw_
    (and reference.adam_ with decoupled_weight_decay=True). From zero moments (a fresh
    optimizer, steps 1, 2, ...) and from random ones at later steps (the benchmark's step=10)."""
    rng = np.random.default_rng(300 + n)
    p = rand(rng, n, dtype)
    if start == "zeros":
        m, v = np.zeros_like(p), np.zeros_like(p)
        first = 1
    else:
        m, v = _states(rng, n, dtype, ("normal", "pos"))
        first = 10
    wd = {"weight_decay": 1e-2, "decoupled_weight_decay": True} if kind == "adamw" else {}
    ref = reference.adamw_ if kind == "adamw" else reference.adam_
    p_ref, m_ref, v_ref = p.copy(), m.copy(), v.copy()
    p_alt, m_alt, v_alt = p.copy(), m.copy(), v.copy()
    tmp = np.empty_like(p)
    for step in range(first, first + STEPS):
        g = rand(rng, n, dtype)
        _tuned.adam_(p, g, m, v, tmp, step=step, **wd)
        ref(p_ref, g, m_ref, v_ref, step=step)
        reference.adam_(p_alt, g, m_alt, v_alt, step=step, **wd)
        close(m, m_ref, f"exp_avg, step {step}")
        close(v, v_ref, f"exp_avg_sq, step {step}")
        close(p, p_ref, f"param, step {step}")
        close(p, p_alt, f"param vs reference.adam_(**{wd}), step {step}")


def test_adamw_really_decays():
    """Guard against a tuned AdamW that ignores weight decay and still "matches": with a
    zero gradient from zero moments, only the decoupled decay moves the params."""
    p = np.linspace(-1, 1, 9)
    p0 = p.copy()
    g = np.zeros_like(p)
    m, v, tmp = np.zeros_like(p), np.zeros_like(p), np.empty_like(p)
    _tuned.adam_(p, g, m, v, tmp, step=1, weight_decay=1e-2, decoupled_weight_decay=True)
    np.testing.assert_allclose(p, p0 * (1 - 1e-3 * 1e-2), rtol=1e-15)


def test_tmp_is_only_scratch():
    """``tmp``'s contents on entry do not matter (it is overwritten before it is read)."""
    rng = np.random.default_rng(7)
    n = 33
    for fill in (0.0, np.nan, 1e30):
        p, g, m, v = (rand(rng, n, np.float64, k) for k in ("normal", "normal", "normal", "pos"))
        outs = []
        for tmp in (np.empty_like(p), np.full_like(p, fill)):
            q, mm, vv = p.copy(), m.copy(), v.copy()
            _tuned.adam_(q, g, mm, vv, tmp, step=3)
            q2, mm2 = p.copy(), m.copy()
            _tuned.sgd_momentum_(q2, g, mm2, tmp, lr=1e-3, momentum=0.9)
            q3, vv3 = p.copy(), v.copy()
            _tuned.rmsprop_(q3, g, vv3, tmp)
            outs.append((q, mm, vv, q2, mm2, q3, vv3))
        for a, b in zip(*outs):
            np.testing.assert_array_equal(a, b)


LATER = ("lion", "adagrad", "adamax", "adadelta", "radam", "rprop", "nadam", "asgd")
POSITIVE = ("sum", "exp_avg_sq", "square_avg", "acc_delta", "exp_inf", "step_size")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("opt, extra", [(o, {}) for o in LATER] + [("asgd", {"t0": 3})])
def test_later_optimizers_match_the_reference(opt, extra, dtype, n):
    """Each later optimizer's tuned code, called as the benchmark calls it (the functional's
    arguments and its bench configuration), against the reference over 12 steps from step
    1 (RAdam's early unrectified steps, ASGD's averaging from t0 on with ``t0=3``)."""
    from fastadam import _registry, bench
    entry = _registry.by_name(opt)
    rng = np.random.default_rng(n)
    used = bench._used_states(opt)
    p = rand(rng, n, dtype)
    states = [rand(rng, n, dtype, "pos" if s.name in POSITIVE else "normal") for s in used]
    hyper = {**{h.name: h.default for h in entry.hyper}, **entry.bench, **extra}
    scalars = [np.array(hyper[c.init] if isinstance(c.init, str) else c.init, np.float32)
               for c in entry.scalars]
    mine = [p] + states + scalars
    theirs = [a.copy() for a in mine]
    scratch = (np.empty_like(p), np.full_like(p, np.nan))   # scratch contents do not matter
    fn = getattr(_tuned, f"{opt}_")
    for t in range(1, 13):
        g = rand(rng, n, dtype)
        kw = {**entry.bench, **extra, **({"step": t} if "step" in entry.bench else {})}
        fn(mine[0], g, *mine[1:], scratch=scratch, **kw)
        getattr(reference, f"{opt}_")(theirs[0], g, *theirs[1:], **kw)
        names = ["param"] + [s.name for s in used] + [c.name for c in entry.scalars]
        for name, a, b in zip(names, mine, theirs):
            close(np.asarray(a), np.asarray(b), f"{opt} {name}, step {t}")
