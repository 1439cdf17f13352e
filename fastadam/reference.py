"""The update rules in plain NumPy, written to be read: fastadam's kernels are tested and
benchmarked against these.

Same names and signatures as the fast functions (``fastadam.sgd_`` and so on), in place,
returning None, but with temporaries and no validation of the hyperparameters. Scalars stay
Python floats, so float32 arrays are computed in float32, as the kernels do.

16-bit storage is one wrapper around every rule (:func:`_storage`): the arrays' dtypes are
checked against fastadam/_registry.py's MIXING, bfloat16 and float16 arrays are widened to
float32, the float32 rule runs, and each 16-bit output is stored back rounded to nearest
even, or, for a 16-bit param with ``rounding="stochastic"``, stochastically with the key
the functionals use (``fa_sr_key(seed, step or 0, 0)``); a ``param_copy`` receives the
float32 param rounded to nearest. The roundings are fastadam/_rounding.py's, the kernels'
bits.

8-bit states go through the same wrapper: wherever a rule takes a state array it also takes
a :class:`fastadam.quant.QuantizedState` (all of a tensor's states 8-bit or none, as the
kernels require; float32, bfloat16 or float16 params). Each is dequantized to float32
(``qmap[codes] * absmax`` per 256-element block), the float32 rule runs on it (16-bit params
and grads widened as above), and the new state is quantized back with
``quant.quantize(new_state, state.qmap)``, its codes and absmax written in place.
"""

import functools
import math

import numpy as np

from . import _registry, _rounding, quant

__all__ = ["sgd_", "rmsprop_", "adam_", "adamw_", "lion_", "adagrad_", "adadelta_",
           "adamax_", "nadam_", "radam_", "rprop_", "asgd_"]


def _preamble(param, grad, weight_decay, maximize):
    g = -grad if maximize else grad
    if weight_decay != 0:
        g = g + weight_decay * param
    return g


# ---------------------------------------------------------------------------- 16-bit storage

_WIDEN = {"bfloat16": _rounding.widen_bf16, "float16": _rounding.widen_f16}
_NARROW = {"bfloat16": _rounding.narrow_bf16, "float16": _rounding.narrow_f16}
_NARROW_SR = {"bfloat16": _rounding.narrow_bf16_sr, "float16": _rounding.narrow_f16_sr}


def _is_q8(x):
    """Whether ``x`` is an 8-bit state (exactly a QuantizedState, as the kernels test)."""
    return type(x) is quant.QuantizedState


def _check_q8_array(a, name, dtype, shape, writable):
    """One array of an 8-bit state, as the kernels check it (fastadam/_validate.pxi)."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"Invalid {name}: expected a numpy.ndarray, got {type(a).__name__}")
    if a.dtype != dtype or not a.dtype.isnative:
        raise TypeError(f"Invalid {name} dtype: expected {np.dtype(dtype).name}, got "
                        f"{a.dtype.str} ({a.dtype})")
    if not (a.flags.c_contiguous and a.flags.aligned):
        raise ValueError(f"Invalid {name}: not C-contiguous and aligned (a copy would not be "
                         f"updated in place)")
    if writable and not a.flags.writeable:
        raise ValueError(f"Invalid {name}: read-only, but it is updated in place")
    if a.shape != shape:
        raise ValueError(f"Invalid {name} shape: expected {shape}, got {a.shape}")


def _check_q8(param, name, state):
    """An 8-bit state of ``param``: uint8 codes of its shape, float32 absmax (one per
    block), a map the kernels' table accepts (quant.bucket_table)."""
    codes, absmax, qmap = state
    _check_q8_array(codes, name + ".codes", np.uint8, param.shape, True)
    _check_q8_array(absmax, name + ".absmax", np.float32, (quant.nblocks(param.size),), True)
    _check_q8_array(qmap, name + ".qmap", np.float32, (quant.CODES,), False)
    try:
        quant.bucket_table(qmap)
    except (TypeError, ValueError) as e:
        raise type(e)(str(e).replace("Invalid qmap", f"Invalid {name}.qmap", 1)) from None


