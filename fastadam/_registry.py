"""Every optimizer fastadam has, described once.

This file is plain data in plain Python: setup.py reads it (without importing the package)
to generate the compiled core's per-optimizer code (fastadam/_generate.py: validation, the
functional wrappers, the kernel table, the type stubs), and fastadam.optim and
fastadam.torch read it to build their classes' state and steps. A new optimizer is one
``Optimizer`` entry here, one kernel file in fastadam/kernels/, one reference function in
fastadam/reference.py and its classes (docs/adding-an-optimizer.md).

Terms:

- A *kernel* is one fused loop (fastadam/kernels/<kernel>.pxi) with its own state arrays.
- An *entry* is what users call: a functional ``<name>_`` and, when ``classes`` is set,
  ``fastadam.<Class>`` and ``fastadam.torch.<Class>``. Several entries may share a kernel:
  AdamW is Adam's kernel with ``decoupled_weight_decay`` fixed to True and another default.
"""

from typing import Any, Dict, NamedTuple, Optional, Tuple

# Storage dtypes, in the kernel table's order: (NumPy name, C type, NumPy type number or
# None when the type is registered at run time, the dtype the kernels compute in). The
# 16-bit ones are storage only: their arrays are widened to float32 in blocks held in L1,
# stepped by the float32 loop and rounded back (to nearest even, or stochastically for a
# 16-bit param), all in the one pass (fastadam/_kernels.pxi.tp, src/fa_half.h).
# bfloat16 is ml_dtypes.bfloat16, looked up when the first such array arrives.
DTYPES = (
    ("float32", "float", "NPY_FLOAT32", "float32"),
    ("float64", "double", "NPY_FLOAT64", "float64"),
    ("bfloat16", "uint16_t", None, "float32"),
    ("float16", "uint16_t", "NPY_FLOAT16", "float32"),
)
DTYPE_NAMES = tuple(name for name, _, _, _ in DTYPES)
# The dtypes the kernels compute in: the kernel table's second index.
COMPUTE_DTYPES = tuple(name for name, _, _, compute in DTYPES if name == compute)
HALF_DTYPES = tuple(name for name, _, _, compute in DTYPES if name != compute)

# Which dtypes go together in one tensor, keyed by the param's dtype: the others are
# refused with a TypeError that lists these. The states all have one dtype.
#   grad: 16-bit params take float32 grads too; float32 params (master weights) 16-bit ones.
#   state: float32 params may keep 16-bit states.
#   copy: a float32 param may have a 16-bit ``param_copy`` that receives it rounded.
#   state8: whether its states may be 8-bit (block-wise, fastadam/quant.py): the kernels
#   then compute in float32, so not for float64 params.
MIXING = {
    "float32": dict(grad=("float32",) + HALF_DTYPES, state=("float32",) + HALF_DTYPES,
                    copy=HALF_DTYPES, state8=True),
    "float64": dict(grad=("float64",), state=("float64",), copy=(), state8=False),
    **{h: dict(grad=(h, "float32"), state=(h,), copy=(), state8=True) for h in HALF_DTYPES},
}
# 8-bit states (``state_bits=8`` on the classes): the bits a state may have, and the
# classes' default size below which a tensor keeps 32-bit states (bitsandbytes' 4096).
STATE_BITS = (32, 8)
MIN_8BIT_SIZE = 4096
# Elements per absmax of an 8-bit state (bitsandbytes' blockwise optimizers' 256); the block
# converter steps blocks of this size too (fastadam/_kernels.pxi.tp).
STATE8_BLOCK = 256
# How a 16-bit param is rounded when it is stored: "nearest" (even), or "stochastic"
# (unbiased, from a counter-based generator keyed by a seed, the step, the tensor and the
# element index: the same bits at any thread count, on every SIMD path, after a resume).
ROUNDINGS = ("nearest", "stochastic")

# Constraint kinds, each checked by one generic validator in fastadam/_validate.pxi:
#   kind: (C type of the validated value, what the validator accepts)
KINDS = {
    "nonneg": ("double", "a finite real number >= 0"),
    "positive": ("double", "a finite real number > 0"),
    "finite": ("double", "a finite real number"),
    "unit": ("double", "a real number in [0, 1)"),
    "unit_pair": ("double[2]", "a pair (list or tuple) of real numbers in [0, 1)"),
    "real_pair": ("double[2]", "a pair (list or tuple) of finite real numbers"),
    "flag": ("bint", "anything with an unambiguous truth value"),
}

