"""How closely fastadam.torch follows torch.optim: the figures of docs/torch.md's "Agreement
with torch.optim" section, measured.

    python bench/parity_report.py                  # every section, seeds 0-4 (about 4 min)
    python bench/parity_report.py --seeds 0 --steps 50

Needs torch. Run it from any folder but the repository root (or with the root's fastadam
built in place); it uses whatever ``import fastadam`` finds, and says which.

Sections:

1. training: two copies of a small conv net (conv 2->4 3x3, tanh, linear 144->16, tanh,
   linear 16->3; cross entropy on random batches of 8), one stepped by torch.optim.X and
   one by fastadam.torch.X, each on its own gradients, for ``--steps`` steps, per option
   set, dtype and seed. Deviation: the largest |a - b| over every param and state tensor,
   relative to that tensor's largest |a|. Step counts must be equal.
2. torch itself: torch.optim.X with foreach=False against foreach=True, the same setup.
3. the same gradients: both optimizers fed identical random gradients (no model, so no
   feedback through training), deviation after 1 step and after ``--same-grad-steps``.
4. checkpoints: torch.optim -> fastadam.torch -> torch.optim (torch.save/torch.load of the
   state dict after a third and two thirds of ``--steps``: 50 and 100 of 150) against a run
   that stayed with torch.optim.

Nothing here passes or fails: tests/test_torch_dropin.py holds the asserted tolerances.
"""

from __future__ import annotations

import argparse
import copy
import io
import os
import platform
import statistics
import sys
import time

import numpy as np

try:
    import torch
    from torch import nn
except ImportError:
    sys.exit("parity_report needs torch: pip install 'fastadam[torch]'")

import fastadam
import fastadam.torch as ft

# The training option sets of the tests' registry (tests/optimizers.py), which
# tests/test_torch_dropin.py trains with too.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tests"))
from optimizers import TRAINING_CASES as CASES  # noqa: E402
MOVES = [("Adam", dict(lr=3e-3)), ("AdamW", dict(amsgrad=True, lr=3e-3)),
         ("SGD", dict(lr=0.01, momentum=0.9, nesterov=True)),
         ("RMSprop", dict(lr=1e-3, momentum=0.5, centered=True))]
DTYPES = (torch.float32, torch.float64)


def label(name, kw):
    return name + " " + (" ".join(f"{k}={v}" for k, v in kw.items()) or "defaults")


def make_model(dtype, seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.Tanh(), nn.Flatten(), nn.Linear(144, 16),
                         nn.Tanh(), nn.Linear(16, 3)).to(dtype)


def batches(dtype, seed, n):
    gen = torch.Generator().manual_seed(1000 + seed)
    return [(torch.randn(8, 2, 8, 8, generator=gen, dtype=dtype),
             torch.randint(0, 3, (8,), generator=gen)) for _ in range(n)]


def train_step(model, opt, x, y, sign=1.0):
    opt.zero_grad()
    loss = sign * nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    if not np.isfinite(loss.item()):
        raise RuntimeError(f"{type(opt).__name__}: the loss is {loss.item()}")


def deviation(params_a, opt_a, params_b, opt_b):
    """max |a - b| / max |a| over params and every state tensor; raises on unequal steps."""
    worst = 0.0
    for pa, pb in zip(params_a, params_b):
        sa, sb = opt_a.state[pa], opt_b.state[pb]
        if set(sa) != set(sb):
            raise RuntimeError(f"state keys differ: {sorted(sa)} vs {sorted(sb)}")
        pairs = [(pa.detach(), pb.detach())]
        for k in sa:
            if k == "step":
                if float(sa[k]) != float(sb[k]):
                    raise RuntimeError(f"step counts differ: {float(sa[k])} vs {float(sb[k])}")
            else:
                pairs.append((sa[k], sb[k]))
        for a, b in pairs:
            scale = a.abs().max().item()
            if scale:
                worst = max(worst, (a - b).abs().max().item() / scale)
    return worst


def train_pair(make_a, make_b, dtype, seed, steps, sign):
    a = make_model(dtype, seed)
    b = copy.deepcopy(a)
    opt_a, opt_b = make_a(a.parameters()), make_b(b.parameters())
    for x, y in batches(dtype, seed, steps):
        train_step(a, opt_a, x, y, sign)
        train_step(b, opt_b, x, y, sign)
    return deviation(list(a.parameters()), opt_a, list(b.parameters()), opt_b)