def _check_apart(param, grad, copy, states):
    """No two arrays share memory (the 8-bit states' codes and absmax included), as the
    kernels require; the later one of a pair is named."""
    arrays = [("param", param), ("grad", grad), ("param_copy", copy)]
    arrays += [(n, s.codes if _is_q8(s) else s) for n, s in states.items()]
    arrays += [(f"{n}.absmax", s.absmax) for n, s in states.items() if _is_q8(s)]
    arrays = [(n, a) for n, a in arrays if a is not None]
    for j, (nj, aj) in enumerate(arrays):
        for ni, ai in arrays[:j]:
            if aj.size and ai.size and np.may_share_memory(ai, aj):
                raise ValueError(f"Invalid {nj}: it shares memory with {ni}; every array "
                                 f"must be a separate buffer")


def _check_storage(param, grad, states, copy, rounding, seed):
    """The kernels' rules for dtypes (MIXING), ``rounding`` and ``seed``; TypeError or
    ValueError naming the argument. ``states``: name -> array or QuantizedState (those
    given)."""
    dtype = param.dtype.name
    if dtype not in _registry.MIXING:
        raise TypeError(f"Invalid param dtype: expected one of {_registry.DTYPE_NAMES}, "
                        f"got {dtype}")
    mixing = _registry.MIXING[dtype]
    if grad.dtype.name not in mixing["grad"]:
        raise TypeError(f"Invalid grad dtype: a {dtype} param takes {mixing['grad']} grads, "
                        f"got {grad.dtype.name}")
    first = None        # the first state given: True if 8-bit, else its dtype
    for name, s in states.items():
        q8 = _is_q8(s)
        if q8:
            if not mixing["state8"]:
                raise TypeError(f"Invalid {name}: a {dtype} param has no 8-bit states (the "
                                f"kernels compute them in float32: float32, bfloat16 and "
                                f"float16 params may)")
            _check_q8(param, name, s)
        elif s.dtype.name not in mixing["state"] or (
                first is not None and first is not True and s.dtype != first):
            raise TypeError(f"Invalid {name} dtype: a {dtype} param takes {mixing['state']} "
                            f"states, all of one dtype; got {s.dtype.name}")
        if first is not None and q8 != (first is True):
            raise TypeError(f"Invalid {name}: a tensor's states are all 8-bit or all one "
                            f"dtype; this one is {'8-bit' if q8 else s.dtype.name}, the "
                            f"others are not")
        if first is None:
            first = True if q8 else s.dtype
    if copy is not None and copy.dtype.name not in mixing["copy"]:
        raise TypeError(f"Invalid param_copy: a {dtype} param takes {mixing['copy'] or 'no'} "
                        f"copies, got {copy.dtype.name}")
    if first is True:
        _check_apart(param, grad, copy, states)
    if type(rounding) is not str:
        raise TypeError(f"Invalid rounding: expected one of {_registry.ROUNDINGS}")
    if rounding not in _registry.ROUNDINGS:
        raise ValueError(f"Invalid rounding: {rounding!r}")
    if isinstance(seed, bool) or not hasattr(seed, "__index__"):
        raise TypeError(f"Invalid seed: expected an int, got {type(seed).__name__}")
    if not 0 <= seed.__index__() < 2 ** 64:
        raise ValueError(f"Invalid seed: {seed!r} (must be in [0, 2**64))")
    if rounding == "stochastic" and dtype not in _registry.HALF_DTYPES:
        raise TypeError(f"Invalid rounding: 'stochastic' applies to 16-bit params, not {dtype}")


def _store(wide, array, key=None):
    """Round float32 ``wide`` into 16-bit ``array``: to nearest even, or with ``key``
    stochastically (element i drawing fa_random32(key, i))."""
    dtype = array.dtype.name
    bits = _NARROW[dtype](wide) if key is None else _NARROW_SR[dtype](wide, key, 0)
    array.view(np.uint16)[...] = bits.reshape(array.shape)


def _widened(a):
    """The float32 values a 16-bit array or an 8-bit state stands for (None: neither)."""
    if _is_q8(a):
        return a.dequantize()
    if a.dtype.name in _WIDEN:
        return np.asarray(_WIDEN[a.dtype.name](a.view(np.uint16))).reshape(a.shape)
    return None


