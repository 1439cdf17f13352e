"""load_state_dict corruption, for every optimizer of the registry (tests/optimizers.py):
the NumPy classes (fastadam.X) and the torch.optim drop-ins (fastadam.torch.X).

Every corruption is refused (TypeError or ValueError; for fastadam.torch whatever
torch.optim's own load_state_dict raises, where it refuses), and afterwards the optimizer is
exactly as it was: every param and state array byte for byte, its hyperparameters, its step
count; it then steps exactly like an untouched twin, and the uncorrupted state dict still
loads.
"""

import copy
import types

import numpy as np
import pytest

import optimizers as registry

# (Not importorskip: the NumPy tests run where torch is not installed.)
try:
    import torch

    import fastadam.torch as ft
except ImportError:
    torch = ft = None

f32, f64 = np.float32, np.float64
SPECS = {"a": ((3, 4), f32), "b": ((5,), f64)}
LAST = "b"              # the corruptions hit the last param: a partial load of 'a' would show


def _other_state_name(info):
    """A state name this optimizer does not have (another optimizer's)."""
    ours = {s.name for s in info.states}
    return next(s.name for o in registry.OPTIMIZERS for s in o.states if s.name not in ours)


def _other_hyper_name(info):
    ours = set(info.defaults)
    return next(k for o in registry.OPTIMIZERS for k in o.defaults if k not in ours)


# ---------------------------------------------------------------------------- corruptions

def _set(path, value):
    def fn(sd):
        obj = sd
        for k in path[:-1]:
            obj = obj[k]
        obj[path[-1]] = value
        return sd
    return fn


def _delete(path):
    def fn(sd):
        obj = sd
        for k in path[:-1]:
            obj = obj[k]
        del obj[path[-1]]
        return sd
    return fn


def _update_group(over):
    def fn(sd):
        sd["param_groups"][0].update(over)
        return sd
    return fn


G = ("param_groups", 0)
S = ("state", LAST)


def numpy_corruptions(info):
    """name -> function of a (deep-copied) state dict returning the corrupted one."""
    rich = info.rich()
    out = {
        "list": lambda sd: [sd],
        "none": lambda sd: None,
        "string": lambda sd: "state",
        "missing state": _delete(("state",)),
        "missing param_groups": _delete(("param_groups",)),
        "extra top-level key": _set(("extra",), 1),
        "two groups": lambda sd: dict(sd, param_groups=[sd["param_groups"][0]] * 2),
        "no group": _set(("param_groups",), []),
        "groups not a list": _set(("param_groups",), "x"),
        "group not a dict": _set(("param_groups",), [1]),
        "state not a dict": _set(("state",), [1, 2]),
        "renamed param": lambda sd: dict(sd, state={("c" if k == LAST else k): v
                                                    for k, v in sd["state"].items()}),
        "missing param": _delete(S),
        "extra param": lambda sd: dict(sd, state={**sd["state"], "c": sd["state"]["a"]}),
        "param state not a dict": _set(S, 1),
        "params reordered": _set(G + ("params",), ["b", "a"]),
        "params missing": _delete(G + ("params",)),
        "params of another optimizer": _set(G + ("params",), [0, 1]),
        "param listed twice": _set(G + ("params",), ["a", "a"]),
        f"extra state array {_other_state_name(info)}":
            _set(S + (_other_state_name(info),), np.zeros(5)),
        "missing step": _delete(S + ("step",)),
        "negative step": _set(S + ("step",), -1),
        "float step": _set(S + ("step",), 5.0),
        "numpy float step": _set(S + ("step",), np.float64(5.0)),
        "bool step": _set(S + ("step",), True),
        "None step": _set(S + ("step",), None),
        "str step": _set(S + ("step",), "5"),
        "array step": _set(S + ("step",), np.array([5])),
        "missing hyperparameter lr": _delete(G + ("lr",)),
        "missing max_grad_norm": _delete(G + ("max_grad_norm",)),
        f"extra hyperparameter {_other_hyper_name(info)}":
            _set(G + (_other_hyper_name(info),), 0.5),
    }
    for name in info.state_names(rich):
        where = S + (name,)
        out[f"missing {name}"] = _delete(where)
        if name in info.scalar_names:       # a float32 0-d array
            out.update({f"{name} {what}": _set(where, value) for what, value in {
                "1-element": np.zeros(1, f32), "param-shaped": np.zeros(5, f32),
                "float64": np.zeros((), f64), "int dtype": np.zeros((), np.int64),
                "swapped byte order": np.zeros((), ">f4"), "not an array": 0.5,
                "None": None}.items()})
            continue
        out[f"{name} wrong shape"] = _set(where, np.zeros(6))
        out[f"{name} wrong shape, same size"] = _set(where, np.zeros((5, 1)))
        out[f"{name} 0-d"] = _set(where, np.zeros(()))
        out[f"{name} wrong dtype"] = _set(where, np.zeros(5, f32))
        out[f"{name} int dtype"] = _set(where, np.zeros(5, np.int64))
        out[f"{name} swapped byte order"] = _set(where, np.zeros(5, ">f8"))
        out[f"{name} not an array"] = _set(where, [0.0] * 5)
        out[f"{name} None"] = _set(where, None)
    for bad in info.bad_for("class"):
        out[f"group {bad.id}"] = _update_group(bad.over)
    return out


