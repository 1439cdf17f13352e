"""The registry of optimizers the tests run over: one row per optimizer (the model is
torch's ``OptimizerInfo``, torch/testing/_internal/common_optimizers.py).

A row names the optimizer's NumPy class, its ``fastadam.torch`` and ``torch.optim`` class,
its functional kernel and that kernel's ``fastadam.reference`` twin; its arrays and state
arrays and when each state is present; its hyperparameters with their defaults; the option
sets worth testing (the full grid of its on/off options, each with one of a few non-default
scalar settings); and per hyperparameter its bad values, with the exception fastadam raises,
the argument its message names, and what ``torch.optim`` does with the same value at
construction.

Plain data: a new optimizer gets every registry-driven test (the kernel against its
reference, SIMD paths and thread counts, the NumPy class, torch parity, bad input,
state_dict corruption, fuzzing) by adding one ``OptimizerInfo`` to ``OPTIMIZERS``.

What a row must give for the kernel tests (tests/test_registry_kernels.py):

- ``kernel``, ``reference``, ``arrays``, ``states`` (each with ``sample``, the random
  values it starts from there: "normal", "pos" or a function; ``init``, the value the NumPy
  class starts it from; ``scalar`` for a per-tensor 0-d state), ``kernel_defaults`` and
  ``kernel_step``: the tests call
  ``kernel(*arrays, **optional states, **hyperparameters, step=t)`` and the reference the
  same way (``step`` left out when ``kernel_step`` is "none", and run both with and without
  it when "optional"). The kernel's hyperparameters are the option set's values for the
  names in ``kernel_defaults``, the class defaults filling in the rest.
- A per-tensor scalar state (NAdam's ``mu_product``, ASGD's ``eta`` and ``mu``) is a state
  with ``scalar=True``, named in ``arrays`` where the kernel takes it (after the state
  arrays): a 0-d array, float32 or float64 whatever the param's dtype (the kernel tests run
  both), float32 in the NumPy classes (``SCALAR_DTYPE``, torch's default dtype), compared
  exactly with torch.optim's.
- ``grad_sample``, when the gradients should be other than "normal" (Rprop: exact zeros of
  both signs, so that every branch of its sign rule runs): a function (rng, shape, dtype).
- ``fix_states``, when random states need a relation between them to keep the rule real
  (RMSprop centered: ``square_avg >= grad_avg**2``): a function that adjusts the dict of
  state arrays in place.
- ``kernel_call``, when the kernel is called otherwise:
  ``kernel_call(fn, param, grad, states, hyper, step)`` makes one call of ``fn`` (the
  kernel or the reference); ``states`` is the dict of the states (a call may keep more
  in it, as 0-d arrays: they are compared like the states).
- ``bitwise(hyper)``: whether the kernel does the reference's operations in its order for
  that configuration, so that it gives the reference's bits (else: the accuracy
  tolerances of docs/contract.md#accuracy, conftest.assert_close).
- ``torch_optim``: False for an optimizer torch.optim has no class for (Lion): the tests
  that compare with torch.optim are not generated for that row (``TORCH_OPTIMIZERS``,
  ``option_cases(torch_only=True)``, ``bad_cases(api, torch_optim=True)``), and
  ``fastadam.torch.<torch_name>`` is still tested on its own.
- ``torch_reload_dtypes``: the param dtypes whose checkpoint round trip with torch.optim
  (tests/test_torch_dropin.py) continues torch.optim's run to the accuracy tolerances.
"""

import itertools
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np

import fastadam
from fastadam import reference

NAN, INF = math.nan, math.inf


class NoTruthValue:
    """A flag value with no truth value (its ``__bool__`` raises), like a NumPy array of
    two elements, but of no NumPy type."""

    def __bool__(self):
        raise ValueError("no truth value")

    def __repr__(self):
        return "NoTruthValue()"


@dataclass(frozen=True)
class State:
    """One state array: its name, whether a configuration (the hyperparameters with the
    defaults filled in) has it, and an option change that makes a configuration without it
    need it (None: always present); ``sample``: how the kernel tests draw its random start;
    ``init``: the NumPy class's initial value (a number, or a hyperparameter's name);
    ``scalar``: one value per tensor (a 0-d array), not one per element."""
    name: str
    present: Callable[[Mapping[str, Any]], bool]
    enable: Optional[Dict[str, Any]] = None
    # the kernel tests' random start: "normal" (any real), "pos" (|normal|: second moments),
    # or a function (rng, shape, dtype) -> array
    sample: Any = "normal"
    # the NumPy class's initial value: a number or the name of a hyperparameter
    init: Any = 0.0
    # a per-tensor scalar (NAdam's mu_product): a 0-d float32 or float64 array
    scalar: bool = False

    def shape(self, param_shape):
        return () if self.scalar else param_shape


@dataclass(frozen=True)
class Bad:
    """A bad hyperparameter setting.

    ``over``: the hyperparameters to set (with whatever else the case needs);
    ``exc``: what fastadam raises (functional, NumPy class and fastadam.torch alike);
    ``arg``: the argument the message names first ("Invalid {arg}...");
    ``torch``: what ``torch.optim``'s constructor raises for it, None when it accepts it
    (fastadam is stricter there), or "n/a" for an option torch.optim does not have.
    ``where``: the APIs that take it ("functional", "class", "torch")."""
    over: Dict[str, Any]
    exc: type
    arg: str
    torch: Any = "n/a"
    where: Tuple[str, ...] = ("functional", "class", "torch")
    # True for an option only a constructor reads (Adagrad's initial_accumulator_value):
    # refused there, not by a step or a state_dict load (torch.optim ignores it then too).
    construction_only: bool = False

    @property
    def id(self):
        return ",".join(f"{k}={v!r}" for k, v in self.over.items())