def _storage(rule):
    """``rule`` (an update on float32 or float64 arrays) taking what the kernel takes:
    16-bit arrays, 8-bit states, ``param_copy``, ``rounding`` and ``seed`` (see the module
    docstring)."""
    entry = _registry.by_name(rule.__name__[:-1])
    positional = [s.name for s in entry.states if s.when is None]
    keyword = [s.name for s in entry.states if s.when is not None]

    @functools.wraps(rule)
    def step(param, grad, *arrays, param_copy=None, rounding="nearest", seed=0, **kw):
        states = dict(zip(positional, arrays))       # the scalar states follow: kept as is
        states.update((n, kw[n]) for n in keyword if kw.get(n) is not None)
        _check_storage(param, grad, states, param_copy, rounding, seed)
        wide = {n: w for n, w in ((n, _widened(a)) for n, a in
                                  {"param": param, "grad": grad, **states}.items())
                if w is not None}
        args = [wide.get(n, a) for n, a in zip(positional, arrays)] + \
            list(arrays[len(positional):])
        kw.update((n, wide[n]) for n in keyword if n in wide)
        rule(wide.get("param", param), wide.get("grad", grad), *args, **kw)
        for name, array in states.items():
            if _is_q8(array):
                array.codes[...], array.absmax[...] = quant.quantize(wide[name], array.qmap)
            elif name in wide:
                _store(wide[name], array)
        if "param" in wide:
            stochastic = rounding == "stochastic"
            _store(wide["param"], param,
                   _rounding.sr_key(seed, kw.get("step") or 0, 0) if stochastic else None)
        if param_copy is not None:
            _store(param, param_copy)

    return step


@_storage
def sgd_(param, grad, *, momentum_buffer=None, lr=1e-3, momentum=0.0, dampening=0.0,
         nesterov=False, weight_decay=0.0, maximize=False, step=None):
    """One SGD step, in place (twin of :func:`fastadam.sgd_`).

    ``g = -grad if maximize else grad``; ``g = g + weight_decay*param``;
    with momentum: ``buf = g`` at ``step=1``, else ``buf = momentum*buf + (1-dampening)*g``,
    then ``d = g + momentum*buf`` (nesterov) or ``d = buf``; without: ``d = g``;
    ``param = param - lr*d``.
    """
    g = _preamble(param, grad, weight_decay, maximize)
    if momentum != 0:
        if step == 1:
            buf = g
        else:
            buf = momentum * momentum_buffer + (1 - dampening) * g
        momentum_buffer[...] = buf
        d = g + momentum * buf if nesterov else buf
    else:
        d = g
    param[...] = param - lr * d


@_storage
def rmsprop_(param, grad, square_avg, *, momentum_buffer=None, grad_avg=None, lr=1e-2,
             alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False,
             maximize=False):
    """One RMSprop step, in place (twin of :func:`fastadam.rmsprop_`).

    ``g = -grad if maximize else grad``; ``g = g + weight_decay*param``;
    ``square_avg = alpha*square_avg + (1-alpha)*g*g``; centered:
    ``grad_avg = alpha*grad_avg + (1-alpha)*g``, ``avg = sqrt(square_avg - grad_avg**2) + eps``,
    else ``avg = sqrt(square_avg) + eps``; with momentum: ``buf = momentum*buf + g/avg``,
    ``param = param - lr*buf``; without: ``param = param - lr*g/avg``.
    """
    g = _preamble(param, grad, weight_decay, maximize)
    square_avg[...] = alpha * square_avg + (1 - alpha) * g * g
    if centered:
        grad_avg[...] = alpha * grad_avg + (1 - alpha) * g
        avg = np.sqrt(square_avg - grad_avg * grad_avg) + eps
    else:
        avg = np.sqrt(square_avg) + eps
    if momentum != 0:
        momentum_buffer[...] = momentum * momentum_buffer + g / avg
        param[...] = param - lr * momentum_buffer
    else:
        param[...] = param - lr * g / avg


@_storage
def adam_(param, grad, exp_avg, exp_avg_sq, *, step, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
          weight_decay=0.0, amsgrad=False, max_exp_avg_sq=None, maximize=False,
          bias_correction=True, decoupled_weight_decay=False):
    """One Adam step, in place (twin of :func:`fastadam.adam_`).

    ``g = -grad if maximize else grad``; weight decay: ``g = g + weight_decay*param`` (L2)
    or ``param = param*(1 - lr*weight_decay)`` (decoupled);
    ``exp_avg = b1*exp_avg + (1-b1)*g``; ``exp_avg_sq = b2*exp_avg_sq + (1-b2)*g*g``;
    ``bc1 = 1 - b1**step``, ``bc2 = 1 - b2**step`` (1 without bias correction);
    amsgrad: ``max_exp_avg_sq = maximum(max_exp_avg_sq, exp_avg_sq)`` replaces exp_avg_sq in
    ``param = param - (lr/bc1)*exp_avg / (sqrt(exp_avg_sq)/sqrt(bc2) + eps)``.
    """
    beta1, beta2 = betas
    if decoupled_weight_decay:
        g = -grad if maximize else grad
        param[...] = param * (1 - lr * weight_decay)
    else:
        g = _preamble(param, grad, weight_decay, maximize)

    exp_avg[...] = beta1 * exp_avg + (1 - beta1) * g             # 1st moment
    exp_avg_sq[...] = beta2 * exp_avg_sq + (1 - beta2) * g * g    # 2nd moment

    bc1 = 1 - beta1 ** step if bias_correction else 1.0             # bias corrections,
    bc2 = 1 - beta2 ** step if bias_correction else 1.0             # in float64
    v = exp_avg_sq
    if amsgrad:
        np.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
        v = max_exp_avg_sq
    param[...] = param - (lr / bc1) * exp_avg / (np.sqrt(v) / math.sqrt(bc2) + eps)