# Elements per thread below which a kernel runs on one thread, per compute dtype, for a
# kernel that has no measured row (see fastadam/_dispatch.pxi; every kernel here has one,
# from 2**15 to 2**18 float32 elements): a middle value of those.
DEFAULT_MIN_PER_THREAD = (1 << 16, 1 << 15)


class Hyper(NamedTuple):
    name: str
    default: Any            # the functional's default; ``REQUIRED``: no default
    kind: str               # a key of KINDS


class State(NamedTuple):
    name: str
    # When the array is needed: None (always; then it is a positional argument of the
    # functional), or a condition on the validated hyperparameters in Python syntax
    # ("momentum != 0", "centered"). Messages say "required when <when>" (a bare flag
    # reads "<flag>=True").
    when: Optional[str] = None
    # The value a class fills it with: a number, or the name of a hyperparameter.
    init: Any = 0.0
    # The map of its 8-bit form (fastadam/quant.py): "signed", or "unsigned" for a
    # second moment that is never negative (bitsandbytes' choice for Adam's exp_avg_sq; its
    # one-state optimizers, RMSprop and Adagrad too, use the signed map).
    qmap: str = "signed"


class Scalar(NamedTuple):
    """A per-tensor scalar state (NAdam's ``mu_product``, ASGD's ``eta``): one number per
    tensor that the kernel's ``prepare`` reads with the step and advances once per call.
    The functional takes it as a writable 0-d float32 or float64 array after the state
    arrays and updates it in place in its own dtype (torch keeps these as 0-d tensors of its
    scalar dtype); the classes keep one per param in its state."""
    name: str
    init: Any = 0.0     # the classes' initial value: a number or a hyperparameter's name


class Optimizer(NamedTuple):
    name: str                       # the functional is fastadam.<name>_
    kernel: str                     # fastadam/kernels/<kernel>.pxi
    hyper: Tuple[Hyper, ...] = ()
    states: Tuple[State, ...] = ()
    # Per-tensor scalar states, in the order the functional takes them (after the states).
    scalars: Tuple[Scalar, ...] = ()
    # "required": the functional takes ``step=t`` (1-based) and the kernel's constants
    # depend on it; "optional": ``step=None`` by default (0 reaches the kernel);
    # None: no step.
    step: Optional[str] = None
    # Hyperparameters not offered by this entry, with the value they always have.
    fixed: Dict[str, Any] = {}
    # The functional's keyword-only arguments in order (hyperparameters and conditional
    # states); default: conditional states first, then the hyperparameters, then step.
    order: Tuple[str, ...] = ()
    # The class name in fastadam and fastadam.torch; None: functional only.
    classes: Optional[str] = None
    # fastadam.torch: whether torch.optim keeps state['step'] for this optimizer.
    torch_step: bool = True
    # fastadam.torch: group keys torch.optim's __setstate__ fills in for old state dicts.
    torch_setdefaults: Dict[str, Any] = {}
    # (float32, float64) elements per thread from which a second thread pays off.
    min_per_thread: Optional[Tuple[int, int]] = None
    # The benchmark's configuration (fastadam.bench): the functional's hyperparameters
    # (torch.optim's class gets the same, but for step).
    bench: Dict[str, Any] = {}
    doc: str = ""


REQUIRED = "required"


_ADAM_HYPER = (
    Hyper("lr", 1e-3, "nonneg"),
    Hyper("betas", (0.9, 0.999), "unit_pair"),
    Hyper("eps", 1e-8, "positive"),
    Hyper("weight_decay", 0.0, "nonneg"),
    Hyper("amsgrad", False, "flag"),
    Hyper("maximize", False, "flag"),
    Hyper("bias_correction", True, "flag"),
    Hyper("decoupled_weight_decay", False, "flag"),
)
_ADAM_STATES = (State("exp_avg"), State("exp_avg_sq", qmap="unsigned"),
                State("max_exp_avg_sq", "amsgrad", qmap="unsigned"))