ALL_APIS = ("functional", "class", "torch")
#: The dtype of the NumPy classes' per-tensor scalar states (torch's default dtype).
SCALAR_DTYPE = np.float32


@dataclass(frozen=True)
class OptimizerInfo:
    name: str                       # the NumPy class's name, also torch.optim's
    cls: type                       # fastadam.<name>
    kernel: Callable                # fastadam.<kernel>_
    reference: Callable             # fastadam.reference.<kernel>_
    arrays: Tuple[str, ...]         # the arrays the kernel takes positionally, in order
    states: Tuple[State, ...]       # every state array (positional ones first), in order
    defaults: Dict[str, Any]        # the NumPy class's hyperparameters and defaults
    kernel_defaults: Dict[str, Any]  # the functional kernel's (its keyword hyperparameters)
    flags: Dict[str, Tuple[Any, ...]]    # the on/off axes of the option grid
    scalars: Tuple[Dict[str, Any], ...]  # non-default scalar settings, cycled over the grid
    extra_sets: Tuple[Dict[str, Any], ...] = ()   # further option sets
    requires: Callable[[Mapping[str, Any]], bool] = lambda h: True   # valid combinations
    bad: Tuple[Bad, ...] = ()
    numpy_only: Tuple[str, ...] = ()     # class hyperparameters torch.optim does not have
    kernel_step: str = "optional"        # the kernel's ``step``: "required", "optional", "none"
    torch_has_step: bool = True          # whether torch.optim keeps state['step']
    torch_name: Optional[str] = None     # fastadam.torch / torch.optim class name
    torch_optim: bool = True             # whether torch.optim has that class
    # the kernel tests (see the module docstring)
    bitwise: Callable[[Mapping[str, Any]], bool] = lambda h: False
    fix_states: Optional[Callable[[Dict[str, Any]], None]] = None
    kernel_call: Optional[Callable[..., None]] = None
    grad_sample: Any = "normal"     # how the kernel tests draw gradients (as State.sample)
    torch_reload_dtypes: Tuple[str, ...] = ("float32", "float64")

    def __post_init__(self):
        if self.torch_name is None:
            object.__setattr__(self, "torch_name", self.name)

    # -- derived ---------------------------------------------------------------------------
    @property
    def kernel_name(self):
        return self.kernel.__name__

    @property
    def optional(self):
        """The state arrays the kernel takes by keyword."""
        return tuple(s.name for s in self.states if s.name not in self.arrays)

    @property
    def scalar_names(self):
        """The per-tensor scalar states, in the kernel's order."""
        return tuple(n for n in self.arrays if n in {s.name for s in self.states if s.scalar})

    def full(self, hyper):
        """``hyper`` with the class defaults filled in."""
        return {**self.defaults, **hyper}

    def state_names(self, hyper):
        """The states a NumPy-class optimizer built with ``hyper`` holds, in order."""
        h = self.full(hyper)
        return [s.name for s in self.states if s.present(h)]

    def option_sets(self):
        """Every combination of the on/off options (the invalid ones left out), each with
        one of the non-default scalar settings in turn, then the extra sets."""
        names = list(self.flags)
        out = []
        for values in itertools.product(*(self.flags[n] for n in names)):
            h = dict(zip(names, values))
            if self.requires(self.full(h)):
                out.append(h)
        out = [{**self.scalars[i % len(self.scalars)], **h} for i, h in enumerate(out)]
        return out + [dict(h) for h in self.extra_sets]

    def torch_has(self, hyper):
        """Whether torch.optim has option set ``hyper`` (none of the NumPy-only options
        changed; for a row without a torch.optim class, whether fastadam.torch has it)."""
        return all(hyper.get(k, self.defaults[k]) == self.defaults[k] for k in self.numpy_only)

    def torch_option_sets(self):
        """The option sets torch.optim has."""
        return [h for h in self.option_sets() if self.torch_has(h)]

    def torch_kwargs(self, hyper):
        """``hyper`` for torch.optim / fastadam.torch (the NumPy-only options dropped)."""
        return {k: v for k, v in hyper.items() if k not in self.numpy_only}

    def rich(self):
        """An option set with every state present (for state_dict and bad-input tests)."""
        for h in self.option_sets():
            if len(self.state_names(h)) == len(self.states):
                return h
        raise AssertionError(f"{self.name}: no option set has every state")

    def richest(self):
        """Among the option sets torch.optim has, one with every state and the most on/off
        options on (a true value other than the default; the first such set): for tests
        that want most branches of a step in one configuration."""
        def on(h):
            f = self.full(h)
            return sum(1 for k in self.flags if f[k] != self.defaults[k] and bool(f[k]))
        full = [h for h in self.torch_option_sets()
                if len(self.state_names(h)) == len(self.states)]
        return max(full, key=on)

    def bad_for(self, api, construction=False):
        """The bad values ``api`` refuses at every step (and, with ``construction``, those
        only a constructor refuses)."""
        return [b for b in self.bad
                if api in b.where and (construction or not b.construction_only)]

    def kernel_hyper(self, hyper):
        """The functional kernel's hyperparameters for option set ``hyper`` (the class
        defaults filling in what ``hyper`` leaves out)."""
        h = self.full(hyper)
        return {k: h.get(k, v) for k, v in self.kernel_defaults.items()}

    def initial_states(self, hyper, like):
        """The states the NumPy class starts a param ``like`` with, for ``hyper``."""
        h = self.full(hyper)
        return {s.name: np.full(s.shape(like.shape),
                                h[s.init] if isinstance(s.init, str) else s.init,
                                SCALAR_DTYPE if s.scalar else like.dtype)
                for s in self.states if s.present(h)}

    def call(self, fn, param, grad, states, hyper, step):
        """One call of ``fn`` (the kernel or its reference) at 1-based ``step`` (None: no
        step argument) on ``states`` (name -> array, the option set's states), with the
        kernel hyperparameters of option set ``hyper``; returns what ``fn`` returns."""
        if self.kernel_call is not None:
            return self.kernel_call(fn, param, grad, states, hyper, step)
        kw = self.kernel_hyper(hyper)
        kw.update({n: states[n] for n in self.optional if n in states})
        if step is not None and self.kernel_step != "none":
            kw["step"] = step
        return fn(param, grad, *(states[n] for n in self.arrays[2:]), **kw)