def section_training(seeds, steps):
    print(f"1. training: torch.optim.X vs fastadam.torch.X, {steps} steps, seeds "
          f"{', '.join(map(str, seeds))}; deviation = max over params and states of "
          f"max|a-b| / max|a|")
    print(f"   {'option set':<58} {'dtype':<8} {'median':>8} {'largest':>8} {'(seed)':>6}")
    worst = {d: (0.0, None, None) for d in DTYPES}
    typical = {d: [] for d in DTYPES}
    for name, kw, sign in CASES:
        for dtype in DTYPES:
            devs = [train_pair(lambda p: getattr(torch.optim, name)(p, **kw),
                               lambda p: getattr(ft, name)(p, **kw), dtype, s, steps, sign)
                    for s in seeds]
            i = int(np.argmax(devs))
            dname = str(dtype).replace("torch.", "")
            print(f"   {label(name, kw):<58} {dname:<8} {statistics.median(devs):8.1e} "
                  f"{devs[i]:8.1e} {seeds[i]:>6}")
            if devs[i] > worst[dtype][0]:
                worst[dtype] = (devs[i], label(name, kw), seeds[i])
            if not kw:                          # Adam, AdamW at their defaults
                typical[dtype] += devs
    print(f"   over {len(CASES)} option sets x {len(seeds)} seeds:")
    for dtype in DTYPES:
        dev, where, seed = worst[dtype]
        print(f"   {str(dtype).replace('torch.', ''):<8} typical (Adam/AdamW defaults, median) "
              f"{statistics.median(typical[dtype]):.1e}; largest {dev:.1e} ({where}, seed {seed})")


def section_torch_itself(steps):
    print(f"\n2. torch itself: torch.optim.X(foreach=False) vs (foreach=True), {steps} steps, "
          f"seed 0, every option set")
    for dtype in DTYPES:
        devs = [train_pair(lambda p: getattr(torch.optim, name)(p, foreach=False, **kw),
                           lambda p: getattr(torch.optim, name)(p, foreach=True, **kw),
                           dtype, 0, steps, sign) for name, kw, sign in CASES]
        worst = max(range(len(devs)), key=devs.__getitem__)
        print(f"   {str(dtype).replace('torch.', ''):<8} largest deviation {devs[worst]:.1e}"
              + (f" ({label(*CASES[worst][:2])})" if devs[worst] else ""))


def section_same_grads(steps, n=10_000):
    print(f"\n3. the same gradients fed to both ({n} float32 elements, random gradients, "
          f"no model): deviation after 1 step and after {steps}")
    gen = torch.Generator().manual_seed(7)
    rows = []
    for name, kw, sign in CASES:
        pa = torch.randn(n, generator=gen).requires_grad_()
        pb = pa.detach().clone().requires_grad_()
        opt_a, opt_b = getattr(torch.optim, name)([pa], **kw), getattr(ft, name)([pb], **kw)
        first = None
        for t in range(steps):
            g = torch.randn(n, generator=gen)
            pa.grad, pb.grad = g.clone(), g.clone()
            opt_a.step()
            opt_b.step()
            if t == 0:
                first = deviation([pa], opt_a, [pb], opt_b)
        rows.append((label(name, kw), first, deviation([pa], opt_a, [pb], opt_b)))
    eps32 = float(np.finfo(np.float32).eps)
    for what, first, last in rows:
        print(f"   {what:<58} 1 step {first:8.1e} ({first / eps32:4.1f} eps)   "
              f"{steps} steps {last:8.1e}")
    lasts = [r[2] for r in rows]
    print(f"   after {steps} steps: {min(lasts):.1e} to {max(lasts):.1e}")


def checkpoint(opt):
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    return torch.load(buf)


def section_moves(steps):
    moves = (steps // 3, 2 * steps // 3)
    print(f"\n4. checkpoints: torch.optim -> fastadam.torch (step {moves[0]}) -> torch.optim "
          f"(step {moves[1]}), {steps} steps, seed 5, vs a run that stayed with torch.optim")
    for dtype in DTYPES:
        devs = []
        for name, kw in MOVES:
            data = batches(dtype, 5, steps)
            ref = make_model(dtype, 5)
            model = copy.deepcopy(ref)
            opt_ref = getattr(torch.optim, name)(ref.parameters(), **kw)
            opt = getattr(torch.optim, name)(model.parameters(), **kw)
            for i, (x, y) in enumerate(data):
                if i in moves:
                    sd = checkpoint(opt)
                    opt = getattr(ft if i == moves[0] else torch.optim, name)(
                        model.parameters(), **kw)
                    opt.load_state_dict(sd)
                train_step(ref, opt_ref, x, y)
                train_step(model, opt, x, y)
            devs.append(deviation(list(ref.parameters()), opt_ref, list(model.parameters()),
                                  opt))
        print(f"   {str(dtype).replace('torch.', ''):<8} largest deviation at step {steps} "
              f"{max(devs):.1e} ({', '.join(f'{m[0]} {d:.1e}' for m, d in zip(MOVES, devs))})")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    ap.add_argument("--steps", type=int, default=150, help="training steps (default 150)")
    ap.add_argument("--same-grad-steps", type=int, default=200)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)        # tiny tensors: one thread, as the tests
    start = time.perf_counter()
    print(f"fastadam {fastadam.__version__} ({fastadam.__file__}) | torch {torch.__version__} | "
          f"numpy {np.__version__} | python {platform.python_version()} | "
          f"simd path {fastadam.get_simd_path()}")
    section_training(args.seeds, args.steps)
    section_torch_itself(args.steps)
    section_same_grads(args.same_grad_steps)
    section_moves(args.steps)
    print(f"\n({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
