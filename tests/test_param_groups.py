"""Param groups, add_param_group and None grads in the NumPy classes (and the same run
through fastadam.torch), against torch.optim.

Every class of fastadam.optim is run with two groups of different hyperparameters, a param
whose grad is None at some steps (frozen for those steps, as torch leaves a param whose
``.grad`` is None), a hyperparameter changed between steps and a group added in the middle,
and compared with torch.optim's for-loop implementation doing the same (Lion, which torch
lacks: with fastadam.torch.Lion, whose groups are separate plans stepped from Python).
"""

import copy

import numpy as np
import pytest

import fastadam
from fastadam import optim

from conftest import assert_close

torch = pytest.importorskip("torch")
import fastadam.torch as fatorch  # noqa: E402

NAMES = [n for n in optim.__all__ if n != "Optimizer"]
STEPS = 10
SHAPES = [(3, 5), (7,), (2, 2)]      # group 0: the first two; group 1: the last
NONE_AT = {3: 1, 4: 1, 6: 2}         # step -> the param whose grad is None then
ADD_AT = 5                           # a third group joins before this step


def _torch_cls(name):
    return getattr(torch.optim, name) if hasattr(torch.optim, name) else getattr(fatorch, name)


def _extra(name):
    """One non-default option for group 0, where the optimizer has one to give."""
    defaults = getattr(fastadam, name)([np.zeros(1)]).defaults
    extra = {"weight_decay": 0.05} if "weight_decay" in defaults else {}
    return {**extra, "momentum": 0.9} if name == "SGD" else extra   # states in one group


def _torch_kwargs(name):
    cls = _torch_cls(name)
    return {"foreach": False} if "foreach" in cls.__init__.__code__.co_varnames else {}


def _run(name, clip=None, api="numpy"):
    """Run fastadam's NumPy class (api "numpy") or its fastadam.torch class ("torch") and
    torch's side by side; return both optimizers and the params (as arrays)."""
    rng = np.random.default_rng(7)
    start = [rng.standard_normal(s) for s in SHAPES]
    extra_start = rng.standard_normal((4,))
    grads = [[rng.standard_normal(s) for s in SHAPES + [(4,)]] for _ in range(STEPS)]
    lr = getattr(fastadam, name)([np.zeros(1)]).defaults["lr"]
    ts = [torch.tensor(x) for x in start]
    if api == "numpy":
        ps = [x.copy() for x in start]
        cls, kw = getattr(fastadam, name), {"max_grad_norm": clip}
    else:
        ps = [torch.tensor(x) for x in start]
        cls, kw = getattr(fatorch, name), {}
    ours = cls([{"params": ps[:2], "lr": lr * 0.5, **_extra(name)}, {"params": ps[2:]}], **kw)
    theirs = _torch_cls(name)([{"params": ts[:2], "lr": lr * 0.5, **_extra(name)},
                               {"params": ts[2:]}], **_torch_kwargs(name))
    for t in range(1, STEPS + 1):
        if t == ADD_AT:
            ps.append(extra_start.copy() if api == "numpy" else torch.tensor(extra_start))
            ts.append(torch.tensor(extra_start))
            ours.add_param_group({"params": [ps[-1]], "lr": lr * 2})
            theirs.add_param_group({"params": [ts[-1]], "lr": lr * 2})
        if t == ADD_AT + 2:     # a hyperparameter changed between steps
            ours.param_groups[1]["lr"] = lr * 0.25
            theirs.param_groups[1]["lr"] = lr * 0.25
        g = [x.copy() for x in grads[t - 1][:len(ps)]]
        if t in NONE_AT:
            g[NONE_AT[t]] = None
        for tp, x in zip(ts, g):
            tp.grad = None if x is None else torch.tensor(x)
        if clip is not None:
            torch.nn.utils.clip_grad_norm_([tp for tp in ts if tp.grad is not None], clip)
        if api == "numpy":
            assert ours.step(g) is True
        else:
            for p, x in zip(ps, g):
                p.grad = None if x is None else torch.tensor(x)
            ours.step()
        theirs.step()
    if api == "torch":
        ps = [p.detach().numpy() for p in ps]
    return ours, theirs, ps, ts


