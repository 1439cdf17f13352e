"""Optimizer classes named and parameterised as in torch.optim.

Each holds its params, their state arrays (allocated when the params are added) and their
param groups, and steps every param in one native call through a :class:`_core.Plan` made
when it is built. ``params`` is a list of arrays, a dict name -> array, or a list of param
groups as torch takes them (``[{"params": [w1, w2], "lr": 1e-2}, {"params": [b]}]``; each
group's ``params`` a list of arrays or, for every group, a dict name -> array): a group's
missing hyperparameters take the constructor's. Hyperparameters live in
``opt.param_groups[i]`` (as in torch) and may be changed between steps; they are validated
once at every step. :meth:`Optimizer.add_param_group` adds a group; a ``None`` in the grads
leaves that param and its state untouched for the step (it does not count for that param),
as torch does for a param whose ``.grad`` is None.

Every optimizer also takes a gradient policy, applied inside the step to every gradient
taking part (all groups: it is one setting of the optimizer, which every group carries and
must carry the same):

- ``nonfinite="propagate" | "skip" | "raise"``: what a NaN or infinite gradient element
  does. ``"propagate"`` (the default, as torch) lets it flow into the update. ``"skip"``
  changes nothing, does not count the step, and makes :meth:`Optimizer.step` return False;
  ``"raise"`` changes nothing and raises FloatingPointError naming the array and index.
- ``max_grad_norm``: clip by the global 2-norm of all gradients, torch's
  ``clip_grad_norm_`` rule: ``g *= min(1, max_grad_norm / (norm + 1e-6))``.
- ``step(grads, grad_scale=s)``: the gradients are divided by ``s`` first (a loss
  scaler's unscale); the norm is that of the unscaled gradients.

Every optimizer also takes the 16-bit options (keywords; docs/user-guide.md, "16-bit
params"): ``master_weights=True`` keeps a float32 master of each float16/bfloat16 param in
its state (``"master_param"``), steps it, and writes the rounded 16-bit param in the same
pass; ``state_dtype`` (bfloat16 or float16 for float32 params) halves the state's memory;
``rounding="stochastic"`` with ``seed`` rounds 16-bit params stepped in place unbiasedly
(``rounding`` and ``seed`` live in the param groups, as the gradient policy does).

And the 8-bit options (docs/user-guide.md, "8-bit states"): ``state_bits=8`` keeps the states
of every param with at least ``min_8bit_size`` elements (default 4096) as
:class:`fastadam.quant.QuantizedState` (uint8 codes, one float32 absmax per block of 256,
bitsandbytes' signed or unsigned dynamic map, per the registry's ``State.qmap``); smaller
params keep 32-bit states. In :meth:`Optimizer.state_dict` an 8-bit state ``name`` is three
arrays: ``name`` (the uint8 codes), ``name + "_absmax"`` and ``name + "_qmap"``.

The gradients themselves are never modified. With a check or clipping, the step reads every
gradient once more before the update (one read-only pass that computes the float64 norm and
finds NaN and inf together); the update then multiplies by one combined factor.
"""

from __future__ import annotations

import copy
import threading
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import _core, _registry, quant

Params = Union[Sequence[np.ndarray], Mapping[str, np.ndarray], Sequence[Mapping[str, Any]]]

__all__ = ["Optimizer", "SGD", "RMSprop", "Adam", "AdamW", "Lion", "Adagrad", "Adamax",
           "Adadelta", "RAdam", "Rprop", "NAdam", "ASGD"]

# Optimizer-wide options every group carries (and must carry the same): the gradient
# policy and how 16-bit params are rounded.
_POLICY = ("nonfinite", "max_grad_norm", "rounding", "seed")
# Options of the state's layout, fixed when the optimizer is made (not group keys).
_LAYOUT = ("master_weights", "state_dtype", "state_bits", "min_8bit_size")
MASTER = "master_param"     # the state key of a 16-bit param's float32 master copy


def _hyper(args: Dict[str, Any]) -> Dict[str, Any]:
    """A class's hyperparameters from its ``__init__``'s ``locals()``, in signature order."""
    return {k: v for k, v in args.items()
            if k not in ("self", "params", "__class__", "storage")}


# The storage options every class takes as keywords (see Optimizer), with their defaults.
STORAGE = {"master_weights": False, "state_dtype": None, "rounding": "nearest", "seed": 0,
           "state_bits": 32, "min_8bit_size": _registry.MIN_8BIT_SIZE}
_EIGHT_BIT = ("state_bits", "min_8bit_size")
# The suffixes of an 8-bit state's absmax and map in a state_dict (its codes keep its name).
ABSMAX, QMAP = "_absmax", "_qmap"


def _storage(hyper: Dict[str, Any], storage: Dict[str, Any]) -> Dict[str, Any]:
    """``hyper`` with the 16-bit options (``storage``: a class's ``**storage``)."""
    unknown = [k for k in storage if k not in STORAGE]
    if unknown:
        raise TypeError(f"got an unexpected keyword argument {unknown[0]!r} (the storage "
                        f"options are {', '.join(STORAGE)})")
    # The 8-bit options' defaults are the readers' (Optimizer.__init__ pops them with
    # these defaults): fastadam.torch, which shares this function, sees them only if given.
    return {**hyper, **{k: v for k, v in STORAGE.items() if k not in _EIGHT_BIT}, **storage}


def _flag(x: Any, name: str) -> bool:
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    raise TypeError(f"Invalid {name}: expected a bool, got {type(x).__name__}")


def _storage_dtype(x: Any, name: str) -> Optional[np.dtype]:
    """A 16-bit state dtype given as a NumPy dtype, a type or its name; None: none."""
    if x is None:
        return None
    if isinstance(x, str) and x == "bfloat16":
        try:
            import ml_dtypes
        except ImportError:
            raise ImportError("bfloat16 arrays need ml_dtypes: pip install ml_dtypes") from None
        x = ml_dtypes.bfloat16
    try:
        dtype = np.dtype(x)
    except TypeError:
        raise TypeError(f"Invalid {name}: expected a dtype, got {x!r}") from None
    if dtype.name not in _registry.DTYPE_NAMES:
        raise TypeError(f"Invalid {name}: expected one of {', '.join(_registry.DTYPE_NAMES)}, "
                        f"got {dtype}")
    return dtype