# A small conv net trained with each of these, against torch.optim over seeds and dtypes
# (tests/test_torch_dropin.py's training tests; bench/parity_report.py's figures).
# (optimizer, hyperparameters, loss sign: maximize climbs -loss)
TRAINING_CASES = [
    ("Adam", {}, 1.0),
    ("Adam", dict(lr=3e-3, amsgrad=True, weight_decay=1e-2), 1.0),
    ("Adam", dict(lr=3e-3, maximize=True), -1.0),
    ("Adam", dict(weight_decay=0.1, decoupled_weight_decay=True), 1.0),
    ("AdamW", {}, 1.0),
    ("AdamW", dict(lr=3e-3, amsgrad=True, weight_decay=0.05), 1.0),
    ("SGD", dict(lr=0.02), 1.0),
    ("SGD", dict(lr=0.01, momentum=0.9), 1.0),
    ("SGD", dict(lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-3), 1.0),
    ("SGD", dict(lr=0.01, momentum=0.9, dampening=0.3, maximize=True), -1.0),
    ("RMSprop", dict(lr=1e-3), 1.0),
    ("RMSprop", dict(lr=1e-3, centered=True), 1.0),
    ("RMSprop", dict(lr=1e-3, momentum=0.5, weight_decay=1e-2), 1.0),
    ("RMSprop", dict(lr=1e-3, centered=True, momentum=0.5, maximize=True), -1.0),
    ("Adagrad", dict(lr=1e-2, lr_decay=1e-3, initial_accumulator_value=0.1), 1.0),
    ("Adamax", dict(weight_decay=1e-2), 1.0),
    ("Adadelta", {}, 1.0),
    ("RAdam", {}, 1.0),
    ("RAdam", dict(weight_decay=1e-2, decoupled_weight_decay=True), 1.0),
    ("NAdam", {}, 1.0),
    ("NAdam", dict(weight_decay=1e-2, decoupled_weight_decay=True, maximize=True), -1.0),
    ("Rprop", dict(lr=1e-3), 1.0),
    ("ASGD", dict(lr=1e-2, t0=5), 1.0),
]


# ---------------------------------------------------------------------------- bad values

def _nonneg(name, torch_nan=ValueError, torch_inf=None, torch_type=TypeError):
    """A finite real >= 0 (lr, momentum, weight_decay, alpha). ``torch_*``: what
    torch.optim does with NaN, inf and a non-number (its checks are ``x < 0`` or
    ``not 0 <= x``, so NaN passes the first and inf both)."""
    return [
        Bad({name: -1.0}, ValueError, name, ValueError),
        Bad({name: -1e-300}, ValueError, name, ValueError),
        Bad({name: NAN}, ValueError, name, torch_nan),
        Bad({name: INF}, ValueError, name, torch_inf),
        Bad({name: "0.1"}, TypeError, name, torch_type),
        Bad({name: None}, TypeError, name, torch_type),
        Bad({name: 1j}, TypeError, name, torch_type),
        Bad({name: np.array([0.5, 0.5])}, TypeError, name, ValueError),
    ]


def _finite(name):
    """Any finite real (SGD's dampening, ASGD's lambd, alpha and t0): torch.optim does not
    check these at all."""
    return [Bad({name: NAN}, ValueError, name, None),
            Bad({name: INF}, ValueError, name, None),
            Bad({name: -INF}, ValueError, name, None),
            Bad({name: "0.1"}, TypeError, name, None),
            Bad({name: None}, TypeError, name, None),
            Bad({name: np.array([0.1, 0.1])}, TypeError, name, None)]


def _flag(name, torch_value=None, where=ALL_APIS, **needs):
    """An on/off option: anything with a truth value is accepted (a string or None too);
    a value without one is a TypeError naming the option. torch.optim stores most flags
    unchecked (None), tests some at construction (ValueError from NumPy's bool)."""
    return [Bad({**needs, name: np.array([1, 2])}, TypeError, name, torch_value, where),
            Bad({**needs, name: np.array([])}, TypeError, name, torch_value, where),
            Bad({**needs, name: NoTruthValue()}, TypeError, name, torch_value, where)]


def _policy():
    """The NumPy classes' gradient policy (not in torch.optim)."""
    c = ("class",)
    return [
        Bad({"nonfinite": "ignore"}, ValueError, "nonfinite", where=c),
        Bad({"nonfinite": "Skip"}, ValueError, "nonfinite", where=c),
        Bad({"nonfinite": ""}, ValueError, "nonfinite", where=c),
        Bad({"nonfinite": None}, TypeError, "nonfinite", where=c),
        Bad({"nonfinite": 1}, TypeError, "nonfinite", where=c),
        Bad({"nonfinite": True}, TypeError, "nonfinite", where=c),
        Bad({"max_grad_norm": 0.0}, ValueError, "max_grad_norm", where=c),
        Bad({"max_grad_norm": -1.0}, ValueError, "max_grad_norm", where=c),
        Bad({"max_grad_norm": NAN}, ValueError, "max_grad_norm", where=c),
        Bad({"max_grad_norm": INF}, ValueError, "max_grad_norm", where=c),
        Bad({"max_grad_norm": "1"}, TypeError, "max_grad_norm", where=c),
        Bad({"max_grad_norm": True}, TypeError, "max_grad_norm", where=c),
    ]