# (Lion through fastadam.torch would be compared with itself: torch.optim has no Lion)
@pytest.mark.parametrize("name, api", [(n, a) for n in NAMES for a in ("numpy", "torch")
                                       if hasattr(torch.optim, n) or a == "numpy"])
def test_groups_none_grads_and_added_group_match_torch(name, api):
    ours, theirs, ps, ts = _run(name, api=api)
    for i, (p, tp) in enumerate(zip(ps, ts)):
        assert_close(p, tp.detach().numpy(), f"param {i}")
    sd, tsd = ours.state_dict(), theirs.state_dict()
    assert [g["params"] for g in sd["param_groups"]] == \
        [g["params"] for g in tsd["param_groups"]] == [[0, 1], [2], [3]]
    for i in range(len(ps)):
        st, tst = sd["state"].get(i, {}), tsd["state"].get(i, {})
        if "step" in tst:
            assert int(st["step"]) == int(tst["step"]), f"param {i}'s step"
        for key, value in tst.items():
            if key != "step":
                mine = np.asarray(st[key])
                assert_close(mine, np.asarray(value.detach().numpy(), mine.dtype),
                             f"param {i}'s {key}")
    # param 1 had no grad at steps 3 and 4, param 2 at step 6, param 3 joined at step 5
    if api == "numpy" or "step" in tsd["state"][0]:
        assert [int(sd["state"][i]["step"]) for i in range(4)] == \
            [STEPS, STEPS - 2, STEPS - 1, STEPS - ADD_AT + 1]
    if api == "numpy":
        assert ours.step_count == STEPS


@pytest.mark.parametrize("name", ["SGD", "Adam", "NAdam", "ASGD"])
def test_clipping_covers_every_group(name):
    ours, theirs, ps, ts = _run(name, clip=0.5)
    for i, (p, tp) in enumerate(zip(ps, ts)):
        assert_close(p, tp.detach().numpy(), f"param {i}")


@pytest.mark.parametrize("name", NAMES)
def test_a_none_grad_leaves_its_param_and_state_bitwise(name):
    rng = np.random.default_rng(1)
    ps = [rng.standard_normal(9).astype(np.float32) for _ in range(3)]
    opt = getattr(fastadam, name)([{"params": ps[:2]}, {"params": ps[2:], "lr": 1e-3}])
    for _ in range(2):
        opt.step([rng.standard_normal(9).astype(np.float32) for _ in range(3)])
    before = copy.deepcopy(opt.state_dict())
    frozen = ps[1].copy()
    opt.step([np.ones(9, np.float32), None, np.ones(9, np.float32)])
    after = opt.state_dict()
    assert ps[1].tobytes() == frozen.tobytes()
    assert after["state"][1].keys() == before["state"][1].keys()
    for key, value in before["state"][1].items():
        assert np.asarray(after["state"][1][key]).tobytes() == np.asarray(value).tobytes(), key
    assert after["state"][0]["step"] == after["state"][2]["step"] == 3


def test_dict_params_in_groups_and_none_values():
    w, b = np.ones((2, 3)), np.zeros(3)
    opt = fastadam.Adam([{"params": {"w": w}, "lr": 0.1}, {"params": {"b": b}}], lr=1e-3)
    opt.step({"w": np.ones((2, 3)), "b": None})
    assert np.all(b == 0) and np.all(w < 1)
    assert opt.state_dict()["param_groups"][0]["params"] == ["w"]
    assert opt.state_dict()["state"]["b"]["step"] == 0
    with pytest.raises(ValueError, match="give None for a param without a gradient"):
        opt.step({"w": np.ones((2, 3))})