def _state_bits(x: Any) -> int:
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)):
        raise TypeError(f"Invalid state_bits: expected an int, one of "
                        f"{_registry.STATE_BITS}, got {type(x).__name__}")
    if int(x) not in _registry.STATE_BITS:
        raise ValueError(f"Invalid state_bits: {x!r} (expected one of "
                         f"{_registry.STATE_BITS})")
    return int(x)


def _min_8bit_size(x: Any) -> int:
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)):
        raise TypeError(f"Invalid min_8bit_size: expected an int >= 0, got "
                        f"{type(x).__name__}")
    if x < 0:
        raise ValueError(f"Invalid min_8bit_size: {x!r} (must be >= 0)")
    return int(x)


def _as_groups(params: Any) -> List[Mapping[str, Any]]:
    """The param groups of a constructor's ``params`` (not yet checked)."""
    if isinstance(params, Mapping):
        return [{"params": params}]
    if isinstance(params, (list, tuple)):
        dicts = [isinstance(x, Mapping) for x in params]
        if params and all(dicts):
            return list(params)
        if any(dicts):
            raise TypeError("Invalid params: expected arrays or param groups (dicts), not "
                            "both in one list")
        return [{"params": params}]
    raise TypeError(f"Invalid params: expected a list/tuple of arrays, a dict name -> array "
                    f"or a list of param groups, got {type(params).__name__}")


def _same(a: Any, b: Any) -> bool:
    try:
        return a is b or bool(a == b)
    except Exception:       # an array's truth value, say: not the same setting
        return False


