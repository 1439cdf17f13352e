"""Two oracles for the gradient policy (nonfinite, max_grad_norm, grad_scale), neither
derived from fastadam's kernels:

- :class:`TorchSequence`: torch's own mixed-precision sequence on copies of the arrays:
  ``torch.amp.GradScaler.unscale_`` (which multiplies every grad by ``float32(1/s)``),
  ``torch.nn.utils.clip_grad_norm_`` over all params, then the torch.optim step
  (``foreach=False``), through ``GradScaler.step`` (which skips the step when a grad was
  NaN or inf) when the policy checks for non-finite values.
- :class:`Float64Model`: the policy's definition in float64, from float64-widened grads:
  ``g / s``; the 2-norm of those unscaled grads; ``g *= min(1, max_norm / (norm + 1e-6))``
  (a NaN norm propagating, as torch's clamp does); then the update rules as torch.optim
  documents them, in float64.

fastadam applies the policy as one factor ``±coef/s`` rounded to the grad's dtype and
multiplied into each grad once; torch multiplies by ``1/s`` and then by ``coef`` (two
roundings, ``coef`` computed in the grads' dtype from a norm in that dtype); the model
rounds nothing. With a power-of-two ``s`` the two torch multiplies cost one rounding, so
float64 results agree to a few ulps and are compared at the float64 tolerances of
conftest.assert_close; float32 ones at its float32 tolerances. For any other ``s`` torch's
``float32(1/s)`` differs from fastadam's definition (a division by ``s``) by up to 3e-8
relative, which only the float64 model can judge at float64 tolerances.
"""

import math

import numpy as np

from fastadam import SGD, Adam, AdamW, RMSprop

f64 = np.float64

# Names of each optimizer's state arrays (fastadam's and torch's are the same).
STATE_NAMES = {SGD: ("momentum_buffer",), RMSprop: ("square_avg", "momentum_buffer",
                                                    "grad_avg"),
               Adam: ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
               AdamW: ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")}
# torch.optim's defaults, which are fastadam's.
DEFAULTS = {
    SGD: dict(lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
              maximize=False),
    RMSprop: dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                  centered=False, maximize=False),
    Adam: dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
               maximize=False, bias_correction=True, decoupled_weight_decay=False),
    AdamW: dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False,
                maximize=False, bias_correction=True, decoupled_weight_decay=True),
}
POLICY_KEYS = ("nonfinite", "max_grad_norm")


def split_policy(hyper):
    """(the update's hyperparameters, nonfinite, max_grad_norm) from an optimizer's kwargs."""
    h = dict(hyper)
    return h, h.pop("nonfinite", "propagate"), h.pop("max_grad_norm", None)


def torch_supports(cls, hyper):
    """Whether torch.optim has the same option set (it has no bias_correction=False)."""
    return hyper.get("bias_correction", True)


# ------------------------------------------------------------------------------ torch

class TorchSequence:
    """torch's GradScaler.unscale_ -> clip_grad_norm_ -> optimizer step, on copies."""

    def __init__(self, cls, arrays, hyper):
        import torch
        self.torch = torch
        h, self.nonfinite, self.max_norm = split_policy(hyper)
        self.params = [torch.nn.Parameter(torch.from_numpy(np.array(a, copy=True)))
                       for a in arrays]
        tcls = {SGD: torch.optim.SGD, RMSprop: torch.optim.RMSprop, Adam: torch.optim.Adam,
                AdamW: torch.optim.AdamW}[cls]
        h.pop("bias_correction", None)
        if cls is AdamW:
            h.pop("decoupled_weight_decay", None)
        self.opt = tcls(self.params, foreach=False, **h)
        self.norm = None    # the last step's total norm of the unscaled grads, a float

    def step(self, grads, grad_scale=None):
        """One step; returns whether it was applied (GradScaler found no NaN or inf)."""
        torch = self.torch
        for p, g in zip(self.params, grads):
            p.grad = torch.from_numpy(np.array(g, copy=True))
        # A fresh scaler each step: its scale stays ``grad_scale`` (update() would move it).
        scaler = torch.amp.GradScaler("cpu", init_scale=1.0 if grad_scale is None
                                      else float(grad_scale))
        scaler.scale(torch.zeros(()))       # makes the scaler's scale tensor
        scaler.unscale_(self.opt)
        if self.max_norm is not None:
            norm = torch.nn.utils.clip_grad_norm_(self.params, self.max_norm, foreach=False)
        else:
            norm = torch.nn.utils.get_total_norm([p.grad for p in self.params],
                                                 foreach=False)
        self.norm = float(norm)
        if self.nonfinite == "propagate":
            self.opt.step()
            return True
        scaler.step(self.opt)
        found = scaler._per_optimizer_states[id(self.opt)]["found_inf_per_device"]
        return not any(float(v) for v in found.values())

    def param(self, i):
        return self.params[i].detach().numpy()

    def state(self, i):
        """{name: array} of tensor i (the names torch and fastadam share)."""
        st = self.opt.state.get(self.params[i], {})
        return {k: v.detach().numpy() for k, v in st.items()
                if k != "step" and v is not None}


