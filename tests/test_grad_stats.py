"""grad_stats: the gradient policy's pre-pass alone, whose results add up over ranks that
each own a part of the params (simulated here by two optimizers in one process)."""

import numpy as np
import pytest

import fastadam

NAMES = ["Adam", "AdamW", "SGD", "RMSprop", "Adagrad", "Lion"]


def parts(seed, sizes=(17, 1, 40)):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(n) for n in sizes]


@pytest.mark.parametrize("name", NAMES)
def test_summed_stats_clip_as_one_optimizer(name):
    cls = getattr(fastadam, name)
    whole = parts(0)
    mine, theirs = [p.copy() for p in whole[:2]], [p.copy() for p in whole[2:]]
    one = cls(whole, max_grad_norm=0.5, nonfinite="skip")
    a = cls(mine, max_grad_norm=0.5, nonfinite="skip")
    b = cls(theirs, max_grad_norm=0.5, nonfinite="skip")
    for seed in range(1, 6):
        g = [3 * x for x in parts(seed)]
        total = a.grad_stats(g[:2]) + b.grad_stats(g[2:])
        assert total.dtype == np.float64 and total.shape == (2,)
        np.testing.assert_allclose(total[0], sum(float((x * x).sum()) for x in g),
                                   rtol=1e-13)
        assert one.step(g) and a.step(g[:2], grad_stats=total)
        assert b.step(g[2:], grad_stats=total)
        assert a.grad_norm == b.grad_norm
        np.testing.assert_allclose(a.grad_norm, one.grad_norm, rtol=1e-13)
    for x, y in zip(whole, mine + theirs):
        np.testing.assert_allclose(y, x, rtol=1e-12, atol=1e-14)


def test_a_nan_on_one_rank_skips_every_rank():
    mine, theirs = parts(0)[:2], parts(0)[2:]
    a = fastadam.Adam(mine, nonfinite="skip")
    b = fastadam.Adam(theirs, nonfinite="skip")
    before = [p.copy() for p in mine + theirs]
    ga, gb = parts(1)[:2], parts(1)[2:]
    gb[0][3] = np.nan
    sa, sb = a.grad_stats(ga), b.grad_stats(gb)
    assert sa[1] == 0 and sb[1] == 1 and np.isnan(sb[0])
    total = sa + sb
    assert not a.step(ga, grad_stats=total) and not b.step(gb, grad_stats=total)
    assert all(np.array_equal(x, y, equal_nan=True) for x, y in zip(before, mine + theirs))
    assert a.step_count == 0 and b.step_count == 0
    raising = fastadam.Adam(mine, nonfinite="raise")
    with pytest.raises(FloatingPointError, match="combined grad_stats"):
        raising.step(ga, grad_stats=total)
    assert all(np.array_equal(x, y) for x, y in zip(before, mine))


def test_stats_with_none_grads_and_dict_params():
    ps = {"w": np.ones(5), "b": np.ones(3)}
    opt = fastadam.SGD(ps, lr=0.1, max_grad_norm=1.0)
    s = opt.grad_stats({"w": np.full(5, 2.0), "b": None})
    np.testing.assert_array_equal(s, [20.0, 0.0])
    with pytest.raises(ValueError, match="Invalid grads"):
        opt.grad_stats({"w": np.ones(5)})


@pytest.mark.parametrize("bad, exc", [([1.0], ValueError), ([-1.0, 0.0], ValueError),
                                      ([1.0, np.nan], ValueError), ("x", TypeError),
                                      (np.zeros((2, 2)), ValueError)])
def test_bad_grad_stats_are_refused_before_writing(bad, exc):
    p = np.ones(4)
    opt = fastadam.Adam([p], max_grad_norm=1.0)
    with pytest.raises(exc, match="grad_stats"):
        opt.step([np.ones(4)], grad_stats=bad)
    assert np.array_equal(p, np.ones(4)) and opt.step_count == 0