#: Bad ``grad_scale`` values for ``opt.step(grads, grad_scale=...)``.
BAD_GRAD_SCALES = [(0.0, ValueError), (-1.0, ValueError), (NAN, ValueError),
                   (INF, ValueError), (-INF, ValueError), ("2", TypeError),
                   (True, TypeError), (1j, TypeError), (np.array([2.0, 2.0]), TypeError),
                   (np.array([2.0]), TypeError)]     # (float() would take one element)

#: Bad ``step`` values for a functional kernel.
BAD_STEPS = [
    Bad({"step": 0}, ValueError, "step", where=("functional",)),
    Bad({"step": -1}, ValueError, "step", where=("functional",)),
    Bad({"step": 1.5}, TypeError, "step", where=("functional",)),
    Bad({"step": 1.0}, TypeError, "step", where=("functional",)),
    Bad({"step": True}, TypeError, "step", where=("functional",)),
    Bad({"step": "2"}, TypeError, "step", where=("functional",)),
    Bad({"step": np.array([3])}, TypeError, "step", where=("functional",)),
    Bad({"step": 2**64}, ValueError, "step", where=("functional",)),
]


def _eps(torch_zero=None):
    """eps: a finite real > 0 (torch.optim also accepts 0)."""
    return [Bad({"eps": 0.0}, ValueError, "eps", torch_zero),
            Bad({"eps": -1e-8}, ValueError, "eps", ValueError),
            Bad({"eps": NAN}, ValueError, "eps", ValueError),
            Bad({"eps": INF}, ValueError, "eps", None),
            Bad({"eps": "1e-8"}, TypeError, "eps", TypeError),
            Bad({"eps": None}, TypeError, "eps", TypeError)]


def _betas():
    return [
        Bad({"betas": (-0.1, 0.999)}, ValueError, "betas[0]", ValueError),
        Bad({"betas": (1.0, 0.999)}, ValueError, "betas[0]", ValueError),
        Bad({"betas": (NAN, 0.999)}, ValueError, "betas[0]", ValueError),
        Bad({"betas": (0.9, -0.1)}, ValueError, "betas[1]", ValueError),
        Bad({"betas": (0.9, 1.0)}, ValueError, "betas[1]", ValueError),
        Bad({"betas": (0.9, NAN)}, ValueError, "betas[1]", ValueError),
        Bad({"betas": (0.9, INF)}, ValueError, "betas[1]", ValueError),
        Bad({"betas": ("a", 0.999)}, TypeError, "betas[0]", TypeError),
        Bad({"betas": (0.9, None)}, TypeError, "betas[1]", TypeError),
        Bad({"betas": (0.9,)}, TypeError, "betas", IndexError),
        Bad({"betas": (0.9, 0.99, 0.9)}, TypeError, "betas", None),
        Bad({"betas": 0.9}, TypeError, "betas", TypeError),
        Bad({"betas": None}, TypeError, "betas", TypeError),
        Bad({"betas": "ab"}, TypeError, "betas", TypeError),
    ]


# ---------------------------------------------------------------------------- the rows

_POLICY = dict(nonfinite="propagate", max_grad_norm=None, rounding="nearest", seed=0)

SGD = OptimizerInfo(
    name="SGD", cls=fastadam.SGD, kernel=fastadam.sgd_, reference=reference.sgd_,
    arrays=("param", "grad"),
    states=(State("momentum_buffer", lambda h: h["momentum"] != 0, dict(momentum=0.9)),),
    defaults=dict(lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
                  maximize=False, **_POLICY),
    kernel_defaults=dict(lr=1e-3, momentum=0.0, dampening=0.0, nesterov=False,
                         weight_decay=0.0, maximize=False),
    flags=dict(momentum=(0.0, 0.9), nesterov=(False, True), dampening=(0.0, 0.3),
               weight_decay=(0.0, 1e-2), maximize=(False, True)),
    scalars=(dict(lr=1e-2), dict(lr=5e-2), dict(lr=3e-3)),
    # dampening is any finite number (torch.optim does not check it at all)
    extra_sets=(dict(lr=1e-2, momentum=0.5, dampening=-0.5),
                dict(lr=1e-2, momentum=0.9, dampening=1.0, weight_decay=1e-2)),
    requires=lambda h: not h["nesterov"] or (h["momentum"] > 0 and h["dampening"] == 0),
    bad=tuple(
        # torch.optim.SGD checks ``lr < 0``, so NaN passes it
        _nonneg("lr", torch_nan=None)
        + [Bad({"lr": True}, TypeError, "lr", None)]
        + _nonneg("momentum", torch_nan=None)
        + _nonneg("weight_decay", torch_nan=None)
        + _finite("dampening")
        + [Bad({"nesterov": True, "momentum": 0.0}, ValueError, "nesterov", ValueError),
           Bad({"nesterov": True, "momentum": 0.9, "dampening": 0.1}, ValueError, "nesterov",
               ValueError),
           Bad({"nesterov": True, "momentum": 0.9, "dampening": -0.1}, ValueError, "nesterov",
               ValueError)]
        # torch.optim.SGD evaluates ``nesterov and ...``: NumPy's ValueError
        + _flag("nesterov", torch_value=ValueError, momentum=0.9)
        + _flag("maximize")
        + BAD_STEPS + _policy()),
    torch_has_step=False,
    bitwise=lambda h: True,
)

