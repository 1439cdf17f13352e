"""The update rules in plain NumPy, written to be read: fastadam's kernels are tested and
benchmarked against these.

Same names and signatures as the fast functions (``fastadam.sgd_`` and so on), in place,
returning None, but with no input validation and with temporaries. Scalars stay Python
floats, so float32 arrays are computed in float32, as the kernels do.
"""

import math

import numpy as np

__all__ = ["sgd_", "rmsprop_", "adam_", "adamw_", "lion_"]


def _preamble(param, grad, weight_decay, maximize):
    g = -grad if maximize else grad
    if weight_decay != 0:
        g = g + weight_decay * param
    return g


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


def adamw_(param, grad, exp_avg, exp_avg_sq, *, step, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
           weight_decay=1e-2, amsgrad=False, max_exp_avg_sq=None, maximize=False,
           bias_correction=True):
    """One AdamW step, in place (twin of :func:`fastadam.adamw_`): :func:`adam_` with
    decoupled weight decay, ``param = param*(1 - lr*weight_decay)`` before the Adam update,
    and weight_decay 1e-2 by default."""
    adam_(param, grad, exp_avg, exp_avg_sq, step=step, lr=lr, betas=betas, eps=eps,
          weight_decay=weight_decay, amsgrad=amsgrad, max_exp_avg_sq=max_exp_avg_sq,
          maximize=maximize, bias_correction=bias_correction, decoupled_weight_decay=True)


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