def _numpy_cases():
    cases, ids = [], []
    for info in registry.OPTIMIZERS:
        for name, fn in numpy_corruptions(info).items():
            cases.append((info, fn))
            ids.append(f"{info.name}-{name}")
    return cases, ids


_NUMPY_CASES, _NUMPY_IDS = _numpy_cases()


# ---------------------------------------------------------------------------- NumPy classes

def make_numpy(info, hyper, seed, steps):
    rng = np.random.default_rng(seed)
    params = {k: np.array(rng.standard_normal(s), d) for k, (s, d) in SPECS.items()}
    opt = info.cls(params, **hyper)
    for _ in range(steps):
        opt.step({k: np.array(rng.standard_normal(p.shape), p.dtype)
                  for k, p in params.items()})
    return opt, params


def numpy_snapshot(opt, params):
    """Every byte an optimizer holds, and its hyperparameters and step count."""
    return ({k: p.tobytes() for k, p in params.items()},
            {k: {n: (a.dtype, a.shape, a.tobytes()) for n, a in st.items()}
             for k, st in opt.state.items()},
            copy.deepcopy({k: v for k, v in opt.param_groups[0].items() if k != "params"}),
            [id(p) for p in opt.param_groups[0]["params"]], opt.step_count)


def assert_numpy_same(opt, params, snap):
    ps, states, group, ids, count = snap
    assert {k: p.tobytes() for k, p in params.items()} == ps
    assert {k: {n: (a.dtype, a.shape, a.tobytes()) for n, a in st.items()}
            for k, st in opt.state.items()} == states
    ours = {k: v for k, v in opt.param_groups[0].items() if k != "params"}
    assert ours.keys() == group.keys()
    for k, v in group.items():
        assert type(ours[k]) is type(v) and repr(ours[k]) == repr(v), k
    assert [id(p) for p in opt.param_groups[0]["params"]] == ids
    assert opt.step_count == count


def assert_numpy_twins(a, params_a, b, params_b):
    assert numpy_snapshot(a, params_a)[:2] == numpy_snapshot(b, params_b)[:2]
    assert a.step_count == b.step_count


@pytest.mark.parametrize("info, corrupt", _NUMPY_CASES, ids=_NUMPY_IDS)
def test_numpy_load_state_dict_rejects_and_changes_nothing(info, corrupt):
    hyper = info.rich()
    donor, _ = make_numpy(info, hyper, seed=7, steps=5)   # other values, another step
    good = donor.state_dict()
    bad = corrupt(copy.deepcopy(good))
    opt, params = make_numpy(info, hyper, seed=8, steps=3)
    twin, twin_params = make_numpy(info, hyper, seed=8, steps=3)
    snap = numpy_snapshot(opt, params)
    with pytest.raises((TypeError, ValueError), match="^Invalid"):
        opt.load_state_dict(bad)
    assert_numpy_same(opt, params, snap)
    # it steps exactly like its twin that never saw the bad state dict
    rng = np.random.default_rng(9)
    for _ in range(2):
        g = {k: np.array(rng.standard_normal(s), d) for k, (s, d) in SPECS.items()}
        opt.step(g)
        twin.step(g)
    assert_numpy_twins(opt, params, twin, twin_params)
    # and the uncorrupted state dict loads: the refusal was for the corruption
    opt.load_state_dict(good)
    assert numpy_snapshot(opt, {})[1] == numpy_snapshot(donor, {})[1]
    assert opt.step_count == donor.step_count == 5