RMSPROP = OptimizerInfo(
    name="RMSprop", cls=fastadam.RMSprop, kernel=fastadam.rmsprop_,
    reference=reference.rmsprop_,
    arrays=("param", "grad", "square_avg"),
    states=(State("square_avg", lambda h: True, sample="pos"),
            State("momentum_buffer", lambda h: h["momentum"] != 0, dict(momentum=0.5)),
            State("grad_avg", lambda h: bool(h["centered"]), dict(centered=True))),
    defaults=dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                  centered=False, maximize=False, **_POLICY),
    kernel_defaults=dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                         centered=False, maximize=False),
    flags=dict(centered=(False, True), momentum=(0.0, 0.5), weight_decay=(0.0, 1e-2),
               maximize=(False, True)),
    scalars=(dict(lr=1e-3), dict(lr=1e-3, alpha=0.9, eps=1e-6),
             dict(lr=3e-3, alpha=0.5, eps=1e-3)),
    extra_sets=(dict(lr=1e-3, alpha=0.0, eps=1e-4, momentum=0.9),),
    bad=tuple(
        _nonneg("lr") + _nonneg("alpha") + _nonneg("momentum") + _nonneg("weight_decay")
        + _eps() + _flag("centered") + _flag("maximize") + _policy()),
    kernel_step="none",
    bitwise=lambda h: True,
    fix_states=lambda s: s.update(square_avg=s["square_avg"] + s["grad_avg"] ** 2)
    if "grad_avg" in s else None,
)

_ADAM_STATES = (State("exp_avg", lambda h: True),
                State("exp_avg_sq", lambda h: True, sample="pos"),
                State("max_exp_avg_sq", lambda h: bool(h["amsgrad"]), dict(amsgrad=True),
                      sample="pos"))
# Adam's kernel folds the bias corrections into its constants (lr/bc1, 1/sqrt(bc2)), the
# reference divides: the same bits without bias correction only.
_ADAM_BITWISE = lambda h: not h["bias_correction"]  # noqa: E731
_ADAM_SCALARS = (dict(lr=3e-3), dict(lr=1e-2, betas=(0.8, 0.95), eps=1e-6),
                 dict(lr=1e-3, betas=(0.5, 0.9), eps=1e-3))
_ADAM_BAD = (_nonneg("lr") + _betas() + _eps() + _nonneg("weight_decay")
             + _flag("amsgrad") + _flag("maximize")
             + _flag("bias_correction", where=("functional", "class")))

ADAM = OptimizerInfo(
    name="Adam", cls=fastadam.Adam, kernel=fastadam.adam_, reference=reference.adam_,
    arrays=("param", "grad", "exp_avg", "exp_avg_sq"), states=_ADAM_STATES,
    defaults=dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
                  maximize=False, bias_correction=True, decoupled_weight_decay=False,
                  **_POLICY),
    kernel_defaults=dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                         amsgrad=False, maximize=False, bias_correction=True,
                         decoupled_weight_decay=False),
    flags=dict(amsgrad=(False, True), weight_decay=(0.0, 1e-2), maximize=(False, True),
               decoupled_weight_decay=(False, True), bias_correction=(True, False)),
    scalars=_ADAM_SCALARS,
    extra_sets=(dict(lr=1e-2, betas=(0.0, 0.0), eps=1e-4, amsgrad=True),
                dict(lr=1e-2, betas=[0.9, 0.99], weight_decay=0.1,
                     decoupled_weight_decay=True)),
    bad=tuple(_ADAM_BAD + _flag("decoupled_weight_decay") + BAD_STEPS
              + [Bad({"step": None}, TypeError, "step", where=("functional",))] + _policy()),
    numpy_only=("bias_correction",),
    kernel_step="required",
    bitwise=_ADAM_BITWISE,
)

ADAMW = OptimizerInfo(
    name="AdamW", cls=fastadam.AdamW, kernel=fastadam.adamw_, reference=reference.adamw_,
    arrays=("param", "grad", "exp_avg", "exp_avg_sq"), states=_ADAM_STATES,
    defaults=dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False,
                  maximize=False, bias_correction=True, **_POLICY),
    kernel_defaults=dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                         amsgrad=False, maximize=False, bias_correction=True),
    flags=dict(amsgrad=(False, True), weight_decay=(1e-2, 0.0, 0.1), maximize=(False, True),
               bias_correction=(True, False)),
    scalars=_ADAM_SCALARS,
    bad=tuple(_ADAM_BAD + BAD_STEPS
              + [Bad({"step": None}, TypeError, "step", where=("functional",))] + _policy()),
    numpy_only=("bias_correction",),
    kernel_step="required",
    bitwise=_ADAM_BITWISE,
)

LION = OptimizerInfo(
    name="Lion", cls=fastadam.Lion, kernel=fastadam.lion_, reference=reference.lion_,
    arrays=("param", "grad", "exp_avg"), states=(State("exp_avg", lambda h: True),),
    defaults=dict(lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, maximize=False, **_POLICY),
    kernel_defaults=dict(lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, maximize=False),
    flags=dict(weight_decay=(0.0, 0.1), maximize=(False, True)),
    scalars=(dict(lr=1e-2), dict(lr=3e-3, betas=(0.8, 0.95)), dict(lr=1e-2, betas=(0.0, 0.5))),
    extra_sets=(dict(lr=1e-2, betas=(0.0, 0.0), weight_decay=0.5, maximize=True),
                dict(lr=1e-3, betas=[0.95, 0.98], weight_decay=1e-2)),
    bad=tuple(_nonneg("lr") + _betas() + _nonneg("weight_decay") + _flag("maximize")
              + _policy()),
    kernel_step="none",
    torch_has_step=False,       # lion-pytorch's state: exp_avg alone
    torch_optim=False,          # fastadam.torch.Lion only (lion-pytorch's format)
    bitwise=lambda h: True,     # the kernel does the reference's operations in its order
)

_STEP_BAD = BAD_STEPS + [Bad({"step": None}, TypeError, "step", where=("functional",))]