def test_every_grad_none_changes_nothing_and_counts_the_step():
    ps = [np.ones(4), np.ones(2)]
    opt = fastadam.NAdam(ps)
    before = copy.deepcopy(opt.state_dict())
    assert opt.step([None, None]) is True
    after = opt.state_dict()
    assert all(np.all(p == 1) for p in ps)
    for key in before["state"]:
        for name, value in before["state"][key].items():
            assert np.asarray(after["state"][key][name]).tobytes() == \
                np.asarray(value).tobytes()
    with pytest.raises(ValueError, match=r"^Invalid grads: expected 2 arrays"):
        opt.step([None])


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_with_groups_and_uneven_steps_resumes_bitwise(name):
    def make():
        rng = np.random.default_rng(3)
        ps = [rng.standard_normal(6) for _ in range(3)]
        return ps, getattr(fastadam, name)([{"params": ps[:1], "lr": 1e-3},
                                            {"params": ps[1:]}])

    rng = np.random.default_rng(4)
    grads = [[rng.standard_normal(6) for _ in range(3)] for _ in range(6)]
    for g in grads[1:3]:
        g[2] = None
    ps, opt = make()
    for g in grads:
        opt.step(g)
    qs, resumed = make()
    for g in grads[:3]:
        resumed.step(g)
    sd = copy.deepcopy(resumed.state_dict())
    qs2, fresh = make()
    for q, q_saved in zip(qs2, qs):
        q[...] = q_saved
    fresh.load_state_dict(sd)
    assert [st["step"] for st in fresh.state_dict()["state"].values()] == [3, 3, 1]
    for g in grads[3:]:
        fresh.step(g)
    for p, q in zip(ps, qs2):
        assert p.tobytes() == q.tobytes()


def test_load_state_dict_checks_the_groups():
    opt = fastadam.Adam([{"params": [np.ones(2)]}, {"params": [np.ones(3)], "lr": 0.5}])
    sd = opt.state_dict()
    one = copy.deepcopy(sd)
    one["param_groups"] = one["param_groups"][:1]
    with pytest.raises(ValueError, match=r"expected 2 groups"):
        opt.load_state_dict(one)
    swapped = copy.deepcopy(sd)
    swapped["param_groups"][0]["params"], swapped["param_groups"][1]["params"] = [1], [0]
    with pytest.raises(ValueError, match=r"\['param_groups'\]\[0\]\['params'\]"):
        opt.load_state_dict(swapped)
    bad = copy.deepcopy(sd)
    bad["param_groups"][1]["lr"] = -1.0
    with pytest.raises(ValueError, match=r"^param_groups\[1\]: Invalid lr"):
        opt.load_state_dict(bad)
    assert opt.param_groups[1]["lr"] == 0.5


# ---------------------------------------------------------------------------- bad input

def _unchanged(opt, ps, before):
    assert all(p.tobytes() == b for p, b in zip(ps, before))
    assert opt.state_dict()["state"][0]["step"] == 0


def test_a_bad_group_hyperparameter_is_named_and_nothing_is_written():
    ps = [np.ones(3), np.ones(2)]
    opt = fastadam.SGD([{"params": ps[:1]}, {"params": ps[1:]}], lr=0.1, momentum=0.9)
    before = [p.tobytes() for p in ps]
    opt.param_groups[1]["lr"] = -1.0
    with pytest.raises(ValueError, match=r"^param_groups\[1\]: Invalid lr"):
        opt.step([np.ones(3), np.ones(2)])
    _unchanged(opt, ps, before)
    with pytest.raises(ValueError, match=r"^param_groups\[1\]: Invalid lr"):
        fastadam.SGD([{"params": [np.ones(1)]}, {"params": [np.ones(1)], "lr": -1.0}])


def test_a_state_a_group_lacks_is_refused_before_anything_is_written():
    ps = [np.ones(3), np.ones(2)]
    opt = fastadam.SGD([{"params": ps[:1], "momentum": 0.9}, {"params": ps[1:]}], lr=0.1)
    assert "momentum_buffer" in opt.state[0] and "momentum_buffer" not in opt.state[1]
    before = [p.tobytes() for p in ps]
    opt.param_groups[1]["momentum"] = 0.5
    with pytest.raises(ValueError, match=r"momentum_buffer: required .* \(for params\[1\]\)"):
        opt.step([np.ones(3), np.ones(2)])
    _unchanged(opt, ps, before)