@pytest.mark.parametrize("info", registry.OPTIMIZERS, ids=lambda i: i.name)
def test_numpy_group_needing_a_state_the_optimizer_lacks(info):
    """A group whose options need a state array the optimizer was built without (amsgrad
    switched on, say) is refused; nothing changes."""
    for state in info.states:
        if state.enable is None:
            continue
        hyper = {k: v for k, v in info.rich().items() if k not in state.enable}
        hyper.update({k: info.defaults[k] for k in state.enable})
        assert state.name not in info.state_names(hyper)
        opt, params = make_numpy(info, hyper, seed=3, steps=2)
        sd = opt.state_dict()
        sd["param_groups"][0].update(state.enable)
        snap = numpy_snapshot(opt, params)
        with pytest.raises(ValueError, match=f"^Invalid {state.name}"):
            opt.load_state_dict(sd)
        assert_numpy_same(opt, params, snap)


@pytest.mark.parametrize("info", [i for i in registry.OPTIMIZERS if i.scalar_names],
                         ids=lambda i: i.name)
def test_numpy_params_keep_their_own_scalar_states(info):
    """Params that stepped together hold the same value of each scalar state; a state dict
    in which one param's differs (and its step: it lagged) loads, and the next step
    advances each param from its own values, as an optimizer of that param alone would."""
    hyper = info.rich()
    opt, params = make_numpy(info, hyper, seed=3, steps=3)
    sd = opt.state_dict()
    for name in info.scalar_names:
        assert sd["state"]["a"][name].tobytes() == sd["state"][LAST][name].tobytes()
    theirs = copy.deepcopy(sd)
    theirs["state"][LAST]["step"] = 1
    for name in info.scalar_names:
        theirs["state"][LAST][name] = np.array(0.5, f32)
    opt.load_state_dict(theirs)
    assert opt.state_dict()["state"][LAST]["step"] == 1
    rng = np.random.default_rng(9)
    grads = {k: np.array(rng.standard_normal(p.shape), p.dtype) for k, p in params.items()}
    alone = {}
    for key in params:
        p = params[key].copy()
        one = info.cls({key: p}, **hyper)
        group = dict(theirs["param_groups"][0], params=[key])
        one.load_state_dict({"state": {key: copy.deepcopy(theirs["state"][key])},
                             "param_groups": [group]})
        one.step({key: grads[key]})
        alone[key] = (p, one.state_dict()["state"][key])
    opt.step(grads)
    after = opt.state_dict()["state"]
    for key, (p, st) in alone.items():
        assert params[key].tobytes() == p.tobytes(), key
        for name, value in st.items():
            assert np.asarray(after[key][name]).tobytes() == np.asarray(value).tobytes(), \
                (key, name)


@pytest.mark.parametrize("info", registry.OPTIMIZERS, ids=lambda i: i.name)
def test_numpy_load_state_dict_accepts_numpy_int_step_and_resumes(info):
    hyper = info.rich()
    a, pa = make_numpy(info, hyper, seed=1, steps=4)
    sd = a.state_dict()
    for st in sd["state"].values():
        st["step"] = np.int64(st["step"])
    b, pb = make_numpy(info, hyper, seed=2, steps=1)
    for k in pb:
        pb[k][...] = pa[k]
    b.load_state_dict(sd)
    rng = np.random.default_rng(5)
    for _ in range(3):
        g = {k: np.array(rng.standard_normal(s), d) for k, (s, d) in SPECS.items()}
        a.step(g)
        b.step(g)
    assert_numpy_twins(a, pa, b, pb)


# ---------------------------------------------------------------------------- fastadam.torch



def make_torch(module, info, hyper, seed, steps):
    gen = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=getattr(torch, d.__name__)))
              for s, d in SPECS.values()]
    kw = info.torch_kwargs(hyper)
    opt = getattr(module, info.torch_name)(
        [{"params": params[:1]}, {"params": params[1:], "lr": kw.get("lr", 1e-3) * 0.5}],
        **kw)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype)
        opt.step()
    return opt, params


def torch_optim_side(info, hyper):
    """torch.optim's own optimizer, to compare load_state_dict with: torch.optim.X after the
    same steps, or for a row torch.optim has no class for (Lion), torch.optim.Optimizer
    itself over the same groups (the load_state_dict that every torch.optim class and
    lion-pytorch's Lion use; it cannot step)."""
    if info.torch_optim:
        return make_torch(torch.optim, info, hyper, seed=8, steps=3)[0]
    base = types.SimpleNamespace(**{info.torch_name: lambda groups, **kw: torch.optim.Optimizer(
        groups, dict(kw))})
    return make_torch(base, info, hyper, seed=8, steps=0)[0]