ADAGRAD = OptimizerInfo(
    name="Adagrad", cls=fastadam.Adagrad, kernel=fastadam.adagrad_,
    reference=reference.adagrad_,
    arrays=("param", "grad", "sum"),
    # initial_accumulator_value: the classes' initial ``sum`` (not a kernel argument)
    states=(State("sum", lambda h: True, sample="pos", init="initial_accumulator_value"),),
    defaults=dict(lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
                  eps=1e-10, maximize=False, **_POLICY),
    kernel_defaults=dict(lr=1e-2, lr_decay=0.0, weight_decay=0.0, eps=1e-10,
                         maximize=False),
    flags=dict(lr_decay=(0.0, 0.05), weight_decay=(0.0, 1e-2), maximize=(False, True)),
    scalars=(dict(lr=3e-2), dict(lr=1e-1, eps=1e-6), dict(lr=1e-2, eps=1e-3)),
    extra_sets=(dict(lr=0.5, lr_decay=1.0, weight_decay=0.5, eps=1e-8),),
    bad=tuple(
        # torch.optim.Adagrad checks ``not 0.0 <= x``: NaN fails it, inf passes
        _nonneg("lr") + _nonneg("lr_decay") + _nonneg("weight_decay")
        + [Bad(b.over, b.exc, b.arg, b.torch, ("class", "torch"), construction_only=True)
           for b in _nonneg("initial_accumulator_value")
           + [Bad({"initial_accumulator_value": True}, TypeError, "initial_accumulator_value",
                  None)]]
        + _eps() + _flag("maximize") + _STEP_BAD + _policy()),
    kernel_step="required",
    bitwise=lambda h: True,     # the kernel does the reference's operations in its order
)

ADAMAX = OptimizerInfo(
    name="Adamax", cls=fastadam.Adamax, kernel=fastadam.adamax_, reference=reference.adamax_,
    arrays=("param", "grad", "exp_avg", "exp_inf"),
    states=(State("exp_avg", lambda h: True), State("exp_inf", lambda h: True, sample="pos")),
    defaults=dict(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, maximize=False,
                  **_POLICY),
    kernel_defaults=dict(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                         maximize=False),
    flags=dict(weight_decay=(0.0, 1e-2), maximize=(False, True)),
    # beta1 = 0.2 and 0.0 take torch's lerp from the far end (weight 1 - beta1 >= 0.5)
    scalars=(dict(lr=1e-2), dict(lr=1e-2, betas=(0.2, 0.95), eps=1e-6),
             dict(lr=3e-3, betas=(0.5, 0.9), eps=1e-3)),
    extra_sets=(dict(lr=1e-2, betas=(0.0, 0.0), eps=1e-4, weight_decay=0.1),
                dict(lr=1e-2, betas=[0.95, 0.99], maximize=True)),
    bad=tuple(_nonneg("lr") + _betas() + _eps() + _nonneg("weight_decay")
              + _flag("maximize") + _STEP_BAD + _policy()),
    kernel_step="required",
    bitwise=lambda h: True,     # the kernel does the reference's operations in its order
)

ADADELTA = OptimizerInfo(
    name="Adadelta", cls=fastadam.Adadelta, kernel=fastadam.adadelta_,
    reference=reference.adadelta_,
    arrays=("param", "grad", "square_avg", "acc_delta"),
    states=(State("square_avg", lambda h: True, sample="pos"),
            State("acc_delta", lambda h: True, sample="pos")),
    defaults=dict(lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, maximize=False, **_POLICY),
    kernel_defaults=dict(lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, maximize=False),
    flags=dict(weight_decay=(0.0, 1e-2), maximize=(False, True)),
    scalars=(dict(lr=0.5), dict(lr=1.0, rho=0.5, eps=1e-4), dict(lr=2.0, rho=0.99, eps=1e-8)),
    # rho's ends: 0 (no memory) and 1 (torch.optim allows it: the averages stay put)
    extra_sets=(dict(lr=1.0, rho=0.0, weight_decay=0.1), dict(lr=0.1, rho=1.0, eps=1e-3)),
    bad=tuple(
        # torch.optim.Adadelta checks ``not 0.0 <= rho <= 1.0``: NaN and inf fail it
        _nonneg("lr") + _nonneg("rho", torch_inf=ValueError)
        + [Bad({"rho": 1.5}, ValueError, "rho", ValueError),
           Bad({"rho": 1.0 + 2.0**-52}, ValueError, "rho", ValueError)]
        + _eps() + _nonneg("weight_decay") + _flag("maximize") + _policy()),
    kernel_step="none",
    bitwise=lambda h: True,     # the kernel does the reference's operations in its order
)

RADAM = OptimizerInfo(
    name="RAdam", cls=fastadam.RAdam, kernel=fastadam.radam_, reference=reference.radam_,
    arrays=("param", "grad", "exp_avg", "exp_avg_sq"),
    states=(State("exp_avg", lambda h: True),
            State("exp_avg_sq", lambda h: True, sample="pos")),
    defaults=dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                  decoupled_weight_decay=False, maximize=False, **_POLICY),
    kernel_defaults=dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                         decoupled_weight_decay=False, maximize=False),
    flags=dict(weight_decay=(0.0, 1e-2), decoupled_weight_decay=(False, True),
               maximize=(False, True)),
    scalars=_ADAM_SCALARS,
    # beta2 0.6 (rho_inf = 4) and 0 (rho_inf = 1): never rectified; else from step 6 on
    extra_sets=(dict(lr=1e-2, betas=(0.5, 0.9), eps=1e-6),
                dict(lr=1e-2, betas=(0.9, 0.6), weight_decay=0.1),
                dict(lr=1e-2, betas=(0.0, 0.0), eps=1e-4),
                dict(lr=1e-2, betas=[0.9, 0.99], weight_decay=0.1,
                     decoupled_weight_decay=True)),
    bad=tuple(_nonneg("lr") + _betas() + _eps() + _nonneg("weight_decay")
              + _flag("decoupled_weight_decay") + _flag("maximize") + BAD_STEPS
              + [Bad({"step": None}, TypeError, "step", where=("functional",))] + _policy()),
    kernel_step="required",
    bitwise=lambda h: True,     # the kernel does the reference's operations in its order
)

