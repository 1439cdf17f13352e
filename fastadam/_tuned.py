"""The best a NumPy user can write: the benchmarked configurations as in-place ufuncs with
``out=`` and preallocated scratch arrays (``tmp``, or ``scratch``: two), no temporaries. The
benchmark's second baseline, after the readable :mod:`fastadam.reference`. Only the options
the benchmark uses are implemented (SGD with momentum; the others with their defaults, and
each rule's branches that depend on the step); tests/test_tuned.py checks them against the
reference. The later optimizers take the functional's arguments (the states, then the
hyperparameters) plus ``scratch``.
"""

import math

import numpy as np

__all__ = ["sgd_momentum_", "rmsprop_", "adam_", "lion_", "adagrad_", "adamax_", "adadelta_",
           "radam_", "rprop_", "nadam_", "asgd_"]


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


def lion_(param, grad, exp_avg, *, scratch, lr=1e-4, betas=(0.9, 0.99)):
    """c = b1*m + (1-b1)*g, written g + b1*(m - g); p -= lr*sign(c); m likewise with b2."""
    beta1, beta2 = betas
    tmp = scratch[0]
    np.subtract(exp_avg, grad, out=tmp)
    np.multiply(tmp, beta1, out=tmp)
    np.add(tmp, grad, out=tmp)
    np.sign(tmp, out=tmp)
    np.multiply(tmp, lr, out=tmp)
    np.subtract(param, tmp, out=param)
    np.subtract(exp_avg, grad, out=exp_avg)
    np.multiply(exp_avg, beta2, out=exp_avg)
    np.add(exp_avg, grad, out=exp_avg)


def adagrad_(param, grad, sum, *, scratch, step, lr=1e-2, lr_decay=0.0, eps=1e-10):
    tmp = scratch[0]
    clr = lr / (1 + (step - 1) * lr_decay)
    np.multiply(grad, grad, out=tmp)
    np.add(sum, tmp, out=sum)
    np.sqrt(sum, out=tmp)
    np.add(tmp, eps, out=tmp)
    np.divide(grad, tmp, out=tmp)
    np.multiply(tmp, clr, out=tmp)
    np.subtract(param, tmp, out=param)


def adamax_(param, grad, exp_avg, exp_inf, *, scratch, step, lr=2e-3, betas=(0.9, 0.999),
            eps=1e-8):
    beta1, beta2 = betas
    tmp = scratch[0]
    np.subtract(grad, exp_avg, out=tmp)             # m = lerp(m, g, 1 - b1)
    np.multiply(tmp, 1 - beta1, out=tmp)
    np.add(exp_avg, tmp, out=exp_avg)
    np.abs(grad, out=tmp)                           # u = max(b2*u, |g| + eps)
    np.add(tmp, eps, out=tmp)
    np.multiply(exp_inf, beta2, out=exp_inf)
    np.maximum(exp_inf, tmp, out=exp_inf)
    np.divide(exp_avg, exp_inf, out=tmp)
    np.multiply(tmp, lr / (1 - beta1 ** step), out=tmp)
    np.subtract(param, tmp, out=param)


def adadelta_(param, grad, square_avg, acc_delta, *, scratch, lr=1.0, rho=0.9, eps=1e-6):
    tmp, tmp2 = scratch
    np.multiply(square_avg, rho, out=square_avg)
    np.multiply(grad, grad, out=tmp)
    np.multiply(tmp, 1 - rho, out=tmp)
    np.add(square_avg, tmp, out=square_avg)
    np.add(square_avg, eps, out=tmp)
    np.sqrt(tmp, out=tmp)                           # std
    np.add(acc_delta, eps, out=tmp2)
    np.sqrt(tmp2, out=tmp2)
    np.divide(tmp2, tmp, out=tmp)
    np.multiply(tmp, grad, out=tmp)                 # delta
    np.multiply(tmp, tmp, out=tmp2)
    np.multiply(tmp2, 1 - rho, out=tmp2)
    np.multiply(acc_delta, rho, out=acc_delta)
    np.add(acc_delta, tmp2, out=acc_delta)
    np.multiply(tmp, lr, out=tmp)
    np.subtract(param, tmp, out=param)