@_storage
def adamw_(param, grad, exp_avg, exp_avg_sq, *, step, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
           weight_decay=1e-2, amsgrad=False, max_exp_avg_sq=None, maximize=False,
           bias_correction=True):
    """One AdamW step, in place (twin of :func:`fastadam.adamw_`): :func:`adam_` with
    decoupled weight decay, ``param = param*(1 - lr*weight_decay)`` before the Adam update,
    and weight_decay 1e-2 by default."""
    adam_(param, grad, exp_avg, exp_avg_sq, step=step, lr=lr, betas=betas, eps=eps,
          weight_decay=weight_decay, amsgrad=amsgrad, max_exp_avg_sq=max_exp_avg_sq,
          maximize=maximize, bias_correction=bias_correction, decoupled_weight_decay=True)


@_storage
def lion_(param, grad, exp_avg, *, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0,
          maximize=False):
    """One Lion step, in place (twin of :func:`fastadam.lion_`).

    ``g = -grad if maximize else grad``; ``c = b1*exp_avg + (1-b1)*g``;
    ``param = param*(1 - lr*weight_decay) - lr*sign(c)``; ``exp_avg = b2*exp_avg + (1-b2)*g``.
    """
    beta1, beta2 = betas
    g = -grad if maximize else grad
    c = beta1 * exp_avg + (1 - beta1) * g                          # the update's direction
    param[...] = param * (1 - lr * weight_decay) - lr * np.sign(c)
    exp_avg[...] = beta2 * exp_avg + (1 - beta2) * g               # the momentum


# ---------------------------------------------------------------------------- torch.optim's
# elementwise family. Each follows torch.optim 2.13's for-loop implementation (its
# ``_single_tensor_<name>``), operation by operation, so that float64 agrees with torch to a
# few ulps after many steps: ``a.lerp_(b, w)`` is :func:`_lerp`, ``a.addcmul_(x, y, value=c)``
# is ``a + c*x*y``, ``a.addcdiv_(x, y, value=c)`` is ``a + c*x/y``. A per-tensor scalar state
# (NAdam's ``mu_product``, ASGD's ``eta`` and ``mu``) is a 0-d array updated in place, in its
# own dtype: torch keeps these in float32 unless its default dtype is float64.


def _lerp(start, end, weight):
    """``start + weight*(end - start)``, computed as torch's CPU lerp does (from the nearer
    end, so that weight 1 gives ``end`` exactly)."""
    if weight < 0.5:
        return start + weight * (end - start)
    return end - (end - start) * (1 - weight)


@_storage
def adagrad_(param, grad, state_sum, *, step, lr=1e-2, lr_decay=0.0, weight_decay=0.0,
             eps=1e-10, maximize=False):
    """One Adagrad step, in place.

    ``g = -grad if maximize else grad``; ``g = g + weight_decay*param``;
    ``clr = lr / (1 + (step-1)*lr_decay)``; ``state_sum = state_sum + g*g``;
    ``param = param - clr*g / (sqrt(state_sum) + eps)``. A new state_sum starts at
    ``initial_accumulator_value`` (torch.optim.Adagrad's option, 0 by default).
    """
    g = _preamble(param, grad, weight_decay, maximize)
    clr = lr / (1 + (step - 1) * lr_decay)
    state_sum[...] = state_sum + g * g
    std = np.sqrt(state_sum) + eps
    param[...] = param + (-clr) * g / std