def _etas():
    """Rprop's etas: a pair of finite reals with 0 < etaminus < 1 < etaplus (torch.optim's
    check, a ValueError; it accepts an infinite etaplus, fastadam does not)."""
    return [
        Bad({"etas": (0.0, 1.2)}, ValueError, "etas", ValueError),
        Bad({"etas": (-0.5, 1.2)}, ValueError, "etas", ValueError),
        Bad({"etas": (1.0, 1.2)}, ValueError, "etas", ValueError),
        Bad({"etas": (0.5, 1.0)}, ValueError, "etas", ValueError),
        Bad({"etas": (1.2, 0.5)}, ValueError, "etas", ValueError),
        Bad({"etas": [0.5, 0.9]}, ValueError, "etas", ValueError),
        Bad({"etas": (NAN, 1.2)}, ValueError, "etas[0]", ValueError),
        Bad({"etas": (0.5, NAN)}, ValueError, "etas[1]", ValueError),
        Bad({"etas": (0.5, INF)}, ValueError, "etas[1]", None),
        Bad({"etas": ("a", 1.2)}, TypeError, "etas[0]", TypeError),
        Bad({"etas": (0.5, None)}, TypeError, "etas[1]", TypeError),
        Bad({"etas": (0.5, 1j)}, TypeError, "etas[1]", TypeError),
        Bad({"etas": (0.5,)}, TypeError, "etas", IndexError),
        Bad({"etas": (0.5, 1.2, 2.0)}, TypeError, "etas", None),
        Bad({"etas": 0.5}, TypeError, "etas", TypeError),
        Bad({"etas": None}, TypeError, "etas", TypeError),
        Bad({"etas": "ab"}, TypeError, "etas", TypeError),
    ]


def _step_sizes():
    """Rprop's step_sizes: any pair of finite reals (torch.optim does not check it at all:
    it unpacks it at the first step)."""
    return [
        Bad({"step_sizes": (NAN, 50.0)}, ValueError, "step_sizes[0]", None),
        Bad({"step_sizes": (-INF, 50.0)}, ValueError, "step_sizes[0]", None),
        Bad({"step_sizes": (1e-6, INF)}, ValueError, "step_sizes[1]", None),
        Bad({"step_sizes": (1e-6, NAN)}, ValueError, "step_sizes[1]", None),
        Bad({"step_sizes": ("a", 50.0)}, TypeError, "step_sizes[0]", None),
        Bad({"step_sizes": (1e-6, None)}, TypeError, "step_sizes[1]", None),
        Bad({"step_sizes": (1e-6,)}, TypeError, "step_sizes", None),
        Bad({"step_sizes": (1e-6, 1.0, 50.0)}, TypeError, "step_sizes", None),
        Bad({"step_sizes": 1.0}, TypeError, "step_sizes", None),
        Bad({"step_sizes": None}, TypeError, "step_sizes", None),
    ]


def _rprop_grad(rng, shape, dtype):
    """Normal, a fifth of the elements +0 and a tenth -0: every branch of the sign rule."""
    g, u = rng.standard_normal(shape), rng.random(shape)
    return np.array(np.where(u < 0.2, 0.0, np.where(u < 0.3, -0.0, g)), dtype)


RPROP = OptimizerInfo(
    name="Rprop", cls=fastadam.Rprop, kernel=fastadam.rprop_, reference=reference.rprop_,
    arrays=("param", "grad", "prev", "step_size"),
    states=(State("prev", lambda h: True),
            State("step_size", lambda h: True, init="lr", sample="pos")),
    defaults=dict(lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50), maximize=False,
                  **_POLICY),
    kernel_defaults=dict(lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50), maximize=False),
    flags=dict(maximize=(False, True)),
    scalars=(dict(lr=1e-2), dict(lr=5e-2, etas=(0.3, 1.5), step_sizes=(1e-3, 0.2))),
    # step_sizes[0] > step_sizes[1]: every step size becomes step_sizes[1] (the clamp's
    # order); a negative lower bound; small etas that flip often
    extra_sets=(dict(lr=1e-2, step_sizes=(0.5, 0.02)),
                dict(lr=2e-2, etas=[0.9, 1.1], step_sizes=[-1.0, 0.05]),
                dict(lr=1e-3, etas=(0.01, 3.0), step_sizes=(1e-4, 1.0), maximize=True)),
    bad=tuple(_nonneg("lr") + _etas() + _step_sizes() + _flag("maximize") + _policy()),
    kernel_step="none",
    bitwise=lambda h: True,     # the kernel does the reference's operations in its order
    grad_sample=_rprop_grad,
)


def _uniform(lo, hi):
    """A 0-d state drawn uniformly from [lo, hi)."""
    return lambda rng, shape, dtype: np.array(rng.uniform(lo, hi, shape), dtype)