def radam_(param, grad, exp_avg, exp_avg_sq, *, scratch, step, lr=1e-3, betas=(0.9, 0.999),
           eps=1e-8):
    beta1, beta2 = betas
    tmp = scratch[0]
    np.subtract(grad, exp_avg, out=tmp)             # m = lerp(m, g, 1 - b1)
    np.multiply(tmp, 1 - beta1, out=tmp)
    np.add(exp_avg, tmp, out=exp_avg)
    np.multiply(exp_avg_sq, beta2, out=exp_avg_sq)
    np.multiply(grad, 1 - beta2, out=tmp)
    np.multiply(tmp, grad, out=tmp)
    np.add(exp_avg_sq, tmp, out=exp_avg_sq)
    bc1, bc2 = 1 - beta1 ** step, 1 - beta2 ** step
    rho_inf = 2 / (1 - beta2) - 1
    rho_t = rho_inf - 2 * step * beta2 ** step / bc2
    if rho_t > 5:
        rect = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf
                         / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
        np.sqrt(exp_avg_sq, out=tmp)
        np.add(tmp, eps, out=tmp)
        np.divide(exp_avg, tmp, out=tmp)
        np.multiply(tmp, lr / bc1 * math.sqrt(bc2) * rect, out=tmp)
    else:
        np.multiply(exp_avg, lr / bc1, out=tmp)
    np.subtract(param, tmp, out=param)


def rprop_(param, grad, prev, step_size, *, scratch, lr=1e-2, etas=(0.5, 1.2),
           step_sizes=(1e-6, 50)):
    """The sign s of g*prev picks the factor etaplus (s = 1), etaminus (s = -1) or 1
    (s = 0) as 1 + s*(s*(a+b)/2 + (a-b)/2), a = etaplus - 1, b = etaminus - 1, and
    min(s + 1, 1) zeroes the gradient where the sign flipped: no masks, no temporaries."""
    etaminus, etaplus = etas
    a, b = etaplus - 1, etaminus - 1
    tmp, tmp2 = scratch
    np.multiply(grad, prev, out=tmp)
    np.sign(tmp, out=tmp)
    np.multiply(tmp, (a + b) / 2, out=tmp2)
    np.add(tmp2, (a - b) / 2, out=tmp2)
    np.multiply(tmp2, tmp, out=tmp2)
    np.add(tmp2, 1, out=tmp2)
    np.multiply(step_size, tmp2, out=step_size)
    np.clip(step_size, step_sizes[0], step_sizes[1], out=step_size)
    np.add(tmp, 1, out=tmp)
    np.minimum(tmp, 1, out=tmp)
    np.multiply(grad, tmp, out=prev)
    np.sign(prev, out=tmp)
    np.multiply(tmp, step_size, out=tmp)
    np.subtract(param, tmp, out=param)


def nadam_(param, grad, exp_avg, exp_avg_sq, mu_product, *, scratch, step, lr=2e-3,
           betas=(0.9, 0.999), eps=1e-8, momentum_decay=4e-3):
    beta1, beta2 = betas
    tmp, tmp2 = scratch
    mu = beta1 * (1 - 0.5 * 0.96 ** (step * momentum_decay))
    mu_next = beta1 * (1 - 0.5 * 0.96 ** ((step + 1) * momentum_decay))
    mu_product[...] = mu_product * mu
    prod = float(mu_product)
    np.subtract(grad, exp_avg, out=tmp)             # m = lerp(m, g, 1 - b1)
    np.multiply(tmp, 1 - beta1, out=tmp)
    np.add(exp_avg, tmp, out=exp_avg)
    np.multiply(exp_avg_sq, beta2, out=exp_avg_sq)
    np.multiply(grad, 1 - beta2, out=tmp)
    np.multiply(tmp, grad, out=tmp)
    np.add(exp_avg_sq, tmp, out=exp_avg_sq)
    np.divide(exp_avg_sq, 1 - beta2 ** step, out=tmp)
    np.sqrt(tmp, out=tmp)
    np.add(tmp, eps, out=tmp)                       # denom
    np.divide(grad, tmp, out=tmp2)
    np.multiply(tmp2, -lr * (1 - mu) / (1 - prod), out=tmp2)
    np.add(param, tmp2, out=param)
    np.divide(exp_avg, tmp, out=tmp2)
    np.multiply(tmp2, -lr * mu_next / (1 - prod * mu_next), out=tmp2)
    np.add(param, tmp2, out=param)


def asgd_(param, grad, ax, eta, mu, *, scratch, step, lr=1e-2, lambd=1e-4, alpha=0.75,
          t0=1e6):
    tmp = scratch[0]
    e, m = float(eta), float(mu)
    np.multiply(param, 1 - lambd * e, out=param)
    np.multiply(grad, e, out=tmp)
    np.subtract(param, tmp, out=param)
    if m != 1:
        np.subtract(param, ax, out=tmp)
        np.multiply(tmp, m, out=tmp)
        np.add(ax, tmp, out=ax)
    else:
        np.copyto(ax, param)
    eta[...] = lr / ((1 + lambd * lr * step) ** alpha)
    mu[...] = 1 / max(1, step - t0)