@_storage
def adadelta_(param, grad, square_avg, acc_delta, *, lr=1.0, rho=0.9, eps=1e-6,
              weight_decay=0.0, maximize=False):
    """One Adadelta step, in place.

    ``g = -grad if maximize else grad``; ``g = g + weight_decay*param``;
    ``square_avg = rho*square_avg + (1-rho)*g*g``;
    ``delta = sqrt(acc_delta + eps) / sqrt(square_avg + eps) * g``;
    ``acc_delta = rho*acc_delta + (1-rho)*delta*delta``; ``param = param - lr*delta``.
    """
    g = _preamble(param, grad, weight_decay, maximize)
    square_avg[...] = square_avg * rho + (1 - rho) * g * g
    std = np.sqrt(square_avg + eps)
    delta = np.sqrt(acc_delta + eps) / std * g
    acc_delta[...] = acc_delta * rho + (1 - rho) * delta * delta
    param[...] = param + (-lr) * delta


@_storage
def adamax_(param, grad, exp_avg, exp_inf, *, step, lr=2e-3, betas=(0.9, 0.999), eps=1e-8,
            weight_decay=0.0, maximize=False):
    """One Adamax step, in place.

    ``g = -grad if maximize else grad``; ``g = g + weight_decay*param``;
    ``exp_avg = lerp(exp_avg, g, 1-b1)``; ``exp_inf = maximum(b2*exp_inf, |g| + eps)``;
    ``param = param - (lr / (1 - b1**step)) * exp_avg / exp_inf``.
    """
    beta1, beta2 = betas
    g = _preamble(param, grad, weight_decay, maximize)
    exp_avg[...] = _lerp(exp_avg, g, 1 - beta1)
    exp_inf[...] = np.maximum(exp_inf * beta2, np.abs(g) + eps)   # NaN propagates
    clr = lr / (1 - beta1 ** step)
    param[...] = param + (-clr) * exp_avg / exp_inf


def _weight_decay(param, grad, lr, weight_decay, maximize, decoupled):
    g = -grad if maximize else grad
    if weight_decay != 0:
        if decoupled:
            param[...] = param * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * param
    return g


@_storage
def nadam_(param, grad, exp_avg, exp_avg_sq, mu_product, *, step, lr=2e-3,
           betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, momentum_decay=4e-3,
           decoupled_weight_decay=False, maximize=False):
    """One NAdam step, in place; ``mu_product`` is the per-tensor product of the momentum
    coefficients so far (a 0-d array, 1 before the first step).

    ``g`` as in :func:`adam_` (L2 or decoupled weight decay);
    ``mu = b1*(1 - 0.5*0.96**(step*momentum_decay))``, ``mu_next`` the same at ``step+1``;
    ``mu_product = mu_product*mu``; ``exp_avg = lerp(exp_avg, g, 1-b1)``;
    ``exp_avg_sq = b2*exp_avg_sq + (1-b2)*g*g``;
    ``denom = sqrt(exp_avg_sq / (1 - b2**step)) + eps``;
    ``param = param - lr*(1-mu)/(1-mu_product) * g/denom
    - lr*mu_next/(1 - mu_product*mu_next) * exp_avg/denom``.
    """
    beta1, beta2 = betas
    bc2 = 1 - beta2 ** step
    g = _weight_decay(param, grad, lr, weight_decay, maximize, decoupled_weight_decay)
    mu = beta1 * (1.0 - 0.5 * (0.96 ** (step * momentum_decay)))
    mu_next = beta1 * (1.0 - 0.5 * (0.96 ** ((step + 1) * momentum_decay)))
    mu_product[...] = mu_product * mu
    prod = float(mu_product)
    exp_avg[...] = _lerp(exp_avg, g, 1 - beta1)
    exp_avg_sq[...] = exp_avg_sq * beta2 + (1 - beta2) * g * g
    denom = np.sqrt(exp_avg_sq / bc2) + eps
    param[...] = param + (-lr * (1.0 - mu) / (1.0 - prod)) * g / denom
    param[...] = param + ((-lr * mu_next) / (1.0 - prod * mu_next)) * exp_avg / denom