def test_the_gradient_policy_is_one_for_every_group():
    with pytest.raises(ValueError, match=r"^Invalid param_groups\[1\]\['max_grad_norm'\]"):
        fastadam.Adam([{"params": [np.ones(2)]}, {"params": [np.ones(2)],
                                                   "max_grad_norm": 1.0}])
    ps = [np.ones(2), np.ones(2)]
    opt = fastadam.Adam([{"params": ps[:1]}, {"params": ps[1:]}])
    before = [p.tobytes() for p in ps]
    opt.param_groups[0]["nonfinite"] = "skip"
    with pytest.raises(ValueError, match=r"^Invalid param_groups\[1\]\['nonfinite'\]"):
        opt.step([np.ones(2), np.ones(2)])
    _unchanged(opt, ps, before)
    for g in opt.param_groups:
        g["nonfinite"] = "skip"
    assert opt.step([np.array([1.0, np.nan]), np.ones(2)]) is False
    _unchanged(opt, ps, before)


@pytest.mark.parametrize("params, exc, match", [
    ([{"params": [np.ones(2)]}, np.ones(2)], TypeError, "not both"),
    ([{"lr": 0.1}], ValueError, r"param_groups\[0\]: a param group must have 'params'"),
    ([{"params": 3.0}], TypeError, r"param_groups\[0\]\['params'\]"),
    ([{"params": {"w": np.ones(2)}}, {"params": [np.ones(2)]}], TypeError, "as the first"),
    ([{"params": {"w": np.ones(2)}}, {"params": {"w": np.ones(2)}}], ValueError,
     "already a param"),
    ([{"params": [np.ones(2, np.int64)]}], TypeError, r"params\[0\]"),
    ([{"params": []}], ValueError, "empty parameter list"),
])
def test_bad_groups_are_refused(params, exc, match):
    with pytest.raises(exc, match=match):
        fastadam.Adam(params)


def test_add_param_group_is_checked_whole_and_refused_groups_change_nothing():
    ps = [np.ones(3)]
    opt = fastadam.Adam(ps, lr=0.1)
    opt.step([np.ones(3)])
    sd = copy.deepcopy(opt.state_dict())
    for group, exc in [({"params": [np.ones(2)], "lr": -1.0}, ValueError),
                       ({"params": [ps[0]]}, ValueError),          # already a param
                       ({"params": [ps[0][1:]]}, ValueError),      # shares its memory
                       ({"params": [np.ones(2), "x"]}, TypeError),
                       ({"params": [np.ones(2)], "max_grad_norm": 1.0}, ValueError)]:
        with pytest.raises(exc):
            opt.add_param_group(group)
        assert len(opt.param_groups) == 1 and list(opt.state) == [0]
    assert opt.state_dict()["state"][0]["step"] == sd["state"][0]["step"]
    q = np.ones(2)
    opt.add_param_group({"params": q, "lr": 0.5})      # a single array, as torch takes it
    assert opt.param_groups[1]["lr"] == 0.5 and opt.param_groups[1]["betas"] == (0.9, 0.999)
    opt.step([np.ones(3), np.ones(2)])
    assert opt.state_dict()["state"][1]["step"] == 1
    assert np.all(q < 1)


def test_a_grad_given_for_a_param_of_another_group_overlapping_is_refused():
    ps = [np.ones(4), np.ones(4)]
    opt = fastadam.Adam([{"params": ps[:1]}, {"params": ps[1:], "lr": 0.5}])
    before = [p.tobytes() for p in ps]
    with pytest.raises(ValueError, match=r"^Invalid grads\[0\]: it shares memory"):
        opt.step([ps[1], np.ones(4)])
    _unchanged(opt, ps, before)
