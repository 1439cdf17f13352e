"""The best a NumPy user can write: the benchmarked configurations as in-place ufuncs with
``out=`` and one preallocated scratch array ``tmp``, no temporaries. The benchmark's second
baseline, after the readable :mod:`fastadam.reference`. Only the options the benchmark uses
are implemented (SGD with momentum; RMSprop, Adam and AdamW with their defaults);
tests/test_tuned.py checks them against the reference.
"""

import math

import numpy as np

__all__ = ["sgd_momentum_", "rmsprop_", "adam_"]


def sgd_momentum_(param, grad, buf, tmp, *, lr, momentum):
    """buf = momentum*buf + g; param -= lr*buf (dampening 0, after the first step)."""
    np.multiply(buf, momentum, out=buf)
    np.add(buf, grad, out=buf)
    np.multiply(buf, lr, out=tmp)
    np.subtract(param, tmp, out=param)


def rmsprop_(param, grad, square_avg, tmp, *, lr=1e-2, alpha=0.99, eps=1e-8):
    np.multiply(square_avg, alpha, out=square_avg)
    np.multiply(grad, grad, out=tmp)
    np.multiply(tmp, 1 - alpha, out=tmp)
    np.add(square_avg, tmp, out=square_avg)
    np.sqrt(square_avg, out=tmp)
    np.add(tmp, eps, out=tmp)
    np.divide(grad, tmp, out=tmp)
    np.multiply(tmp, lr, out=tmp)
    np.subtract(param, tmp, out=param)


def adam_(param, grad, exp_avg, exp_avg_sq, tmp, *, step, lr=1e-3, betas=(0.9, 0.999),
          eps=1e-8, weight_decay=0.0, decoupled_weight_decay=False):
    """Adam, or AdamW with decoupled_weight_decay (no L2 term, no amsgrad)."""
    beta1, beta2 = betas
    if decoupled_weight_decay and weight_decay != 0:
        np.multiply(param, 1 - lr * weight_decay, out=param)
    np.multiply(exp_avg, beta1, out=exp_avg)
    np.multiply(grad, 1 - beta1, out=tmp)
    np.add(exp_avg, tmp, out=exp_avg)
    np.multiply(exp_avg_sq, beta2, out=exp_avg_sq)
    np.multiply(grad, 1 - beta2, out=tmp)
    np.multiply(tmp, grad, out=tmp)
    np.add(exp_avg_sq, tmp, out=exp_avg_sq)
    np.sqrt(exp_avg_sq, out=tmp)
    np.multiply(tmp, 1 / math.sqrt(1 - beta2 ** step), out=tmp)
    np.add(tmp, eps, out=tmp)
    np.divide(exp_avg, tmp, out=tmp)
    np.multiply(tmp, lr / (1 - beta1 ** step), out=tmp)
    np.subtract(param, tmp, out=param)
