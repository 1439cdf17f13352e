"""Two oracles for the gradient policy (nonfinite, max_grad_norm, grad_scale) of any row of
tests/optimizers.py, neither derived from fastadam's kernels:

- :class:`TorchSequence`: torch's own mixed-precision sequence on copies of the arrays:
  ``torch.amp.GradScaler.unscale_`` (which multiplies every grad by ``float32(1/s)``),
  ``torch.nn.utils.clip_grad_norm_`` over all params, then the row's torch.optim step
  (``foreach=False``), through ``GradScaler.step`` (which skips the step when a grad was
  NaN or inf) when the policy checks for non-finite values.
- :class:`Float64Model`: the policy's definition in float64, from float64-widened grads:
  ``g / s``; the 2-norm of those unscaled grads; ``g *= min(1, max_norm / (norm + 1e-6))``
  (a NaN norm propagating, as torch's clamp does); then the row's update rule as
  ``fastadam.reference`` writes it (plain NumPy, the rule as torch.optim documents it), in
  float64; a per-tensor scalar state (NAdam's mu_product, ASGD's eta and mu) in float32,
  as the classes and torch.optim keep it.

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

f64 = np.float64


def split_policy(hyper):
    """(the update's hyperparameters, nonfinite, max_grad_norm) from an optimizer's kwargs."""
    h = dict(hyper)
    return h, h.pop("nonfinite", "propagate"), h.pop("max_grad_norm", None)


# ------------------------------------------------------------------------------ torch

class TorchSequence:
    """torch's GradScaler.unscale_ -> clip_grad_norm_ -> optimizer step, on copies."""

    def __init__(self, info, arrays, hyper):
        import torch
        self.torch = torch
        h, self.nonfinite, self.max_norm = split_policy(hyper)
        self.params = [torch.nn.Parameter(torch.from_numpy(np.array(a, copy=True)))
                       for a in arrays]
        self.opt = getattr(torch.optim, info.torch_name)(self.params, foreach=False,
                                                         **info.torch_kwargs(h))
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
    """A row's optimizer as defined, in float64, with the policy of unscale_and_clip."""

    def __init__(self, info, arrays, hyper):
        self.info = info
        h, self.nonfinite, self.max_norm = split_policy(hyper)
        self.h = info.full(h)
        self.params = [np.array(a, dtype=f64) for a in arrays]
        self.states = [info.initial_states(self.h, p) for p in self.params]
        self.t = 0
        self.norm = None

    def step(self, grads, grad_scale=None):
        """One step; False (nothing changed) for a skipped one."""
        g64, self.norm = unscale_and_clip(grads, self.nonfinite, self.max_norm, grad_scale)
        if g64 is None:
            return False
        self.t += 1
        with np.errstate(all="ignore"):
            for p, g, st in zip(self.params, g64, self.states):
                self.info.call(self.info.reference, p, g, st, self.h, self.t)
        return True