# ------------------------------------------------------------------------------ float64 model

def unscale_and_clip(grads, nonfinite, max_grad_norm, grad_scale):
    """The policy's definition on float64-widened grads.

    Returns (grads as float64 arrays, the norm of the unscaled grads or None when the policy
    computes none), or (None, norm) for a skipped step; raises FloatingPointError for
    nonfinite="raise"."""
    g64 = [np.array(g, dtype=f64) for g in grads]
    if nonfinite != "propagate" and not all(np.isfinite(g).all() for g in g64):
        if nonfinite == "raise":
            raise FloatingPointError("non-finite gradient")
        return None, float("nan")
    s = 1.0 if grad_scale is None else float(grad_scale)
    g64 = [g / s for g in g64]
    norm = None
    if nonfinite != "propagate" or max_grad_norm is not None:
        with np.errstate(over="ignore", invalid="ignore"):
            squares = np.concatenate([np.square(g).ravel() for g in g64])
        try:
            total = math.fsum(squares)      # correctly rounded
        except OverflowError:               # finite squares whose sum overflows
            total = math.inf
        norm = math.sqrt(total)
    if max_grad_norm is not None:
        coef = max_grad_norm / (norm + 1e-6)
        coef = min(coef, 1.0) if not math.isnan(coef) else coef
        g64 = [g * coef for g in g64]
    return g64, norm


class Float64Model:
    """fastadam's optimizers as defined, in float64, with the policy of unscale_and_clip."""

    def __init__(self, cls, arrays, hyper):
        self.cls = cls
        h, self.nonfinite, self.max_norm = split_policy(hyper)
        self.h = dict(DEFAULTS[cls], **h)
        self.params = [np.array(a, dtype=f64) for a in arrays]
        want = {"momentum_buffer": self.h.get("momentum", 0) != 0,
                "grad_avg": bool(self.h.get("centered")),
                "max_exp_avg_sq": bool(self.h.get("amsgrad"))}
        self.states = [{n: np.zeros_like(p) for n in STATE_NAMES[cls] if want.get(n, True)}
                       for p in self.params]
        self.t = 0
        self.norm = None

    def step(self, grads, grad_scale=None):
        """One step; False (nothing changed) for a skipped one."""
        g64, self.norm = unscale_and_clip(grads, self.nonfinite, self.max_norm, grad_scale)
        if g64 is None:
            return False
        self.t += 1
        with np.errstate(all="ignore"):
            rule = {SGD: self._sgd, RMSprop: self._rmsprop, Adam: self._adam,
                    AdamW: self._adam}[self.cls]
            for p, g, st in zip(self.params, g64, self.states):
                rule(p, g, st)
        return True

    def _sgd(self, p, g, st):
        h = self.h
        if h["maximize"]:
            g = -g
        if h["weight_decay"]:
            g = g + h["weight_decay"] * p
        if h["momentum"]:
            buf = st["momentum_buffer"]
            if self.t == 1:
                buf[...] = g
            else:
                buf[...] = h["momentum"] * buf + (1 - h["dampening"]) * g
            g = g + h["momentum"] * buf if h["nesterov"] else buf.copy()
        p -= h["lr"] * g

    def _rmsprop(self, p, g, st):
        h = self.h
        if h["maximize"]:
            g = -g
        if h["weight_decay"]:
            g = g + h["weight_decay"] * p
        sq = st["square_avg"]
        sq[...] = h["alpha"] * sq + (1 - h["alpha"]) * g * g
        if h["centered"]:
            ga = st["grad_avg"]
            ga[...] = h["alpha"] * ga + (1 - h["alpha"]) * g
            avg = np.sqrt(sq - ga * ga) + h["eps"]
        else:
            avg = np.sqrt(sq) + h["eps"]
        if h["momentum"]:
            buf = st["momentum_buffer"]
            buf[...] = h["momentum"] * buf + g / avg
            p -= h["lr"] * buf
        else:
            p -= h["lr"] * g / avg

    def _adam(self, p, g, st):
        h = self.h
        lr, (b1, b2), wd = h["lr"], h["betas"], h["weight_decay"]
        if h["maximize"]:
            g = -g
        if wd and h["decoupled_weight_decay"]:
            p *= 1 - lr * wd
        elif wd:
            g = g + wd * p
        m, v = st["exp_avg"], st["exp_avg_sq"]
        m[...] = b1 * m + (1 - b1) * g
        v[...] = b2 * v + (1 - b2) * g * g
        bc1, bc2 = (1 - b1 ** self.t, 1 - b2 ** self.t) if h["bias_correction"] else (1, 1)
        if h["amsgrad"]:
            vmax = st["max_exp_avg_sq"]
            np.maximum(vmax, v, out=vmax)
            v = vmax
        p -= (lr / bc1) * m / (np.sqrt(v) / math.sqrt(bc2) + h["eps"])