NADAM = OptimizerInfo(
    name="NAdam", cls=fastadam.NAdam, kernel=fastadam.nadam_, reference=reference.nadam_,
    arrays=("param", "grad", "exp_avg", "exp_avg_sq", "mu_product"),
    # the NumPy class's and torch's order: the scalar first
    states=(State("mu_product", lambda h: True, sample=_uniform(0.05, 0.95), init=1.0,
                  scalar=True),
            State("exp_avg", lambda h: True),
            State("exp_avg_sq", lambda h: True, sample="pos")),
    defaults=dict(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, momentum_decay=4e-3,
                  decoupled_weight_decay=False, maximize=False, **_POLICY),
    kernel_defaults=dict(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                         momentum_decay=4e-3, decoupled_weight_decay=False, maximize=False),
    flags=dict(weight_decay=(0.0, 1e-2), decoupled_weight_decay=(False, True),
               maximize=(False, True)),
    # beta1 = 0.3: torch's lerp from the far end (weight 1 - beta1 >= 0.5)
    scalars=(dict(lr=1e-2), dict(lr=3e-3, betas=(0.8, 0.95), momentum_decay=0.1),
             dict(lr=1e-2, betas=(0.3, 0.9), eps=1e-4)),
    # eps = 0 (torch.optim allows it, so does fastadam); momentum_decay = 0: mu = beta1/2
    extra_sets=(dict(lr=1e-2, betas=(0.0, 0.0), eps=1e-4),
                dict(lr=1e-2, eps=0.0, momentum_decay=0.0, weight_decay=0.1),
                dict(lr=1e-2, betas=[0.9, 0.99], weight_decay=0.1, decoupled_weight_decay=True)),
    bad=tuple(_nonneg("lr") + _betas() + _nonneg("eps") + _nonneg("weight_decay")
              + _nonneg("momentum_decay") + _flag("decoupled_weight_decay") + _flag("maximize")
              + _STEP_BAD + _policy()),
    kernel_step="required",
    bitwise=lambda h: True,     # the kernel does the reference's operations in its order
)

ASGD = OptimizerInfo(
    name="ASGD", cls=fastadam.ASGD, kernel=fastadam.asgd_, reference=reference.asgd_,
    arrays=("param", "grad", "ax", "eta", "mu"),
    # the NumPy class's and torch's order: the scalars first; mu = 1: ax copies the param
    states=(State("eta", lambda h: True, sample=_uniform(1e-3, 5e-2), init="lr", scalar=True),
            State("mu", lambda h: True, init=1.0, scalar=True,
                  sample=lambda rng, shape, dtype: np.array(1.0 / rng.integers(1, 4), dtype)),
            State("ax", lambda h: True)),
    defaults=dict(lr=1e-2, lambd=1e-4, alpha=0.75, t0=1e6, weight_decay=0.0, maximize=False,
                  **_POLICY),
    kernel_defaults=dict(lr=1e-2, lambd=1e-4, alpha=0.75, t0=1e6, weight_decay=0.0,
                         maximize=False),
    flags=dict(weight_decay=(0.0, 1e-2), maximize=(False, True)),
    # t0 below the tests' step counts: the averaging (mu < 1) starts within them
    scalars=(dict(lr=5e-2, t0=30.0), dict(lr=5e-2, lambd=1e-2, alpha=0.5, t0=5.0),
             dict(lr=2e-2)),
    # t0 = 0; a negative lambd and alpha > 1 (torch.optim does not check them)
    extra_sets=(dict(lr=5e-2, lambd=1e-2, t0=0.0, weight_decay=0.1),
                dict(lr=5e-2, lambd=-1e-3, alpha=2.0, t0=2.5, maximize=True)),
    bad=tuple(_nonneg("lr") + _finite("lambd") + _finite("alpha") + _finite("t0")
              + _nonneg("weight_decay") + _flag("maximize") + _STEP_BAD + _policy()),
    kernel_step="required",
    bitwise=lambda h: True,     # the kernel does the reference's operations in its order
    # torch.optim.ASGD computes eta and mu in float32 even where its load_state_dict made
    # them float64 (a float64 param's); fastadam in their dtype (tests/test_optimizer_rules.py)
    torch_reload_dtypes=("float32",),
)

OPTIMIZERS: List[OptimizerInfo] = [SGD, RMSPROP, ADAM, ADAMW, LION, ADAGRAD, ADAMAX, ADADELTA,
                                   RADAM, RPROP, NADAM, ASGD]
BY_NAME: Dict[str, OptimizerInfo] = {o.name: o for o in OPTIMIZERS}
#: The rows torch.optim has a class for: what torch-parity and torch.optim checks run over.
TORCH_OPTIMIZERS: List[OptimizerInfo] = [o for o in OPTIMIZERS if o.torch_optim]


def set_id(hyper):
    """A short test id for an option set."""
    return "-".join(f"{k}={v}" for k, v in hyper.items()) or "defaults"


def option_cases(torch_only=False):
    """(info, option set) over the registry, for parametrize, with ids. ``torch_only``:
    the rows torch.optim has a class for, with the option sets it has."""
    cases, ids = [], []
    for info in (TORCH_OPTIMIZERS if torch_only else OPTIMIZERS):
        for h in (info.torch_option_sets() if torch_only else info.option_sets()):
            cases.append((info, h))
            ids.append(f"{info.name}-{set_id(h)}")
    return cases, ids


def bad_cases(api, torch_optim=False, construction=False):
    """(info, Bad) for every bad value ``api`` takes, for parametrize, with ids.
    ``torch_optim``: the rows torch.optim has a class for only; ``construction``: with
    those only a constructor refuses."""
    cases, ids = [], []
    for info in (TORCH_OPTIMIZERS if torch_optim else OPTIMIZERS):
        for b in info.bad_for(api, construction):
            cases.append((info, b))
            ids.append(f"{info.name}-{b.id}")
    return cases, ids


__all__ = ["OptimizerInfo", "State", "Bad", "OPTIMIZERS", "TORCH_OPTIMIZERS", "BY_NAME", "SGD",
           "RMSPROP", "ADAM", "ADAMW", "LION", "ADAGRAD", "ADAMAX", "ADADELTA", "RADAM", "RPROP",
           "NADAM", "ASGD", "SCALAR_DTYPE", "BAD_GRAD_SCALES", "option_cases", "bad_cases",
           "set_id", "NoTruthValue"]