_ADAM_ORDER = ("step", "lr", "betas", "eps", "weight_decay", "amsgrad", "max_exp_avg_sq",
               "maximize", "bias_correction", "decoupled_weight_decay")
_ADAM_SETDEFAULTS = dict(amsgrad=False, maximize=False, foreach=None, capturable=False,
                         differentiable=False, decoupled_weight_decay=False, fused=None)

OPTIMIZERS = (
    Optimizer(
        "sgd", "sgd",
        hyper=(
            Hyper("lr", 1e-3, "nonneg"),
            Hyper("momentum", 0.0, "nonneg"),
            Hyper("dampening", 0.0, "finite"),
            Hyper("nesterov", False, "flag"),
            Hyper("weight_decay", 0.0, "nonneg"),
            Hyper("maximize", False, "flag"),
        ),
        states=(State("momentum_buffer", "momentum != 0"),),
        step="optional",
        classes="SGD",
        torch_step=False,
        torch_setdefaults=dict(nesterov=False, maximize=False, foreach=None,
                               differentiable=False, fused=False),
        min_per_thread=(1 << 16, 1 << 15),
        bench=dict(lr=1e-3, momentum=0.9, step=2),
        doc="""One SGD step, in place.

    ``g = -grad if maximize else grad``; ``g += weight_decay * param``;
    with momentum: ``buf = g`` at ``step=1``, else ``buf = momentum*buf + (1-dampening)*g``,
    then ``d = g + momentum*buf`` (nesterov) or ``d = buf``; without: ``d = g``;
    ``param -= lr * d``.

    ``momentum_buffer`` is required when ``momentum != 0``. ``step`` (1-based, optional)
    only matters for momentum: at step 1 the buffer is set to the gradient, as torch.optim
    does; otherwise it is treated as a running average (a zero buffer then gives the same
    result when dampening is 0).
    """),
    Optimizer(
        "rmsprop", "rmsprop",
        hyper=(
            Hyper("lr", 1e-2, "nonneg"),
            Hyper("alpha", 0.99, "nonneg"),
            Hyper("eps", 1e-8, "positive"),
            Hyper("weight_decay", 0.0, "nonneg"),
            Hyper("momentum", 0.0, "nonneg"),
            Hyper("centered", False, "flag"),
            Hyper("maximize", False, "flag"),
        ),
        states=(State("square_avg"), State("momentum_buffer", "momentum != 0"),
                State("grad_avg", "centered")),
        classes="RMSprop",
        torch_setdefaults=dict(momentum=0, centered=False, foreach=None, maximize=False,
                               differentiable=False, capturable=False),
        min_per_thread=(1 << 15, 1 << 14),
        doc="""One RMSprop step, in place.

    ``g = -grad if maximize else grad``; ``g += weight_decay * param``;
    ``square_avg = alpha*square_avg + (1-alpha)*g*g``;
    centered: ``grad_avg = alpha*grad_avg + (1-alpha)*g``,
    ``avg = sqrt(square_avg - grad_avg**2) + eps``; else ``avg = sqrt(square_avg) + eps``;
    with momentum: ``buf = momentum*buf + g/avg``, ``param -= lr*buf``;
    without: ``param -= lr*g/avg``.

    ``momentum_buffer`` is required when ``momentum != 0``, ``grad_avg`` when ``centered``.
    """),
    Optimizer(
        "adam", "adam",
        hyper=_ADAM_HYPER,
        states=_ADAM_STATES,
        step=REQUIRED,
        order=_ADAM_ORDER,
        classes="Adam",
        torch_setdefaults=_ADAM_SETDEFAULTS,
        min_per_thread=(1 << 15, 1 << 14),
        bench=dict(step=10),
        doc="""One Adam step (AdamW with ``decoupled_weight_decay=True``), in place.

    ``g = -grad if maximize else grad``; weight decay: ``g += weight_decay*param`` (L2) or
    ``param *= 1 - lr*weight_decay`` (decoupled);
    ``exp_avg = b1*exp_avg + (1-b1)*g``; ``exp_avg_sq = b2*exp_avg_sq + (1-b2)*g*g``;
    ``bc1 = 1 - b1**step``, ``bc2 = 1 - b2**step`` (1 without bias correction);
    amsgrad: ``max_exp_avg_sq = maximum(max_exp_avg_sq, exp_avg_sq)`` replaces exp_avg_sq in
    ``param -= (lr/bc1) * exp_avg / (sqrt(exp_avg_sq)/sqrt(bc2) + eps)``.

    ``step`` is the 1-based number of this step; ``max_exp_avg_sq`` is required with amsgrad.
    """),
    Optimizer(
        "adamw", "adam",
        hyper=tuple(h._replace(default=1e-2) if h.name == "weight_decay" else h
                    for h in _ADAM_HYPER),
        states=_ADAM_STATES,
        step=REQUIRED,
        fixed={"decoupled_weight_decay": True},
        order=_ADAM_ORDER,
        classes="AdamW",
        torch_setdefaults=_ADAM_SETDEFAULTS,
        bench=dict(step=10),
        doc="""One AdamW step, in place: :func:`adam_` with ``decoupled_weight_decay=True`` and
    weight_decay 1e-2.

    ``g = -grad if maximize else grad``; ``param *= 1 - lr*weight_decay``;
    ``exp_avg = b1*exp_avg + (1-b1)*g``; ``exp_avg_sq = b2*exp_avg_sq + (1-b2)*g*g``;
    ``bc1 = 1 - b1**step``, ``bc2 = 1 - b2**step`` (1 without bias correction); amsgrad:
    ``max_exp_avg_sq = maximum(max_exp_avg_sq, exp_avg_sq)`` replaces exp_avg_sq in
    ``param -= (lr/bc1) * exp_avg / (sqrt(exp_avg_sq)/sqrt(bc2) + eps)``."""),
    Optimizer(
        "lion", "lion",
        hyper=(
            Hyper("lr", 1e-4, "nonneg"),
            Hyper("betas", (0.9, 0.99), "unit_pair"),
            Hyper("weight_decay", 0.0, "nonneg"),
            Hyper("maximize", False, "flag"),
        ),
        states=(State("exp_avg"),),
        classes="Lion",
        torch_step=False,       # as lion-pytorch: its state is exp_avg alone
        torch_setdefaults=dict(maximize=False),
        min_per_thread=(1 << 18, 1 << 17),
        doc="""One Lion step (Chen et al. 2023), in place.

    ``g = -grad if maximize else grad``; ``c = b1*exp_avg + (1-b1)*g``;
    ``param = param*(1 - lr*weight_decay) - lr*sign(c)`` (sign(0) = 0);
    ``exp_avg = b2*exp_avg + (1-b2)*g``.
    """),
    Optimizer(
        "adagrad", "adagrad",
        hyper=(
            Hyper("lr", 1e-2, "nonneg"),
            Hyper("lr_decay", 0.0, "nonneg"),
            Hyper("weight_decay", 0.0, "nonneg"),
            Hyper("eps", 1e-10, "positive"),
            Hyper("maximize", False, "flag"),
        ),
        # torch.optim.Adagrad's name; the classes fill it with initial_accumulator_value
        states=(State("sum", init="initial_accumulator_value"),),
        step=REQUIRED,
        order=("step", "lr", "lr_decay", "weight_decay", "eps", "maximize"),
        classes="Adagrad",
        torch_setdefaults=dict(foreach=None, maximize=False, differentiable=False,
                               fused=None),
        min_per_thread=(1 << 16, 1 << 15),
        bench=dict(step=10),
        doc="""One Adagrad step, in place.

    ``g = -grad if maximize else grad``; ``g = g + weight_decay*param``;
    ``clr = lr / (1 + (step-1)*lr_decay)``; ``sum = sum + g*g``;
    ``param = param - clr*g / (sqrt(sum) + eps)``.

    ``step`` is the 1-based number of this step. A new ``sum`` starts at
    ``initial_accumulator_value`` (the classes' option, 0 by default).
    """),
    Optimizer(
        "adamax", "adamax",
        hyper=(
            Hyper("lr", 2e-3, "nonneg"),
            Hyper("betas", (0.9, 0.999), "unit_pair"),
            Hyper("eps", 1e-8, "positive"),
            Hyper("weight_decay", 0.0, "nonneg"),
            Hyper("maximize", False, "flag"),
        ),
        states=(State("exp_avg"), State("exp_inf", qmap="unsigned")),
        step=REQUIRED,
        order=("step", "lr", "betas", "eps", "weight_decay", "maximize"),
        classes="Adamax",
        torch_setdefaults=dict(foreach=None, maximize=False, differentiable=False,
                               capturable=False),
        min_per_thread=(1 << 16, 1 << 15),
        bench=dict(step=10),
        doc="""One Adamax step, in place.

    ``g = -grad if maximize else grad``; ``g = g + weight_decay*param``;
    ``exp_avg = lerp(exp_avg, g, 1-b1)`` (torch's lerp: from the nearer end);
    ``exp_inf = maximum(b2*exp_inf, |g| + eps)`` (a NaN propagates);
    ``param = param - (lr / (1 - b1**step)) * exp_avg / exp_inf``.

    ``step`` is the 1-based number of this step.
    """),
    Optimizer(
        "adadelta", "adadelta",
        hyper=(
            Hyper("lr", 1.0, "nonneg"),
            Hyper("rho", 0.9, "nonneg"),        # and <= 1: kernels/adadelta.pxi's check
            Hyper("eps", 1e-6, "positive"),
            Hyper("weight_decay", 0.0, "nonneg"),
            Hyper("maximize", False, "flag"),
        ),
        states=(State("square_avg", qmap="unsigned"), State("acc_delta", qmap="unsigned")),
        classes="Adadelta",
        torch_setdefaults=dict(foreach=None, maximize=False, differentiable=False,
                               capturable=False),
        min_per_thread=(1 << 16, 1 << 14),
        doc="""One Adadelta step, in place.

    ``g = -grad if maximize else grad``; ``g = g + weight_decay*param``;
    ``square_avg = rho*square_avg + (1-rho)*g*g``;
    ``delta = sqrt(acc_delta + eps) / sqrt(square_avg + eps) * g``;
    ``acc_delta = rho*acc_delta + (1-rho)*delta*delta``; ``param = param - lr*delta``.

    ``rho`` is in [0, 1].
    """),
    Optimizer(
        "radam", "radam",
        hyper=(
            Hyper("lr", 1e-3, "nonneg"),
            Hyper("betas", (0.9, 0.999), "unit_pair"),
            Hyper("eps", 1e-8, "positive"),
            Hyper("weight_decay", 0.0, "nonneg"),
            Hyper("decoupled_weight_decay", False, "flag"),
            Hyper("maximize", False, "flag"),
        ),
        states=(State("exp_avg"), State("exp_avg_sq", qmap="unsigned")),
        step=REQUIRED,
        order=("step", "lr", "betas", "eps", "weight_decay", "decoupled_weight_decay",
               "maximize"),
        classes="RAdam",
        torch_setdefaults=dict(foreach=None, maximize=False, differentiable=False,
                               decoupled_weight_decay=False, capturable=False),
        min_per_thread=(1 << 16, 1 << 14),
        bench=dict(step=10),
        doc="""One RAdam step (torch.optim.RAdam's rule), in place.

    ``g = -grad if maximize else grad``; weight decay: ``g += weight_decay*param`` (L2) or
    ``param *= 1 - lr*weight_decay`` (decoupled); ``exp_avg = lerp(exp_avg, g, 1-b1)``;
    ``exp_avg_sq = b2*exp_avg_sq + (1-b2)*g*g``; ``bc1 = 1 - b1**step``,
    ``bc2 = 1 - b2**step``; ``rho_inf = 2/(1-b2) - 1``,
    ``rho_t = rho_inf - 2*step*b2**step/bc2``. If ``rho_t > 5``:
    ``rect = sqrt((rho_t-4)*(rho_t-2)*rho_inf / ((rho_inf-4)*(rho_inf-2)*rho_t))`` and
    ``param -= exp_avg/bc1 * lr * sqrt(bc2)/(sqrt(exp_avg_sq) + eps) * rect``; otherwise
    (the first steps) ``param -= exp_avg/bc1 * lr``.

    ``step`` is the 1-based number of this step.
    """),
    Optimizer(
        "rprop", "rprop",
        hyper=(
            Hyper("lr", 1e-2, "nonneg"),
            Hyper("etas", (0.5, 1.2), "real_pair"),
            Hyper("step_sizes", (1e-6, 50), "real_pair"),
            Hyper("maximize", False, "flag"),
        ),
        states=(State("prev"), State("step_size", init="lr")),
        classes="Rprop",
        torch_setdefaults=dict(foreach=None, maximize=False, differentiable=False,
                               capturable=False),
        min_per_thread=(1 << 16, 1 << 15),
        bench=dict(lr=1e-2),
        doc="""One Rprop step (torch.optim.Rprop's rule), in place.

    ``g = -grad if maximize else grad``; ``s = sign(g*prev)``; ``eta = etaplus`` where
    ``s > 0``, ``etaminus`` where ``s < 0``, 1 where ``s == 0``;
    ``step_size = min(max(step_size*eta, step_sizes[0]), step_sizes[1])``; ``g = 0`` where
    ``eta == etaminus``; ``param -= sign(g)*step_size``; ``prev = g``.

    ``step_size`` holds each element's step size (the classes start it at ``lr``; here
    ``lr`` is only validated), ``prev`` the previous step's gradient (0 before the first).
    ``etas`` must satisfy ``0 < etaminus < 1 < etaplus``; ``step_sizes`` is any pair of
    finite numbers (with ``step_sizes[0] > step_sizes[1]`` every step size becomes
    ``step_sizes[1]``, as torch's clamp).
    """),
    Optimizer(
        "nadam", "nadam",
        hyper=(
            Hyper("lr", 2e-3, "nonneg"),
            Hyper("betas", (0.9, 0.999), "unit_pair"),
            Hyper("eps", 1e-8, "nonneg"),
            Hyper("weight_decay", 0.0, "nonneg"),
            Hyper("momentum_decay", 4e-3, "nonneg"),
            Hyper("decoupled_weight_decay", False, "flag"),
            Hyper("maximize", False, "flag"),
        ),
        states=(State("exp_avg"), State("exp_avg_sq", qmap="unsigned")),
        scalars=(Scalar("mu_product", init=1.0),),
        step=REQUIRED,
        order=("step", "lr", "betas", "eps", "weight_decay", "momentum_decay",
               "decoupled_weight_decay", "maximize"),
        classes="NAdam",
        torch_setdefaults=dict(maximize=False, foreach=None, capturable=False,
                               differentiable=False, decoupled_weight_decay=False),
        min_per_thread=(1 << 16, 1 << 14),
        bench=dict(step=10),
        doc="""One NAdam step (torch.optim.NAdam's rule), in place; ``mu_product`` is the
    tensor's product of the momentum coefficients so far (a writable 0-d float32 or float64
    array, 1 before the first step), advanced in place in its own dtype.

    ``g = -grad if maximize else grad``; weight decay: ``g += weight_decay*param`` (L2) or
    ``param *= 1 - lr*weight_decay`` (decoupled);
    ``mu = b1*(1 - 0.5*0.96**(step*momentum_decay))``, ``mu_next`` the same at ``step+1``;
    ``mu_product *= mu``; ``exp_avg = lerp(exp_avg, g, 1-b1)``;
    ``exp_avg_sq = b2*exp_avg_sq + (1-b2)*g*g``;
    ``denom = sqrt(exp_avg_sq / (1 - b2**step)) + eps``;
    ``param += -lr*(1-mu)/(1-mu_product) * g/denom``, then
    ``param += -lr*mu_next/(1 - mu_product*mu_next) * exp_avg/denom``.
    """),
    Optimizer(
        "asgd", "asgd",
        hyper=(
            Hyper("lr", 1e-2, "nonneg"),
            Hyper("lambd", 1e-4, "finite"),
            Hyper("alpha", 0.75, "finite"),
            Hyper("t0", 1e6, "finite"),
            Hyper("weight_decay", 0.0, "nonneg"),
            Hyper("maximize", False, "flag"),
        ),
        states=(State("ax"),),
        scalars=(Scalar("eta", init="lr"), Scalar("mu", init=1.0)),
        step=REQUIRED,
        order=("step", "lr", "lambd", "alpha", "t0", "weight_decay", "maximize"),
        classes="ASGD",
        torch_setdefaults=dict(foreach=None, maximize=False, differentiable=False,
                               capturable=False),
        min_per_thread=(1 << 17, 1 << 17),
        bench=dict(step=10),
        doc="""One ASGD step (torch.optim.ASGD's rule), in place; ``eta`` and ``mu`` are the
    tensor's step size and averaging rate (writable 0-d float32 or float64 arrays: ``lr``
    and 1 before the first step), advanced in place in their own dtype; ``ax`` is the
    average of the params.

    ``g = -grad if maximize else grad``; ``g += weight_decay*param``;
    ``param = param*(1 - lambd*eta) - eta*g``; ``ax = ax + (param - ax)*mu`` (``ax = param``
    while ``mu == 1``); then ``eta = lr / (1 + lambd*lr*step)**alpha`` and
    ``mu = 1 / max(1, step - t0)``.
    """),
    Optimizer(
        # The benchmark's bandwidth probe: Adam's memory traffic, trivial arithmetic.
        # Adam's thresholds, so that "% of roofline" compares like with like.
        # Its 16-bit and 8-bit layouts stand for the mixed-dtype and 8-bit-state steps
        # (fastadam/kernels/probe.pxi).
        "roofline", "probe",
        hyper=(Hyper("half_states", False, "flag"), Hyper("offload", False, "flag"),
               Hyper("byte_states", False, "flag")),
        states=(State("exp_avg"), State("exp_avg_sq"),
                State("copy_words", "offload or byte_states")),
        min_per_thread=(1 << 15, 1 << 14),
        doc="""The bandwidth probe: Adam's memory traffic with trivial arithmetic,
    ``param += grad``, ``exp_avg += grad``, ``exp_avg_sq += grad`` (reads all four arrays,
    writes three), compiled like the kernels. Benchmarks divide by its time; the values it
    leaves are meaningless.

    The mixed-dtype steps' traffic, as 16-bit words moved without conversion over the first
    ``2*n`` bytes of an array: ``half_states`` makes exp_avg and exp_avg_sq 16-bit words
    (float32 params with 16-bit states); ``offload`` reads grad as 16-bit words and writes
    ``copy_words`` (16-bit words, not read), as a float32 step with a 16-bit grad and a
    16-bit ``param_copy``. All-16-bit steps are the plain probe over ``n/2`` elements.

    ``byte_states`` stands for a step with 8-bit states: exp_avg and exp_avg_sq are bytes
    (over the first ``n`` bytes of each array, read and written), and ``copy_words`` holds
    their float32 block scales, two per block of 256 elements (over its first
    ``2*ceil(n/256)`` float32 words, each read and written), as the absmax of each 8-bit
    state; not with ``half_states`` or ``offload``."""),
)


# ---------------------------------------------------------------------------- derived

def kernels():
    """The kernels in table order, each with the entry that defines it (its first)."""
    out: Dict[str, Optimizer] = {}
    for opt in OPTIMIZERS:
        out.setdefault(opt.kernel, opt)
    return out


def by_name(name: str) -> Optimizer:
    for opt in OPTIMIZERS:
        if opt.name == name:
            return opt
    raise KeyError(name)


def by_class(cls_name: str) -> Optimizer:
    for opt in OPTIMIZERS:
        if opt.classes == cls_name:
            return opt
    raise KeyError(cls_name)


def offered(opt: Optimizer) -> Tuple[Hyper, ...]:
    """The hyperparameters a user passes (all but the fixed ones)."""
    return tuple(h for h in opt.hyper if h.name not in opt.fixed)


def why(state: State) -> str:
    """The condition in messages: 'momentum != 0', 'centered=True'."""
    return f"{state.when}=True" if state.when.isidentifier() else state.when


MAX_STATES = max(len(opt.states) for opt in OPTIMIZERS)
# (at least 1: a C array needs a size)
MAX_SCALARS = max(1, max(len(opt.scalars) for opt in OPTIMIZERS))
