"""Optimizer classes named and parameterised as in torch.optim.

Each holds its params, its state arrays (allocated when it is built) and one group of
hyperparameters, and steps every tensor in one native call through a :class:`_core.Plan`
made when it is built. Hyperparameters live in ``opt.param_groups[0]`` (as in torch) and may
be changed between steps; they are validated at every step.

Every optimizer also takes a gradient policy, applied inside the step:

- ``nonfinite="propagate" | "skip" | "raise"``: what a NaN or infinite gradient element
  does. ``"propagate"`` (the default, as torch) lets it flow into the update. ``"skip"``
  changes nothing, does not count the step, and makes :meth:`Optimizer.step` return False;
  ``"raise"`` changes nothing and raises FloatingPointError naming the array and index.
- ``max_grad_norm``: clip by the global 2-norm of all gradients, torch's
  ``clip_grad_norm_`` rule: ``g *= min(1, max_grad_norm / (norm + 1e-6))``.
- ``step(grads, grad_scale=s)``: the gradients are divided by ``s`` first (a loss
  scaler's unscale); the norm is that of the unscaled gradients.

The gradients themselves are never modified. With a check or clipping, the step reads every
gradient once more before the update (one read-only pass that computes the float64 norm and
finds NaN and inf together); the update then multiplies by one combined factor.
"""

from __future__ import annotations

import copy
import threading
from typing import Any, Dict, List, Mapping, Sequence, Tuple, Union

import numpy as np

from . import _core, _registry

Params = Union[Sequence[np.ndarray], Mapping[str, np.ndarray]]

__all__ = ["Optimizer", "SGD", "RMSprop", "Adam", "AdamW", "Lion", "Adagrad", "Adamax",
           "Adadelta", "RAdam", "Rprop", "NAdam", "ASGD"]


def _hyper(args: Dict[str, Any]) -> Dict[str, Any]:
    """A class's hyperparameters from its ``__init__``'s ``locals()``, in signature order."""
    return {k: v for k, v in args.items() if k not in ("self", "params", "__class__")}