@_storage
def radam_(param, grad, exp_avg, exp_avg_sq, *, step, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
           weight_decay=0.0, decoupled_weight_decay=False, maximize=False):
    """One RAdam step, in place.

    ``g`` as in :func:`adam_`; ``exp_avg = lerp(exp_avg, g, 1-b1)``;
    ``exp_avg_sq = b2*exp_avg_sq + (1-b2)*g*g``; ``bc1 = 1 - b1**step``,
    ``bc2 = 1 - b2**step``; ``rho_inf = 2/(1-b2) - 1``,
    ``rho_t = rho_inf - 2*step*b2**step/bc2``. If ``rho_t > 5``:
    ``rect = sqrt((rho_t-4)*(rho_t-2)*rho_inf / ((rho_inf-4)*(rho_inf-2)*rho_t))`` and
    ``param = param - exp_avg/bc1 * lr * sqrt(bc2)/(sqrt(exp_avg_sq) + eps) * rect``;
    otherwise ``param = param - exp_avg/bc1 * lr``.
    """
    beta1, beta2 = betas
    g = _weight_decay(param, grad, lr, weight_decay, maximize, decoupled_weight_decay)
    exp_avg[...] = _lerp(exp_avg, g, 1 - beta1)
    exp_avg_sq[...] = exp_avg_sq * beta2 + (1 - beta2) * g * g
    bc1 = 1 - beta1 ** step
    bc2 = 1 - beta2 ** step
    corrected = exp_avg / bc1
    rho_inf = 2 / (1 - beta2) - 1
    rho_t = rho_inf - 2 * step * (beta2 ** step) / bc2
    if rho_t > 5.0:
        rect = ((rho_t - 4) * (rho_t - 2) * rho_inf
                / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
        adaptive = (bc2 ** 0.5) / (np.sqrt(exp_avg_sq) + eps)
        param[...] = param - corrected * lr * adaptive * rect
    else:
        param[...] = param - corrected * lr


@_storage
def rprop_(param, grad, prev, step_size, *, lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50),
           maximize=False):
    """One Rprop step, in place; ``step_size`` holds each element's step size (``lr`` before
    the first step), ``prev`` the previous step's gradient (0 before the first).

    ``g = -grad if maximize else grad``; ``s = sign(g*prev)``; ``eta = etaplus`` where
    ``s > 0``, ``etaminus`` where ``s < 0``, 1 where ``s == 0``;
    ``step_size = clip(step_size*eta, step_sizes[0], step_sizes[1])``; ``g = 0`` where
    ``eta == etaminus``; ``param = param - sign(g)*step_size``; ``prev = g``, with torch's
    sign(NaN) = 0: a NaN gradient element changes only ``prev``. (``lr`` only sets the
    initial step sizes.)
    """
    etaminus, etaplus = etas
    lo, hi = step_sizes
    g = -grad if maximize else grad
    # torch's sign on the CPU: 0 for NaN, so a NaN element keeps its step size and param
    s = np.nan_to_num(np.sign(g * prev), nan=0.0)
    eta = np.array(s)           # an array also for 0-d params (s is then a NumPy scalar)
    eta[s > 0] = etaplus
    eta[s < 0] = etaminus
    eta[s == 0] = 1
    step_size[...] = np.clip(step_size * eta, lo, hi)
    g = np.where(eta == eta.dtype.type(etaminus), 0, g).astype(param.dtype)
    param[...] = param + (-1) * np.nan_to_num(np.sign(g), nan=0.0) * step_size
    prev[...] = g


@_storage
def asgd_(param, grad, ax, eta, mu, *, step, lr=1e-2, lambd=1e-4, alpha=0.75, t0=1e6,
          weight_decay=0.0, maximize=False):
    """One ASGD step, in place; ``eta`` and ``mu`` are the per-tensor step size and
    averaging rate (0-d arrays: ``lr`` and 1 before the first step), ``ax`` the average.

    ``g = -grad if maximize else grad``; ``g = g + weight_decay*param``;
    ``param = param*(1 - lambd*eta) - eta*g``; ``ax = ax + (param - ax)*mu`` (``ax = param``
    while ``mu == 1``); then ``eta = lr / (1 + lambd*lr*step)**alpha`` and
    ``mu = 1 / max(1, step - t0)``.
    """
    g = _preamble(param, grad, weight_decay, maximize)
    eta_value = float(eta)
    param[...] = param * (1 - lambd * eta_value)
    param[...] = param + (-eta_value) * g
    if float(mu) != 1:
        ax[...] = ax + (param - ax) * param.dtype.type(mu[()])
    else:
        ax[...] = param
    # in IEEE float64 (as the kernel's C), where Python floats' ** and / would raise; NumPy
    # scalars' ** is the C library's pow (np.power on arrays may use other SIMD code)
    with np.errstate(all="ignore"):
        eta[...] = np.float64(lr) / (np.float64(1 + lambd * lr * step) ** np.float64(alpha))
    mu[...] = 1 / max(1, step - t0)