def torch_snapshot(opt, params):
    return ([p.detach().clone() for p in params],
            [{k: (v.clone() if torch.is_tensor(v) else v) for k, v in opt.state[p].items()}
             for p in params],
            copy.deepcopy([{k: v for k, v in g.items() if k != "params"}
                           for g in opt.param_groups]),
            [[id(p) for p in g["params"]] for g in opt.param_groups])


def _same_tensor(a, b):
    if not (torch.is_tensor(a) and torch.is_tensor(b)):     # a corrupted entry, kept as is
        return type(a) is type(b) and a == b
    return (a.dtype == b.dtype and a.shape == b.shape
            and a.numpy().tobytes() == b.numpy().tobytes())


def assert_torch_same(opt, params, snap, same_params=True):
    ps, states, groups, ids = snap
    assert all(_same_tensor(p.detach(), q) for p, q in zip(params, ps))
    for p, st in zip(params, states):
        assert opt.state[p].keys() == st.keys()
        for k, v in st.items():
            assert _same_tensor(opt.state[p][k], v), k
    assert [{k: v for k, v in g.items() if k != "params"}
            for g in opt.param_groups] == groups
    if same_params:
        assert [[id(p) for p in g["params"]] for g in opt.param_groups] == ids


def array_states(info, hyper):
    """The states of ``hyper`` that are param-shaped tensors (not per-tensor scalars)."""
    return [n for n in info.state_names(hyper) if n not in info.scalar_names]


def torch_corruptions(info):
    rich = info.rich()
    S0 = ("state", 1)           # the second param (its own group)
    out = {
        "list": lambda sd: [sd],
        "missing state": _delete(("state",)),
        "missing param_groups": _delete(("param_groups",)),
        "one group": lambda sd: dict(sd, param_groups=sd["param_groups"][:1]),
        "three groups": lambda sd: dict(sd, param_groups=sd["param_groups"]
                                        + sd["param_groups"][:1]),
        "a group with a param too many": _set(("param_groups", 1, "params"), [1, 2]),
        "a group without its param": _set(("param_groups", 1, "params"), []),
        "state tensor not a tensor": _set(S0 + (array_states(info, rich)[0],), [0.0] * 5),
        "capturable group": _set(("param_groups", 1, "capturable"), True),
        "differentiable group": _set(("param_groups", 1, "differentiable"), True),
    }
    d = torch.float64           # the second param's dtype (another one would be cast to it)
    for name in array_states(info, rich):
        out[f"{name} wrong shape"] = _set(S0 + (name,), torch.zeros(6, dtype=d))
        out[f"{name} wrong shape, same size"] = _set(S0 + (name,), torch.zeros(5, 1, dtype=d))
        out[f"{name} not contiguous"] = _set(S0 + (name,), torch.zeros(10, dtype=d)[::2])
        out[f"{name} sparse"] = _set(S0 + (name,), torch.zeros(5, dtype=d).to_sparse())
    if info.torch_has_step:
        out.update({
            "negative step": _set(S0 + ("step",), torch.tensor(-1.0)),
            "fractional step": _set(S0 + ("step",), torch.tensor(2.5)),
            "NaN step": _set(S0 + ("step",), torch.tensor(float("nan"))),
            "inf step": _set(S0 + ("step",), float("inf")),
            "two-element step": _set(S0 + ("step",), torch.tensor([1.0, 2.0])),
            "str step": _set(S0 + ("step",), "3"),
            "None step": _set(S0 + ("step",), None),
        })
    out = {name: (fn, ()) for name, fn in out.items()}
    for bad in info.bad_for("torch"):
        out[f"group {bad.id}"] = (_group_over(bad.over), ())
    return out


def _group_over(over):
    def fn(sd):
        sd["param_groups"][1].update(over)
        return sd
    return fn


def _torch_cases():
    cases, ids = [], []
    for info in registry.OPTIMIZERS:
        for name, (fn, mark) in torch_corruptions(info).items():
            cases.append(pytest.param(info, fn, marks=mark) if mark else (info, fn))
            ids.append(f"{info.name}-{name}")
    return cases, ids