class Optimizer:
    """Base class: params, state, param groups, and a native plan.

    A subclass names its registry entry (fastadam/_registry.py) in ``_name``; its
    ``__init__`` passes its hyperparameters (those of the entry, then the gradient policy's
    ``nonfinite`` and ``max_grad_norm``) to this one. Which states exist, their initial
    values, the validation and the step all follow from the entry."""

    _name: str = ""

    def __init__(self, params: Params, defaults: Dict[str, Any]):
        entry = _registry.by_name(self._name)
        defaults = dict(defaults)
        self.master_weights = _flag(defaults.pop("master_weights", False), "master_weights")
        self.state_dtype = _storage_dtype(defaults.pop("state_dtype", None), "state_dtype")
        self.state_bits = _state_bits(defaults.pop("state_bits", 32))
        self.min_8bit_size = _min_8bit_size(defaults.pop("min_8bit_size",
                                                         _registry.MIN_8BIT_SIZE))
        if self.state_bits == 8 and self.state_dtype is not None:
            raise ValueError(f"Invalid state_dtype: {self.state_dtype} with state_bits=8 (the "
                             f"8-bit states replace the 16-bit ones; the params below "
                             f"min_8bit_size keep their 32-bit states)")
        if self.master_weights and defaults.get("rounding") == "stochastic":
            raise ValueError("Invalid rounding: 'stochastic' rounds 16-bit params stepped in "
                             "place; with master_weights=True the float32 master keeps the "
                             "precision and the 16-bit param is its nearest value")
        self.defaults = defaults
        self.param_groups: List[Dict[str, Any]] = []
        self.state: Dict[Any, Dict[str, Any]] = {}
        self._keys: List[Any] = []          # every param's key, group after group
        self._group_keys: List[List[Any]] = []
        self._is_dict: Optional[bool] = None
        # Per param: the steps it has taken. While every param of a group has the same (no
        # grad was None), the step counts it in _group_step only.
        self._steps = np.zeros(0, np.int64)
        self._bounds = np.zeros(1, np.intp)     # group g's params: [_bounds[g], _bounds[g+1])
        self._group_step: List[Optional[int]] = []
        # Per-tensor scalar states (NAdam's mu_product, ...): float32 0-d arrays, as torch's
        # with its default dtype. Param i's is a 0-d view of element i of one buffer per
        # scalar, so that a step sets all the params of a run from one value in one NumPy
        # operation.
        self._scalar_bufs: Tuple[np.ndarray, ...] = tuple(
            np.zeros(0, np.float32) for _ in entry.scalars)
        self._step_count = 0
        self._grad_norm: Union[float, None] = None
        # Serialises step, state_dict, load_state_dict and add_param_group across Python
        # threads: the kernels run without the GIL, and one step must never interleave with
        # another.
        self._lock = threading.Lock()
        self._add_groups(_as_groups(params), first=True)

    # -- building ------------------------------------------------------------------------
    def _add_groups(self, groups: Sequence[Mapping[str, Any]], first: bool) -> None:
        """Check the new groups, their params and the states they need, build the plan of
        every param, and only then take them: a refused group changes nothing."""
        entry = _registry.by_name(self._name)
        is_dict = self._is_dict
        keys = list(self._keys)
        new_groups, new_keys = [], []
        for j, g in enumerate(groups):
            gi = len(self.param_groups) + j
            where = f"param_groups[{gi}]"
            if not isinstance(g, Mapping):
                raise TypeError(f"Invalid {where}: expected a dict with 'params', got "
                                f"{type(g).__name__}")
            if "params" not in g:
                raise ValueError(f"Invalid {where}: a param group must have 'params'")
            ps = g["params"]
            if isinstance(ps, np.ndarray):
                ps = [ps]
            if isinstance(ps, Mapping):
                gkeys, arrays, kind = list(ps.keys()), list(ps.values()), True
            elif isinstance(ps, (list, tuple)):
                gkeys = list(range(len(keys), len(keys) + len(ps)))
                arrays, kind = list(ps), False
            else:
                raise TypeError(f"Invalid {where}['params']: expected a list/tuple of arrays "
                                f"or a dict name -> array, got {type(ps).__name__}")
            if arrays:
                if is_dict is not None and kind != is_dict:
                    raise TypeError(f"Invalid {where}['params']: every group's params must be "
                                    f"{'a dict' if is_dict else 'a list'}, as the first's")
                is_dict = kind
            for key in gkeys:
                if key in keys:
                    raise ValueError(f"Invalid {where}['params']: the name {key!r} is "
                                     f"already a param's")
                keys.append(key)
            for key, p in zip(gkeys, arrays):
                _core.check_param(p, f"params[{key!r}]")
            new_groups.append(dict(self.defaults, **{k: v for k, v in g.items()
                                                    if k != "params"}, params=arrays))
            new_keys.append(gkeys)
        if first and not keys:
            raise ValueError("Invalid params: the optimizer got an empty parameter list")
        all_groups = self.param_groups + new_groups
        nf, mgn = self._policy(all_groups)
        hypers = self._validate(all_groups)
        # the new params' states, each group's from its own options
        state = dict(self.state)
        for gi in range(len(self.param_groups), len(all_groups)):
            g, h = all_groups[gi], hypers[gi]
            for key, p in zip(new_keys[gi - len(self.param_groups)], g["params"]):
                state[key] = self._new_state(entry, g, h, p, key)
        group_of = np.concatenate([np.full(len(g["params"]), gi, np.intp)
                                   for gi, g in enumerate(all_groups)])
        with np.errstate(over="ignore"):    # an lr beyond float32's range: inf, as torch
            bufs = tuple(np.concatenate([old] + [np.full(len(g["params"]), _initial(c, g),
                                                         np.float32) for g in new_groups])
                         for c, old in zip(entry.scalars, self._scalar_bufs))
        arrays = [p for g in all_groups for p in g["params"]]
        masters = [state[k].get(MASTER) for k in keys]
        plan = _core.Plan(_core.validate(self._name, self.defaults).kernel,
                          [p if m is None else m for p, m in zip(arrays, masters)],
                          [tuple(state[k].get(s.name) for s in entry.states) for k in keys],
                          [repr(k) for k in keys],
                          [None if m is None else p for p, m in zip(arrays, masters)])
        self._sync_steps()
        steps = np.concatenate([self._steps, np.zeros(len(keys) - len(self._keys), np.int64)])
        runs, run_of, _, _ = _runs(hypers, group_of, np.arange(len(keys)), steps, bufs)
        plan.check_runs(runs, run_of, nf, mgn, None, *self._rounding(all_groups))
        # checked: take them
        names = {c.name for c in entry.scalars}
        for i, key in enumerate(keys):      # the scalars first, as torch orders them
            state[key] = {**{c.name: b[i:i + 1].reshape(()) for c, b in zip(entry.scalars,
                                                                          bufs)},
                          **{k: v for k, v in state[key].items() if k not in names}}
        self.param_groups.extend(new_groups)
        self._group_keys.extend(new_keys)
        self.state, self._keys, self._is_dict = state, keys, is_dict
        self._group_of, self._steps, self._scalar_bufs = group_of, steps, bufs
        self._plan = plan
        self._bounds = np.cumsum([0] + [len(g["params"]) for g in self.param_groups])
        self._set_uniform()

    def _set_uniform(self) -> None:
        """Per group: the step all its params share (then also their scalar states), or
        None when they differ (a param had no gradient at some step) and the step must
        split the group into runs."""
        self._group_step: List[Optional[int]] = []
        for a, b in zip(self._bounds[:-1], self._bounds[1:]):
            same = a == b or (np.all(self._steps[a:b] == self._steps[a]) and all(
                np.all(buf[a:b].view(np.int32) == buf[a:b].view(np.int32)[0])
                for buf in self._scalar_bufs))
            self._group_step.append(int(self._steps[a]) if same and a < b else
                                    (0 if same else None))
        self._group_scalars = [tuple(buf[a:a + 1].reshape(()) for buf in self._scalar_bufs)
                               or None for a in self._bounds[:-1]]
        self._group_run = None
        if len(self.param_groups) > 1:
            # the fast path's runs: the non-empty groups, in order
            nonempty = np.flatnonzero(np.diff(self._bounds))
            run = np.full(len(self.param_groups), -1, np.intp)
            run[nonempty] = np.arange(nonempty.size)
            self._group_run = (nonempty, run[self._group_of])

    def _sync_steps(self) -> None:
        """Write the uniform groups' step into ``_steps`` (the step keeps it only there)."""
        for g, (a, b) in enumerate(zip(self._bounds[:-1], self._bounds[1:])):
            if self._group_step[g] is not None:
                self._steps[a:b] = self._group_step[g]

    def _new_state(self, entry: _registry.Optimizer, group: Mapping[str, Any], hyper: Any,
                   p: np.ndarray, key: Any = None) -> Dict[str, Any]:
        """A new param's state arrays (checked by the plan): its states in ``state_dtype``
        (default: the param's, or float32 with a master), or 8-bit (QuantizedState) with
        ``state_bits=8`` when it has at least ``min_8bit_size`` elements; and with master
        weights a 16-bit param's float32 master copy."""
        master = self.master_weights and p.dtype.name in _registry.HALF_DTYPES
        dtype = self.state_dtype or (np.dtype(np.float32) if master else p.dtype)
        stepped = np.dtype(np.float32) if master else p.dtype
        if self.state_bits == 8 and p.size >= self.min_8bit_size:
            if not _registry.MIXING[p.dtype.name]["state8"]:
                raise TypeError(f"Invalid params[{key!r}]: a {p.dtype} param has no 8-bit "
                                f"states (state_bits=8 takes float32, bfloat16 and float16 "
                                f"params)")
            out = {}
            for s, need in zip(entry.states, hyper.needs):
                if not need:
                    continue
                signed = s.qmap == "signed"
                init = _initial(s, group)
                out[s.name] = quant.QuantizedState.zeros(p.shape, signed) if init == 0 else \
                    quant.QuantizedState.from_float(np.full(p.shape, init, np.float32), signed)
        else:
            if dtype != stepped and stepped != np.float32:
                raise TypeError(f"Invalid state_dtype: {dtype} states go with float32 params "
                                f"(or 16-bit ones with master_weights=True); this param is "
                                f"{p.dtype}")
            out = {s.name: np.full(p.shape, _initial(s, group), dtype)
                   for s, need in zip(entry.states, hyper.needs) if need}
        if master:
            out[MASTER] = p.astype(np.float32)
        return out

    def _rounding(self, groups: Sequence[Mapping[str, Any]]) -> Tuple[Any, Any]:
        """(rounding, seed): the policy's last two, as every group carries them."""
        return groups[0].get("rounding", "nearest"), groups[0].get("seed", 0)

    def _policy(self, groups: Sequence[Mapping[str, Any]]) -> Tuple[Any, Any]:
        """The gradient policy: one for the whole step, which every group must carry (as
        it must the rounding, checked here too)."""
        nf, mgn = groups[0].get("nonfinite", "propagate"), groups[0].get("max_grad_norm")
        for gi, g in enumerate(groups[1:], 1):
            for name, ours in zip(_POLICY, (nf, mgn) + self._rounding(groups)):
                if not _same(g.get(name, ours), ours):
                    raise ValueError(f"Invalid param_groups[{gi}][{name!r}]: {g[name]!r} "
                                     f"differs from param_groups[0]'s {ours!r}; the gradient "
                                     f"policy covers the whole step, so every group must "
                                     f"have the same")
        return nf, mgn

    def _validate(self, groups: Sequence[Mapping[str, Any]]) -> List[Any]:
        """Every group's hyperparameters, validated (once per step)."""
        if len(groups) == 1:
            return [_core.validate(self._name, groups[0])]
        hypers = []
        for gi, g in enumerate(groups):
            try:
                hypers.append(_core.validate(self._name, g))
            except (TypeError, ValueError) as e:
                raise type(e)(f"param_groups[{gi}]: {e}") from None
        return hypers

    # -- public API ------------------------------------------------------------------------
    @property
    def step_count(self) -> int:
        """How many steps this optimizer has taken (a param whose grad was None in some of
        them has taken fewer: its state's ``step``)."""
        return self._step_count

    @property
    def grad_norm(self) -> Union[float, None]:
        """The 2-norm of the last step's unscaled gradients, before clipping (None unless a
        ``nonfinite`` check or ``max_grad_norm`` made the step compute it; NaN or inf
        when a gradient was)."""
        return self._grad_norm

    def add_param_group(self, param_group: Mapping[str, Any]) -> None:
        """Add a param group (as torch.optim's): ``{"params": [arrays] or {name: array},
        hyperparameter: value, ...}``; what it leaves out takes the constructor's values.
        Its params start with fresh state and step 0. Checked whole before it is added.
        (For an optimizer with scalar states, NAdam's and ASGD's, every param's 0-d scalar
        arrays in ``state`` are new arrays afterwards, with the same values.)"""
        with self._lock:
            self._add_groups([param_group], first=False)

    def grad_stats(self, grads: Any) -> np.ndarray:
        """The gradient policy's pre-pass alone, for data parallelism across processes: a
        float64 array ``[sum of squares, non-finite]`` of ``grads`` (as :meth:`step` takes
        them; not unscaled), ``non-finite`` 1.0 when an element is NaN or inf. Such arrays
        add up: sum them over the ranks (a plain sum all-reduce, e.g. mpi4py's
        ``comm.Allreduce``) and pass the total to ``step(grads, grad_stats=total)``, which
        then clips by the norm of every rank's grads and skips on every rank when any rank
        has a non-finite grad. Writes nothing."""
        grads = self._grad_list(grads)
        with self._lock:
            if type(grads) in (list, tuple) and _core.first_none(grads) < 0:
                return self._plan.grad_stats(grads)
            if len(grads) != len(self._keys):
                raise ValueError(f"Invalid grads: expected {len(self._keys)} arrays (one "
                                 f"per param), got {len(grads)}")
            group = self.param_groups[0]
            run_of = np.array([-1 if g is None else 0 for g in grads], np.intp)
            runs = [(_core.validate(self._name, group), 1, self._group_scalars[0])]
            return self._plan.grad_stats(grads, runs, run_of)

    def _grad_list(self, grads: Any) -> Any:
        """``grads`` as a list in the params' order (a dict: by the params' names)."""
        if self._is_dict:
            if not isinstance(grads, Mapping):
                raise TypeError(f"Invalid grads: expected a dict like the params, "
                                f"got {type(grads).__name__}")
            if len(grads) != len(self._keys) or any(k not in grads for k in self._keys):
                missing = [k for k in self._keys if k not in grads]
                extra = [k for k in grads if k not in self.state]
                raise ValueError(f"Invalid grads: keys differ from the params' "
                                 f"(missing {missing}, unexpected {extra}); give None for a "
                                 f"param without a gradient")
            grads = [grads[k] for k in self._keys]
        return grads

    def step(self, grads: Any, grad_scale: Union[float, None] = None,
             grad_stats: Any = None) -> bool:
        """Update every param in place from ``grads``: a list or tuple with one entry per
        param (every group's, in order), or a dict name -> grad, like the params; ``None``
        for a param that has no gradient this step (it and its state are left as they are).

        ``grad_scale``: divide the gradients by this first (the loss scale of mixed
        precision training). Every grad, param and hyperparameter is validated before any
        array is written. Returns True when the update was applied, False when
        ``nonfinite="skip"`` skipped it (then nothing changed and the step is not counted).

        ``grad_stats``: :meth:`grad_stats` summed over every rank; the policy
        (``nonfinite``, ``max_grad_norm``) then acts on it instead of this step's own
        pre-pass (without a policy it is not used).
        """
        grads = self._grad_list(grads)
        with self._lock:
            groups = self.param_groups
            gstep = self._group_step
            lean = len(groups) == 1 and gstep[0] is not None
            if lean:
                # the common case, kept lean: one group whose params share their step
                group = groups[0]
                nf, mgn = group["nonfinite"], group["max_grad_norm"]
                try:
                    applied = self._plan.step(grads, _core.validate(self._name, group),
                                              gstep[0] + 1, nf, mgn, grad_scale,
                                              self._group_scalars[0], group["rounding"],
                                              group["seed"], grad_stats)
                except TypeError:
                    # A None grad is refused there before anything is written: such a
                    # step goes by runs (any other TypeError is raised again there).
                    if type(grads) not in (list, tuple) or _core.first_none(grads) < 0:
                        raise
                    lean = False
                else:
                    if applied:
                        gstep[0] += 1
                        for buf in self._scalar_bufs:       # every param as the first
                            buf[1:] = buf[0]
            if not lean:
                nf, mgn, applied = self._step_runs(grads, grad_scale, grad_stats)
            computed = nf != "propagate" or mgn is not None
            self._grad_norm = self._plan.grad_norm if computed else None
            if applied:
                self._step_count += 1
        return applied

    def _step_runs(self, grads: Any, grad_scale: Any,
                   grad_stats: Any = None) -> Tuple[Any, Any, bool]:
        """A step over several groups, or with params whose grad is None or whose step
        counts differ: one native call over runs of params that share a group, a step
        count and scalar states."""
        groups = self.param_groups
        nf, mgn = self._policy(groups)
        hypers = self._validate(groups)
        if None not in self._group_step and _core.first_none(grads) < 0:
            nonempty, run_of = self._group_run
            runs = [(hypers[g], self._group_step[g] + 1, self._group_scalars[g])
                    for g in nonempty]
            applied = self._plan.step_runs(grads, runs, run_of, nf, mgn, grad_scale,
                                           *self._rounding(groups), grad_stats)
            if applied:
                self._group_step = [s + 1 for s in self._group_step]
                for buf in self._scalar_bufs:       # every param of a group as its first
                    for a, b in zip(self._bounds[:-1], self._bounds[1:]):
                        buf[a + 1:b] = buf[a]
            return nf, mgn, applied
        if len(grads) != len(self._keys):
            raise ValueError(f"Invalid grads: expected {len(self._keys)} arrays (one per "
                             f"param), got {len(grads)}")
        self._sync_steps()
        active = np.flatnonzero([g is not None for g in grads])
        if active.size:
            runs, run_of, firsts, inverse = _runs(hypers, self._group_of, active,
                                                  self._steps, self._scalar_bufs)
        else:   # no param takes part: check the rest as a step would, write nothing
            runs = [(hypers[0], int(self._steps[0]) + 1, self._group_scalars[0])]
            run_of = np.full(len(self._keys), -1, np.intp)
        applied = self._plan.step_runs(grads, runs, run_of, nf, mgn, grad_scale,
                                       *self._rounding(groups), grad_stats)
        if applied and active.size:
            self._steps[active] += 1
            for buf in self._scalar_bufs:       # every param of a run as its first
                buf[active] = buf[firsts[inverse]]
            self._set_uniform()
        return nf, mgn, applied

    def state_dict(self) -> Dict[str, Any]:
        """A copy of the state: ``{'state': {key: {'step': int, name: ndarray}},
        'param_groups': [{hyperparameters..., 'params': [keys]}, ...]}``."""
        with self._lock:
            self._sync_steps()
            return self._state_dict()

    def _state_dict(self) -> Dict[str, Any]:
        groups = []
        for g, keys in zip(self.param_groups, self._group_keys):
            group = copy.deepcopy({k: v for k, v in g.items() if k != "params"})
            group["params"] = list(keys)
            groups.append(group)
        return {
            "state": {key: {"step": int(self._steps[i]), **_flat(self.state[key])}
                      for i, key in enumerate(self._keys)},
            "param_groups": groups,
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`.

        Atomic: the groups and their keys, every array's dtype and shape, the steps and
        every hyperparameter are checked before anything changes; a rejected state leaves
        the optimizer exactly as it was."""
        with self._lock:
            self._load_state_dict(state_dict)

    def _load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        if not isinstance(state_dict, Mapping) or set(state_dict) != {"state", "param_groups"}:
            raise ValueError("Invalid state_dict: expected a dict with 'state' and "
                             "'param_groups'")
        groups, state = state_dict["param_groups"], state_dict["state"]
        ngroups = len(self.param_groups)
        if not isinstance(groups, (list, tuple)) or len(groups) != ngroups:
            raise ValueError(f"Invalid state_dict['param_groups']: expected {ngroups} "
                             f"group{'s' if ngroups > 1 else ''}")
        loaded = []
        for gi, (theirs, ours, keys) in enumerate(zip(groups, self.param_groups,
                                                      self._group_keys)):
            where = f"state_dict['param_groups'][{gi}]"
            if not isinstance(theirs, Mapping):
                raise ValueError(f"Invalid {where}: expected a dict, got "
                                 f"{type(theirs).__name__}")
            group = copy.deepcopy(dict(theirs))
            if list(group.pop("params", None) or []) != keys:
                raise ValueError(f"Invalid {where}['params']: expected {keys}")
            expected = set(ours) - {"params"}
            if set(group) != expected:
                raise ValueError(f"Invalid {where}: expected the keys {sorted(expected)}, "
                                 f"got {sorted(group)}")
            loaded.append(group)
        if not isinstance(state, Mapping) or set(state) != set(self.state):
            raise ValueError(f"Invalid state_dict['state']: expected the keys {self._keys}")
        steps = np.zeros(len(self._keys), np.int64)
        for i, key in enumerate(self._keys):
            ours, theirs = _flat(self.state[key], copy=False), state[key]
            where = f"state_dict['state'][{key!r}]"
            if not isinstance(theirs, Mapping) or set(theirs) != set(ours) | {"step"}:
                raise ValueError(f"Invalid {where}: expected the keys "
                                 f"{sorted(set(ours) | {'step'})}")
            for name, arr in ours.items():
                src = theirs[name]
                if not isinstance(src, np.ndarray) or src.dtype != arr.dtype \
                        or src.shape != arr.shape:
                    raise ValueError(f"Invalid {where}[{name!r}]: expected a {arr.dtype} "
                                     f"array of shape {arr.shape}")
                if name.endswith(QMAP) and name[:-len(QMAP)] in self.state[key] and \
                        src.tobytes() != arr.tobytes():
                    raise ValueError(f"Invalid {where}[{name!r}]: not this optimizer's map "
                                     f"for {name[:-len(QMAP)]!r} (bitsandbytes' "
                                     f"{'signed' if arr[0] < 0 else 'unsigned'} dynamic map)")
            step = theirs["step"]
            if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
                raise ValueError(f"Invalid {where}['step']: expected an int >= 0")
            steps[i] = int(step)
        entry = _registry.by_name(self._name)
        bufs = tuple(np.array([state[key][c.name] for key in self._keys], np.float32)
                     for c in entry.scalars)
        nf, mgn = self._policy(loaded)
        hypers = self._validate(loaded)
        runs, run_of, _, _ = _runs(hypers, self._group_of, np.arange(len(self._keys)), steps,
                                   bufs)
        self._plan.check_runs(runs, run_of, nf, mgn, None, *self._rounding(loaded))
        for gi, group in enumerate(loaded):
            self.param_groups[gi] = dict(group, params=self.param_groups[gi]["params"])
        for key, ours in self.state.items():
            for name, arr in _flat(ours, copy=False).items():
                if not name.endswith(QMAP) or name[:-len(QMAP)] not in ours:
                    np.copyto(arr, state[key][name])
        self._steps[:] = steps
        self._step_count = int(steps.max(initial=0))
        self._set_uniform()

    def __repr__(self) -> str:
        def hyper(g):
            return ", ".join(f"{k}={v!r}" for k, v in g.items() if k != "params")
        if len(self.param_groups) == 1:
            return f"{type(self).__name__}({len(self._keys)} params, " \
                   f"{hyper(self.param_groups[0])})"
        groups = "; ".join(f"group {gi}: {len(g['params'])} params, {hyper(g)}"
                           for gi, g in enumerate(self.param_groups))
        return f"{type(self).__name__}({groups})"


def _flat(state: Mapping[str, Any], copy: bool = True) -> Dict[str, np.ndarray]:
    """A param's state as plain arrays (copies, or with ``copy=False`` the arrays
    themselves): an 8-bit state ``name`` as ``name`` (its codes), ``name + "_absmax"`` and
    ``name + "_qmap"``."""
    out = {}
    for name, x in state.items():
        if type(x) is quant.QuantizedState:
            out.update({name: x.codes, name + ABSMAX: x.absmax, name + QMAP: x.qmap})
        else:
            out[name] = x
    return {k: v.copy() for k, v in out.items()} if copy else out


def _runs(hypers: Sequence[Any], group_of: np.ndarray, active: np.ndarray,
          steps: np.ndarray, bufs: Tuple[np.ndarray, ...]):
    """Split the params ``active`` (indices) into runs of one group, one step count and one
    value of each scalar state; returns ``(runs, run_of, firsts, inverse)`` for
    :meth:`_core.Plan.step_runs`: ``firsts`` each run's first param, ``inverse`` each active
    param's run."""
    cols = [group_of[active], steps[active]] + [b[active].view(np.int32) for b in bufs]
    keys = np.stack(cols, axis=1).astype(np.int64)
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    firsts = active[first]
    runs = [(hypers[group_of[f]], int(steps[f]) + 1,
             tuple(b[f:f + 1].reshape(()) for b in bufs) or None) for f in firsts]
    run_of = np.full(group_of.size, -1, np.intp)
    run_of[active] = inverse
    return runs, run_of, firsts, inverse


def _initial(state: _registry.State, group: Mapping[str, Any]) -> float:
    """A state array's initial value: a number, or the hyperparameter named (checked by
    :func:`_initial_value` when only the classes have it, as Adagrad's
    initial_accumulator_value)."""
    if not isinstance(state.init, str):
        return state.init
    return _initial_value(state.init, group[state.init])


def _initial_value(name: str, x: Any) -> float:
    """A state's initial value given as the option ``name``: a finite real number >= 0."""
    if isinstance(x, (bool, np.bool_, complex, np.complexfloating, str, bytes)) or x is None:
        raise TypeError(f"Invalid {name}: expected a real number, got {type(x).__name__}")
    try:
        v = float(x)
    except OverflowError:       # an int beyond float's range (10**400)
        raise ValueError(f"Invalid {name}: {x!r} (too large)") from None
    except (TypeError, ValueError):
        raise TypeError(f"Invalid {name}: expected a real number, got {x!r}") from None
    if not (np.isfinite(v) and v >= 0.0):
        raise ValueError(f"Invalid {name}: {x!r} (must be a finite number >= 0)")
    return v


class SGD(Optimizer):
    """SGD with momentum, dampening and Nesterov momentum (torch.optim.SGD's rule).

    Per param, with ``g`` the grad (times the gradient policy's factor, negated when
    ``maximize``) plus ``weight_decay * p``: with momentum, ``buf = g`` at the first step,
    else ``buf = momentum*buf + (1-dampening)*g``; ``d = g + momentum*buf`` (nesterov) or
    ``d = buf``; without momentum ``d = g``; then ``p -= lr * d``.
    State: ``momentum_buffer`` (when momentum != 0)."""

    _name = "sgd"

    def __init__(self, params: Params, lr: float = 1e-3, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False,
                 *, maximize: bool = False, nonfinite: str = "propagate",
                 max_grad_norm: Union[float, None] = None,
                 **storage: Any):
        super().__init__(params, _storage(_hyper(locals()), storage))


class RMSprop(Optimizer):
    """RMSprop, optionally centered and with momentum (torch.optim.RMSprop's rule).

    Per param, with ``g`` as in :class:`SGD`: ``sq = alpha*sq + (1-alpha)*g*g``; centered:
    ``ga = alpha*ga + (1-alpha)*g``, ``avg = sqrt(sq - ga*ga) + eps``, else
    ``avg = sqrt(sq) + eps``; with momentum ``buf = momentum*buf + g/avg``, ``p -= lr*buf``,
    else ``p -= lr*g/avg``. State: ``square_avg``, ``momentum_buffer``, ``grad_avg``."""

    _name = "rmsprop"

    def __init__(self, params: Params, lr: float = 1e-2, alpha: float = 0.99,
                 eps: float = 1e-8, weight_decay: float = 0.0, momentum: float = 0.0,
                 centered: bool = False, *, maximize: bool = False,
                 nonfinite: str = "propagate", max_grad_norm: Union[float, None] = None,
                 **storage: Any):
        super().__init__(params, _storage(_hyper(locals()), storage))


class Adam(Optimizer):
    """Adam (Kingma & Ba, torch.optim.Adam's rule), with AMSGrad, optional bias correction
    and optional decoupled weight decay.

    Per param at step ``t``, with ``g`` the grad (times the gradient policy's factor,
    negated when ``maximize``), plus ``weight_decay * p`` (L2), or ``p *= 1 - lr*weight_decay``
    first (decoupled): ``m = b1*m + (1-b1)*g``; ``v = b2*v + (1-b2)*g*g``;
    ``bc1 = 1 - b1**t``, ``bc2 = 1 - b2**t`` (1 without bias correction); amsgrad:
    ``vmax = max(vmax, v)`` replaces ``v``; ``p -= (lr/bc1) * m / (sqrt(v)/sqrt(bc2) + eps)``.
    State: ``exp_avg`` (m), ``exp_avg_sq`` (v), ``max_exp_avg_sq`` (vmax)."""

    _name = "adam"

    def __init__(self, params: Params, lr: float = 1e-3,
                 betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False, *, maximize: bool = False,
                 bias_correction: bool = True, decoupled_weight_decay: bool = False,
                 nonfinite: str = "propagate", max_grad_norm: Union[float, None] = None,
                 **storage: Any):
        super().__init__(params, _storage(_hyper(locals()), storage))


class AdamW(Adam):
    """AdamW (torch.optim.AdamW's rule): :class:`Adam` with decoupled weight decay, default
    1e-2: ``p *= 1 - lr*weight_decay``, then ``m = b1*m + (1-b1)*g``,
    ``v = b2*v + (1-b2)*g*g``, ``p -= (lr/bc1) * m / (sqrt(v)/sqrt(bc2) + eps)``.
    Its weight decay is always decoupled: not a hyperparameter of its group."""

    _name = "adamw"

    def __init__(self, params: Params, lr: float = 1e-3,
                 betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *,
                 maximize: bool = False, bias_correction: bool = True,
                 nonfinite: str = "propagate", max_grad_norm: Union[float, None] = None,
                 **storage: Any):
        Optimizer.__init__(self, params, _storage(_hyper(locals()), storage))


class Lion(Optimizer):
    """Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms").

    Per param, with ``g`` the grad (times the gradient policy's factor, negated when
    ``maximize``): ``c = b1*m + (1-b1)*g``; ``p = p*(1 - lr*weight_decay) - lr*sign(c)``
    (sign(0) = 0); ``m = b2*m + (1-b2)*g``. State: ``exp_avg`` (m)."""

    _name = "lion"

    def __init__(self, params: Params, lr: float = 1e-4,
                 betas: Tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0, *,
                 maximize: bool = False, nonfinite: str = "propagate",
                 max_grad_norm: Union[float, None] = None,
                 **storage: Any):
        super().__init__(params, _storage(_hyper(locals()), storage))


class RAdam(Optimizer):
    """RAdam (Liu et al. 2020, torch.optim.RAdam's rule), with L2 or decoupled weight decay.

    Per param at step ``t``, with ``g`` the grad (times the gradient policy's factor,
    negated when ``maximize``), plus ``weight_decay * p`` (L2), or ``p *= 1 - lr*weight_decay``
    first (decoupled): ``m = lerp(m, g, 1-b1)``; ``v = b2*v + (1-b2)*g*g``;
    ``rho_inf = 2/(1-b2) - 1``, ``rho_t = rho_inf - 2*t*b2**t/(1-b2**t)``; while
    ``rho_t <= 5`` (the first steps) ``p -= lr * m/(1-b1**t)``, afterwards
    ``p -= lr * m/(1-b1**t) * sqrt(1-b2**t)/(sqrt(v) + eps) * rect`` with the variance
    rectification ``rect = sqrt((rho_t-4)(rho_t-2)rho_inf / ((rho_inf-4)(rho_inf-2)rho_t))``.
    State: ``exp_avg`` (m), ``exp_avg_sq`` (v)."""

    _name = "radam"

    def __init__(self, params: Params, lr: float = 1e-3,
                 betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, decoupled_weight_decay: bool = False, *,
                 maximize: bool = False, nonfinite: str = "propagate",
                 max_grad_norm: Union[float, None] = None,
                 **storage: Any):
        super().__init__(params, _storage(_hyper(locals()), storage))


class Rprop(Optimizer):
    """Rprop (Riedmiller & Braun 1993, torch.optim.Rprop's rule): per-element step sizes.

    Per param, with ``g`` the grad (times the gradient policy's factor, negated when
    ``maximize``) and ``prev`` the previous step's: where ``g*prev > 0`` the step size
    grows by ``etaplus``, where ``< 0`` it shrinks by ``etaminus`` and ``g`` counts as 0
    (no move this step), where ``= 0`` it stays; it is kept in ``[step_sizes[0],
    step_sizes[1]]``; ``p -= sign(g) * step_size``; ``prev = g``. ``lr`` is the initial
    step size. State: ``prev`` (zeros) and ``step_size`` (filled with ``lr``)."""

    _name = "rprop"

    def __init__(self, params: Params, lr: float = 1e-2,
                 etas: Tuple[float, float] = (0.5, 1.2),
                 step_sizes: Tuple[float, float] = (1e-6, 50), *, maximize: bool = False,
                 nonfinite: str = "propagate", max_grad_norm: Union[float, None] = None,
                 **storage: Any):
        super().__init__(params, _storage(_hyper(locals()), storage))


class Adagrad(Optimizer):
    """Adagrad (Duchi et al. 2011, torch.optim.Adagrad's rule).

    Per param at step ``t``, with ``g`` the grad (times the gradient policy's factor,
    negated when ``maximize``) plus ``weight_decay * p``:
    ``clr = lr / (1 + (t-1)*lr_decay)``; ``sum = sum + g*g``;
    ``p = p - clr*g / (sqrt(sum) + eps)``. State: ``sum``, which starts at
    ``initial_accumulator_value``."""

    _name = "adagrad"

    def __init__(self, params: Params, lr: float = 1e-2, lr_decay: float = 0.0,
                 weight_decay: float = 0.0, initial_accumulator_value: float = 0.0,
                 eps: float = 1e-10, *, maximize: bool = False,
                 nonfinite: str = "propagate", max_grad_norm: Union[float, None] = None,
                 **storage: Any):
        super().__init__(params, _storage(_hyper(locals()), storage))


class Adamax(Optimizer):
    """Adamax (Kingma & Ba's infinity-norm Adam, torch.optim.Adamax's rule).

    Per param at step ``t``, with ``g`` the grad (times the gradient policy's factor,
    negated when ``maximize``) plus ``weight_decay * p``: ``m = lerp(m, g, 1-b1)``;
    ``u = maximum(b2*u, |g| + eps)``; ``p = p - (lr / (1 - b1**t)) * m / u``.
    State: ``exp_avg`` (m), ``exp_inf`` (u)."""

    _name = "adamax"

    def __init__(self, params: Params, lr: float = 2e-3,
                 betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, *, maximize: bool = False,
                 nonfinite: str = "propagate", max_grad_norm: Union[float, None] = None,
                 **storage: Any):
        super().__init__(params, _storage(_hyper(locals()), storage))


class Adadelta(Optimizer):
    """Adadelta (Zeiler 2012, torch.optim.Adadelta's rule).

    Per param, with ``g`` the grad (times the gradient policy's factor, negated when
    ``maximize``) plus ``weight_decay * p``: ``sq = rho*sq + (1-rho)*g*g``;
    ``delta = sqrt(acc + eps) / sqrt(sq + eps) * g``; ``acc = rho*acc + (1-rho)*delta**2``;
    ``p = p - lr*delta``. State: ``square_avg`` (sq), ``acc_delta`` (acc)."""

    _name = "adadelta"

    def __init__(self, params: Params, lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6,
                 weight_decay: float = 0.0, *, maximize: bool = False,
                 nonfinite: str = "propagate", max_grad_norm: Union[float, None] = None,
                 **storage: Any):
        super().__init__(params, _storage(_hyper(locals()), storage))


class NAdam(Optimizer):
    """NAdam (Dozat 2016; torch.optim.NAdam's rule), with L2 or decoupled weight decay.

    Per param at step ``t``, with ``g`` as in :class:`Adam`:
    ``mu = b1*(1 - 0.5*0.96**(t*momentum_decay))``, ``mu_next`` the same at ``t+1``;
    ``mu_product *= mu``; ``m = lerp(m, g, 1-b1)``; ``v = b2*v + (1-b2)*g*g``;
    ``denom = sqrt(v/(1 - b2**t)) + eps``;
    ``p += -lr*(1-mu)/(1-mu_product) * g/denom``, then
    ``p += -lr*mu_next/(1 - mu_product*mu_next) * m/denom``.
    State: ``mu_product`` (a float32 0-d array, as torch's), ``exp_avg`` (m),
    ``exp_avg_sq`` (v)."""

    _name = "nadam"

    def __init__(self, params: Params, lr: float = 2e-3,
                 betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum_decay: float = 4e-3,
                 decoupled_weight_decay: bool = False, *, maximize: bool = False,
                 nonfinite: str = "propagate", max_grad_norm: Union[float, None] = None,
                 **storage: Any):
        super().__init__(params, _storage(_hyper(locals()), storage))


class ASGD(Optimizer):
    """ASGD, averaged SGD (torch.optim.ASGD's rule).

    Per param at step ``t``, with ``g`` as in :class:`SGD`:
    ``p = p*(1 - lambd*eta) - eta*g``; ``ax = ax + (p - ax)*mu`` (``ax = p`` while
    ``mu == 1``); then ``eta = lr / (1 + lambd*lr*t)**alpha``, ``mu = 1 / max(1, t - t0)``.
    State: ``eta`` (``lr`` at first) and ``mu`` (1 at first), float32 0-d arrays as torch's,
    and ``ax``, the averaged params."""

    _name = "asgd"

    def __init__(self, params: Params, lr: float = 1e-2, lambd: float = 1e-4,
                 alpha: float = 0.75, t0: float = 1e6, weight_decay: float = 0.0, *,
                 maximize: bool = False, nonfinite: str = "propagate",
                 max_grad_norm: Union[float, None] = None,
                 **storage: Any):
        super().__init__(params, _storage(_hyper(locals()), storage))
