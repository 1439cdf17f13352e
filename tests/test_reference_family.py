"""fastadam.reference's torch.optim family rules against torch.optim's own for-loop
implementations (foreach=False), over many steps, both dtypes, every option.

These pin the rules the fused kernels are checked against: each reference function follows
torch.optim 2.13's ``_single_tensor_<name>`` operation by operation, so float64 must agree
to a few ulps and float32 to float32 rounding after 100 steps.
"""


import numpy as np
import pytest

import fastadam.reference as ref

torch = pytest.importorskip("torch")

STEPS = 100
SIZES = (0, 1, 7, 65)


def _close(actual, expected, dtype, what):
    if dtype == np.float64:
        rtol, atol = 1e-12, 1e-14
    else:
        finite = expected[np.isfinite(expected)]
        scale = float(np.max(np.abs(finite))) if finite.size else 0.0
        rtol, atol = 1e-5, 1e-6 * scale
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


# name -> (torch class, option sets, state names in the reference's positional order,
#          per-tensor scalar states, whether the reference takes step=)
FAMILY = {
    "adagrad": ("Adagrad", [dict(), dict(lr=0.1, lr_decay=0.01, eps=1e-6),
                            dict(weight_decay=0.1, maximize=True),
                            dict(initial_accumulator_value=0.5, lr=0.05)],
                ("sum",), (), True),
    "adadelta": ("Adadelta", [dict(), dict(lr=0.5, rho=0.8, eps=1e-4),
                              dict(weight_decay=0.1, maximize=True)],
                 ("square_avg", "acc_delta"), (), False),
    "adamax": ("Adamax", [dict(), dict(lr=0.01, betas=(0.8, 0.95), eps=1e-6),
                          dict(weight_decay=0.1, maximize=True)],
               ("exp_avg", "exp_inf"), (), True),
    "nadam": ("NAdam", [dict(), dict(lr=0.01, betas=(0.8, 0.95), eps=1e-6,
                                     momentum_decay=0.01),
                        dict(weight_decay=0.1, maximize=True),
                        dict(weight_decay=0.1, decoupled_weight_decay=True)],
              ("exp_avg", "exp_avg_sq"), ("mu_product",), True),
    "radam": ("RAdam", [dict(), dict(lr=0.01, betas=(0.8, 0.95), eps=1e-6),
                        dict(weight_decay=0.1, maximize=True),
                        dict(weight_decay=0.1, decoupled_weight_decay=True),
                        # beta2 small enough that rho_t > 5 from the first steps on
                        dict(betas=(0.9, 0.6))],
              ("exp_avg", "exp_avg_sq"), (), True),
    "rprop": ("Rprop", [dict(), dict(lr=0.05, etas=(0.3, 1.5), step_sizes=(1e-3, 0.2)),
                        dict(maximize=True)],
              ("prev", "step_size"), (), False),
    "asgd": ("ASGD", [dict(), dict(lr=0.05, lambd=1e-2, alpha=0.5, t0=10),
                      dict(weight_decay=0.1, maximize=True, t0=0)],
             ("ax",), ("eta", "mu"), True),
}

CASES = [(name, i) for name, row in FAMILY.items() for i in range(len(row[1]))]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,case", CASES)
def test_reference_follows_torch_for_loop(name, case, dtype):
    cls_name, options, state_names, scalar_names, takes_step = FAMILY[name]
    opts = dict(options[case])
    rule = getattr(ref, name + "_")
    rng = np.random.default_rng(case)
    tdtype = torch.float32 if dtype == np.float32 else torch.float64
    params = [torch.tensor(rng.standard_normal(n), dtype=tdtype) for n in SIZES]
    params.append(torch.tensor(rng.standard_normal((3, 5)), dtype=tdtype))
    ours = [p.numpy().copy() for p in params]
    opt = getattr(torch.optim, cls_name)(params, foreach=False, **opts)
    init = opts.pop("initial_accumulator_value", 0.0)
    # the reference's states, made as torch makes them
    states = []
    for p in ours:
        st = {}
        for s in state_names:
            if s == "step_size":
                st[s] = np.full_like(p, opts.get("lr", 1e-2))
            elif s == "sum":
                st[s] = np.full_like(p, init)
            else:
                st[s] = np.zeros_like(p)
        # torch's scalar dtype: float32 unless its default dtype is float64
        scalar = np.float64 if torch.get_default_dtype() == torch.float64 else np.float32
        for s in scalar_names:
            first = opts.get("lr", 1e-2) if s == "eta" else 1.0
            st[s] = np.array(first, dtype=scalar)
        states.append(st)
    for t in range(1, STEPS + 1):
        grads = [rng.standard_normal(p.shape).astype(dtype) for p in ours]
        for p, g in zip(params, grads):
            p.grad = torch.from_numpy(g.copy())
        opt.step()
        for p, g, st in zip(ours, grads, states):
            arrays = [st[s] for s in state_names] + [st[s] for s in scalar_names]
            rule(p, g, *arrays, **(dict(step=t) if takes_step else {}), **opts)
    for i, (p, q, st) in enumerate(zip(params, ours, states)):
        _close(q, p.detach().numpy(), dtype, f"{name} param {i}")
        for s in state_names + scalar_names:
            _close(np.asarray(st[s]), opt.state[p][s].numpy(), dtype, f"{name} {s} {i}")