# Without torch: one case, which skips as "could not import 'torch'" (an empty parameter
# set would skip for another reason).
_TORCH_CASES, _TORCH_IDS = _torch_cases() if torch is not None else ([(None, None)],
                                                                      ["no torch"])


def _outcome(opt, sd):
    try:
        opt.load_state_dict(sd)
    except Exception as e:      # noqa: BLE001 - the type is what is compared
        return type(e)
    return None


@pytest.mark.parametrize("info, corrupt", _TORCH_CASES, ids=_TORCH_IDS)
def test_torch_load_state_dict_rejects_and_changes_nothing(info, corrupt):
    pytest.importorskip("torch")
    hyper = info.rich()
    donor, donor_params = make_torch(ft, info, hyper, seed=7, steps=5)
    good = copy.deepcopy(donor.state_dict())
    bad = corrupt(copy.deepcopy(good))
    opt, params = make_torch(ft, info, hyper, seed=8, steps=3)
    twin, twin_params = make_torch(ft, info, hyper, seed=8, steps=3)
    # what torch.optim's own load_state_dict does with it: fastadam.torch refuses at least
    # what torch.optim refuses, with the same exception type
    theirs = _outcome(torch_optim_side(info, hyper), copy.deepcopy(bad))
    snap = torch_snapshot(opt, params)
    with pytest.raises(Exception) as e:      # noqa: B017 - checked just below
        opt.load_state_dict(bad)
    if theirs is not None:
        assert e.type is theirs, (e.value, theirs)
    else:
        assert e.type in (TypeError, ValueError), e.value
        assert str(e.value).startswith("Invalid"), e.value
    assert_torch_same(opt, params, snap)
    gen = torch.Generator().manual_seed(11)
    for _ in range(2):
        for p, q in zip(params, twin_params):
            p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype)
            q.grad = p.grad.clone()
        opt.step()
        twin.step()
    assert_torch_same(opt, params, torch_snapshot(twin, twin_params), same_params=False)
    # and the uncorrupted state dict loads: the refusal was for the corruption
    opt.load_state_dict(copy.deepcopy(good))
    ours, theirs = torch_snapshot(opt, params), torch_snapshot(donor, list(donor_params))
    assert ours[2] == theirs[2]
    for p, st_a, st_b in zip(params, ours[1], theirs[1]):
        assert st_a.keys() == st_b.keys()
        # torch.optim's load_state_dict casts a per-tensor scalar state to its param's dtype
        assert all(_same_tensor(st_a[k], st_b[k].to(p.dtype) if k in info.scalar_names
                                else st_b[k]) for k in st_a)


# A per-tensor scalar state (NAdam's mu_product, ...) is whatever torch.optim's
# load_state_dict leaves (it checks none); one that is no number is refused when the next
# step reads it, before anything is written.
SCALAR_CORRUPTIONS = {"two elements": lambda: torch.zeros(2), "a list": lambda: [0.5],
                      "a word": lambda: "x", "None": lambda: None, "missing": None}
_SCALAR_CASES = [pytest.param(info, name, how, id=f"{info.name}-{name}-{how}")
                 for info in registry.OPTIMIZERS for name in info.scalar_names
                 for how in SCALAR_CORRUPTIONS]


@pytest.mark.parametrize("info, name, how", _SCALAR_CASES)
def test_torch_bad_scalar_state_is_never_used(info, name, how):
    pytest.importorskip("torch")
    hyper = info.rich()
    good = copy.deepcopy(make_torch(ft, info, hyper, seed=7, steps=5)[0].state_dict())
    bad = copy.deepcopy(good)
    make = SCALAR_CORRUPTIONS[how]
    if make is None:
        del bad["state"][1][name]
    else:
        bad["state"][1][name] = make()
    opt, params = make_torch(ft, info, hyper, seed=8, steps=3)
    snap = torch_snapshot(opt, params)
    try:
        opt.load_state_dict(bad)
    except (TypeError, ValueError) as e:            # refused on loading: nothing kept
        assert str(e).startswith("Invalid"), e
        assert_torch_same(opt, params, snap)
        return
    snap = torch_snapshot(opt, params)
    for p in params:
        p.grad = torch.ones_like(p)
    with pytest.raises((TypeError, ValueError), match=rf"^Invalid state '{name}'"):
        opt.step()
    assert_torch_same(opt, params, snap)