class Optimizer:
    """Base class: params, state, one hyperparameter group, and a native plan.

    A subclass names its registry entry (fastadam/_registry.py) in ``_name``; its
    ``__init__`` passes its hyperparameters (those of the entry, then the gradient policy's
    ``nonfinite`` and ``max_grad_norm``) to this one. Which states exist, their initial
    values, the validation and the step all follow from the entry."""

    _name: str = ""

    def __init__(self, params: Params, defaults: Dict[str, Any]):
        if isinstance(params, Mapping):
            self._keys: List[Any] = list(params.keys())
            arrays = [params[k] for k in self._keys]
            self._is_dict = True
        elif isinstance(params, (list, tuple)):
            self._keys = list(range(len(params)))
            arrays = list(params)
            self._is_dict = False
        else:
            raise TypeError(f"Invalid params: expected a list/tuple of arrays or a dict "
                            f"name -> array, got {type(params).__name__}")
        if not arrays:
            raise ValueError("Invalid params: the optimizer got an empty parameter list")
        for key, p in zip(self._keys, arrays):
            _core.check_param(p, f"params[{key!r}]")
        self.defaults = dict(defaults)
        self.param_groups = [dict(defaults, params=arrays)]
        self._step_count = 0
        self._grad_norm: Union[float, None] = None
        # Serialises step, state_dict and load_state_dict across Python threads: the
        # kernels run without the GIL, and one step must never interleave with another.
        self._lock = threading.Lock()
        hyper = _core.validate(self._name, self.defaults)   # now, as torch
        entry = _registry.by_name(self._name)
        states = entry.states
        # Per-tensor scalar states (NAdam's mu_product, ...): float32 0-d arrays, as torch's
        # with its default dtype. Every param has one step count, so every param has the
        # same values: each param's is a 0-d view of one buffer per scalar, one native call
        # advances element 0 and the step copies it to the others.
        self._scalar_bufs = tuple(np.full(len(arrays), _initial(c, self.defaults),
                                          np.float32) for c in entry.scalars)
        self._scalars = tuple(b[0:1].reshape(()) for b in self._scalar_bufs) or None
        self.state: Dict[Any, Dict[str, Any]] = {
            key: {**{c.name: b[i:i + 1].reshape(())
                     for c, b in zip(entry.scalars, self._scalar_bufs)},
                  **{s.name: np.full(p.shape, _initial(s, self.defaults), p.dtype)
                     for s, need in zip(states, hyper.needs) if need}}
            for i, (key, p) in enumerate(zip(self._keys, arrays))
        }
        self._plan = _core.Plan(
            hyper.kernel, arrays,
            [tuple(self.state[k].get(s.name) for s in states) for k in self._keys],
            [repr(k) for k in self._keys])
        self._plan.check(hyper, 1, self.defaults["nonfinite"], self.defaults["max_grad_norm"],
                         scalars=self._scalars)

    # -- public API ------------------------------------------------------------------------
    @property
    def step_count(self) -> int:
        """How many steps this optimizer has taken."""
        return self._step_count

    @property
    def grad_norm(self) -> Union[float, None]:
        """The 2-norm of the last step's unscaled gradients, before clipping (None unless a
        ``nonfinite`` check or ``max_grad_norm`` made the step compute it; NaN or inf
        when a gradient was)."""
        return self._grad_norm

    def step(self, grads: Params, grad_scale: Union[float, None] = None) -> bool:
        """Update every param in place from ``grads`` (same structure as the params).

        ``grad_scale``: divide the gradients by this first (the loss scale of mixed
        precision training). Every grad, param and hyperparameter is validated before any
        array is written. Returns True when the update was applied, False when
        ``nonfinite="skip"`` skipped it (then nothing changed and the step is not counted).
        """
        if self._is_dict:
            if not isinstance(grads, Mapping):
                raise TypeError(f"Invalid grads: expected a dict like the params, "
                                f"got {type(grads).__name__}")
            if len(grads) != len(self._keys) or any(k not in grads for k in self._keys):
                missing = [k for k in self._keys if k not in grads]
                extra = [k for k in grads if k not in self.state]
                raise ValueError(f"Invalid grads: keys differ from the params' "
                                 f"(missing {missing}, unexpected {extra})")
            grads = [grads[k] for k in self._keys]
        with self._lock:
            group = self.param_groups[0]
            applied = self._plan.step(grads, _core.validate(self._name, group),
                                      self._step_count + 1, group["nonfinite"],
                                      group["max_grad_norm"], grad_scale, self._scalars)
            computed = group["nonfinite"] != "propagate" or group["max_grad_norm"] is not None
            self._grad_norm = self._plan.grad_norm if computed else None
            if applied:
                self._step_count += 1
                for b in self._scalar_bufs:
                    b[1:] = b[0]
        return applied

    def state_dict(self) -> Dict[str, Any]:
        """A copy of the state: ``{'state': {key: {'step': int, name: ndarray}},
        'param_groups': [{hyperparameters..., 'params': [keys]}]}``."""
        with self._lock:
            return self._state_dict()

    def _state_dict(self) -> Dict[str, Any]:
        group = copy.deepcopy({k: v for k, v in self.param_groups[0].items()
                               if k != "params"})
        group["params"] = list(self._keys)
        return {
            "state": {key: {"step": self._step_count,
                            **{name: arr.copy() for name, arr in st.items()}}
                      for key, st in self.state.items()},
            "param_groups": [group],
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`.

        Atomic: the keys, every array's dtype and shape, the steps and every hyperparameter
        are checked before anything changes; a rejected state leaves the optimizer exactly
        as it was."""
        with self._lock:
            self._load_state_dict(state_dict)

    def _load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        if not isinstance(state_dict, Mapping) or set(state_dict) != {"state", "param_groups"}:
            raise ValueError("Invalid state_dict: expected a dict with 'state' and "
                             "'param_groups'")
        groups, state = state_dict["param_groups"], state_dict["state"]
        if not isinstance(groups, (list, tuple)) or len(groups) != 1:
            raise ValueError("Invalid state_dict['param_groups']: expected one group")
        if not isinstance(groups[0], Mapping):
            raise ValueError(f"Invalid state_dict['param_groups'][0]: expected a dict, got "
                             f"{type(groups[0]).__name__}")
        group = copy.deepcopy(dict(groups[0]))
        if list(group.pop("params", None) or []) != self._keys:
            raise ValueError(f"Invalid state_dict['param_groups'][0]['params']: expected "
                             f"{self._keys}")
        if set(group) != set(self.defaults):
            raise ValueError(f"Invalid state_dict['param_groups'][0]: expected the keys "
                             f"{sorted(self.defaults)}, got {sorted(group)}")
        if not isinstance(state, Mapping) or set(state) != set(self.state):
            raise ValueError(f"Invalid state_dict['state']: expected the keys {self._keys}")
        steps = set()
        for key, ours in self.state.items():
            theirs = state[key]
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
            step = theirs["step"]
            if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
                raise ValueError(f"Invalid {where}['step']: expected an int >= 0")
            steps.add(int(step))
        if len(steps) != 1:
            raise ValueError("Invalid state_dict['state']: the params have different steps")
        for c in _registry.by_name(self._name).scalars:
            if len({state[key][c.name].tobytes() for key in self.state}) != 1:
                raise ValueError(f"Invalid state_dict['state']: the params have different "
                                 f"{c.name!r} (they share one step count, so one value)")
        first = state[self._keys[0]]
        scalars = tuple(np.array(first[c.name])
                        for c in _registry.by_name(self._name).scalars) or None
        self._plan.check(_core.validate(self._name, group), 1,
                         group["nonfinite"], group["max_grad_norm"], scalars=scalars)
        self.param_groups[0] = dict(group, params=self.param_groups[0]["params"])
        for key, ours in self.state.items():
            for name, arr in ours.items():
                np.copyto(arr, state[key][name])
        self._step_count = steps.pop()

    def __repr__(self) -> str:
        hyper = ", ".join(f"{k}={v!r}" for k, v in self.param_groups[0].items()
                          if k != "params")
        return f"{type(self).__name__}({len(self._keys)} params, {hyper})"


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
                 max_grad_norm: Union[float, None] = None):
        super().__init__(params, _hyper(locals()))


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
                 nonfinite: str = "propagate", max_grad_norm: Union[float, None] = None):
        super().__init__(params, _hyper(locals()))


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
                 nonfinite: str = "propagate", max_grad_norm: Union[float, None] = None):
        super().__init__(params, _hyper(locals()))


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
                 nonfinite: str = "propagate", max_grad_norm: Union[float, None] = None):
        Optimizer.__init__(self, params, _hyper(locals()))


class Lion(Optimizer):
    """Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms").

    Per param, with ``g`` the grad (times the gradient policy's factor, negated when
    ``maximize``): ``c = b1*m + (1-b1)*g``; ``p = p*(1 - lr*weight_decay) - lr*sign(c)``
    (sign(0) = 0); ``m = b2*m + (1-b2)*g``. State: ``exp_avg`` (m)."""

    _name = "lion"

    def __init__(self, params: Params, lr: float = 1e-4,
                 betas: Tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0, *,
                 maximize: bool = False, nonfinite: str = "propagate",
                 max_grad_norm: Union[float, None] = None):
        super().__init__(params, _hyper(locals()))


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
                 max_grad_norm: Union[float, None] = None):
        super().__init__(params, _hyper(locals()))


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
                 nonfinite: str = "propagate", max_grad_norm: Union[float, None] = None):
        super().__init__(params, _hyper(locals()))


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
                 nonfinite: str = "propagate", max_grad_norm: Union[float, None] = None):
        super().__init__(params, _hyper(locals()))


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
                 nonfinite: str = "propagate", max_grad_norm: Union[float, None] = None):
        super().__init__(params, _hyper(locals()))


class Adadelta(Optimizer):
    """Adadelta (Zeiler 2012, torch.optim.Adadelta's rule).

    Per param, with ``g`` the grad (times the gradient policy's factor, negated when
    ``maximize``) plus ``weight_decay * p``: ``sq = rho*sq + (1-rho)*g*g``;
    ``delta = sqrt(acc + eps) / sqrt(sq + eps) * g``; ``acc = rho*acc + (1-rho)*delta**2``;
    ``p = p - lr*delta``. State: ``square_avg`` (sq), ``acc_delta`` (acc)."""

    _name = "adadelta"

    def __init__(self, params: Params, lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6,
                 weight_decay: float = 0.0, *, maximize: bool = False,
                 nonfinite: str = "propagate", max_grad_norm: Union[float, None] = None):
        super().__init__(params, _hyper(locals()))


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
                 nonfinite: str = "propagate", max_grad_norm: Union[float, None] = None):
        super().__init__(params, _hyper(locals()))


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
                 max_grad_norm: Union[float, None] = None):
        super().__init__(params, _hyper(locals()))
