"""Four optimizers from the same start, as figures
===============================================

The article's optimizer comparison, with fastadam: SGD, SGD + momentum, RMSprop and Adam
from the same start with the same learning rate, as figures.

The article's interactive demo races the four optimizers over a ravine-shaped loss ("very
steep in one direction, nearly flat in another"), plots their losses side by side and
traces Adam's internal state as bias correction fades. This script does the same with
fastadam's optimizer classes (``fastadam.SGD``, ``fastadam.RMSprop``, ``fastadam.Adam``) on
2-element float64 arrays, and writes three PNG figures:

- ``optimizer_paths.png``: each optimizer's path over the contours of the loss;
- ``optimizer_loss.png``: loss against step, log scale;
- ``adam_state.png``: Adam's m, v, m̂ = m/(1-β1^t), v̂ = v/(1-β2^t) for the x coordinate
  (read from the optimizer's state after every step) and the factors 1/(1-β1^t),
  1/(1-β2^t) falling to 1.

Three races, each with one learning rate shared by all four optimizers:

- the ravine f(x, y) = 0.1·x² + 9·y² (curvatures 0.2 and 18), lr = 0.1: SGD bounces across
  the steep walls (its y error is multiplied by 1 - 0.1·18 = -0.8 each step) and crawls
  along the flat floor (x error times 0.98 a step); the adaptive methods scale each
  coordinate by its own gradient size. The ravine is axis-aligned, which is where a
  per-coordinate scale helps most.
- Rosenbrock f(x, y) = (1-x)² + 100·(y-x²)² from (-1.2, 1) with lr = 0.002, small enough
  for SGD (across the valley the curvature is 1000 or more, and plain SGD is stable only
  for lr < 2/curvature): SGD + momentum reaches the minimum, SGD and RMSprop get close,
  Adam, which moves about lr per step, has only reached (0.63, 0.40) after 5000 steps.
- the same Rosenbrock with lr = 0.01: SGD and SGD + momentum diverge within a few steps,
  RMSprop rattles across the valley near the minimum, Adam reaches it. No single learning
  rate suits all four, which is the article's point about fixed step sizes; the figures
  show both learning rates rather than one that flatters any optimizer.

The article's demo prints no numbers to check; everything here is what the runs really do.
The same loops are also run with ``fastadam.reference`` (plain NumPy) as a check.

Run from the repository root:  python examples/compare_optimizers.py [--out DIR]
Needs matplotlib (pip install "fastadam[examples]").
"""

import argparse
import os
import sys

import numpy as np

try:
    import fastadam
except ImportError:  # run from a source checkout without installing: use the repo's copy
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import fastadam
from fastadam import reference

HERE = os.path.dirname(os.path.abspath(__file__))
FIGURES = ("optimizer_paths.png", "optimizer_loss.png", "adam_state.png")
BETAS = (0.9, 0.999)
MOMENTUM = 0.9
DIVERGED = 1e3          # a run whose |x| or |y| passes this has left the picture for good
LOSS_FLOOR = 1e-20      # the loss plot's lower limit (some runs reach exact zero)
DPI = 110
FIRST_STEPS = 60        # the m / m̂ panel shows these first steps


# ---- the two loss surfaces ----------------------------------------------------------------
class Ravine:
    """f(x, y) = a·x² + b·y² with a = 0.1 (flat floor) and b = 9 (steep walls)."""
    name = "ravine"
    a, b = 0.1, 9.0
    formula = "f(x, y) = 0.1·x² + 9·y²"
    start = (-4.5, 1.5)
    minimum = (0.0, 0.0)
    xlim, ylim = (-5.0, 1.5), (-2.0, 2.0)

    @classmethod
    def loss(cls, x, y):
        return cls.a * x * x + cls.b * y * y

    @classmethod
    def grad(cls, x, y):
        return np.array([2 * cls.a * x, 2 * cls.b * y])


class Rosenbrock:
    """f(x, y) = (1-x)² + 100·(y-x²)²: a curved valley with its minimum at (1, 1)."""
    name = "Rosenbrock"
    formula = "f(x, y) = (1-x)² + 100·(y-x²)²"
    start = (-1.2, 1.0)
    minimum = (1.0, 1.0)
    xlim, ylim = (-2.0, 2.0), (-1.0, 3.0)

    @staticmethod
    def loss(x, y):
        return (1 - x) ** 2 + 100 * (y - x * x) ** 2

    @staticmethod
    def grad(x, y):
        return np.array([-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)])


# (problem, learning rate shared by all four, steps)
RACES = [(Ravine, 0.1, 300), (Rosenbrock, 0.002, 5000), (Rosenbrock, 0.01, 5000)]
STATE_RACE = 2          # Adam's state is traced on this race (5000 steps: long enough for
                        # 1/(1-β2^t) to come down to 1.007)

# Name -> (fastadam optimizer, the same step with fastadam.reference's functional kernels).
OPTIMIZERS = {
    "SGD": dict(cls=lambda p, lr: fastadam.SGD([p], lr=lr), ref="sgd", kw={}),
    "SGD + momentum": dict(cls=lambda p, lr: fastadam.SGD([p], lr=lr, momentum=MOMENTUM),
                           ref="sgd", kw=dict(momentum=MOMENTUM)),
    "RMSprop": dict(cls=lambda p, lr: fastadam.RMSprop([p], lr=lr), ref="rmsprop", kw={}),
    "Adam": dict(cls=lambda p, lr: fastadam.Adam([p], lr=lr, betas=BETAS), ref="adam",
                 kw=dict(betas=BETAS)),
}
COLORS = {"SGD": "tab:red", "SGD + momentum": "tab:orange", "RMSprop": "tab:green",
          "Adam": "tab:blue"}
# Paths that end up on the same valley floor would hide each other: draw them nested, the
# first widest.
WIDTHS = {"SGD": 4.0, "SGD + momentum": 2.8, "RMSprop": 1.9, "Adam": 1.1}


class Run:
    """One optimizer's race: ``path[k]`` is (x, y) after k steps (``path[0]`` the start),
    ``loss[k]`` the loss there, ``diverged`` the step at which it left for good (or None),
    ``state`` (Adam, when traced) the per-step arrays of Adam's x-coordinate state."""

    def __init__(self, name, path, diverged, problem, state=None):
        self.name, self.path, self.diverged, self.state = name, path, diverged, state
        self.loss = problem.loss(path[:, 0], path[:, 1])


def race(problem, name, lr, steps, trace_state=False):
    """Run optimizer ``name`` (a key of OPTIMIZERS, fastadam's class) on ``problem``.

    With ``trace_state`` (Adam only), record after every step the gradient's x component
    and Adam's state for x as the optimizer holds it: ``exp_avg`` (m) and ``exp_avg_sq`` (v).
    """
    p = np.array(problem.start, dtype=np.float64)
    opt = OPTIMIZERS[name]["cls"](p, lr)
    path = [p.copy()]
    trace = {"g": [], "m": [], "v": []}
    diverged = None
    for _ in range(steps):
        g = problem.grad(*p)
        opt.step([g])
        path.append(p.copy())
        if trace_state:
            st = opt.state[0]
            trace["g"].append(g[0])
            trace["m"].append(st["exp_avg"][0])
            trace["v"].append(st["exp_avg_sq"][0])
        if not np.all(np.abs(p) < DIVERGED):    # also catches inf and NaN
            diverged = opt.step_count
            break
    state = None
    if trace_state:
        state = {k: np.array(v) for k, v in trace.items()}
        t = np.arange(1, len(state["m"]) + 1)
        state["t"] = t
        state["bc1_factor"] = 1 / (1 - BETAS[0] ** t)        # 1/(1-β1^t)
        state["bc2_factor"] = 1 / (1 - BETAS[1] ** t)        # 1/(1-β2^t)
        state["m_hat"] = state["m"] * state["bc1_factor"]
        state["v_hat"] = state["v"] * state["bc2_factor"]
    return Run(name, np.array(path), diverged, problem, state)


def race_reference(problem, name, lr, steps):
    """The same race with ``fastadam.reference``'s plain-NumPy functions; returns the path."""
    spec = OPTIMIZERS[name]
    p = np.array(problem.start, dtype=np.float64)
    s0, s1 = np.zeros_like(p), np.zeros_like(p)
    path = [p.copy()]
    for t in range(1, steps + 1):
        g = problem.grad(*p)
        if spec["ref"] == "sgd":
            reference.sgd_(p, g, momentum_buffer=s0, lr=lr, step=t, **spec["kw"])
        elif spec["ref"] == "rmsprop":
            reference.rmsprop_(p, g, s0, lr=lr, **spec["kw"])
        else:
            reference.adam_(p, g, s0, s1, step=t, lr=lr, **spec["kw"])
        path.append(p.copy())
        if not np.all(np.abs(p) < DIVERGED):
            break
    return np.array(path)


def run_all(races=RACES, state_race=STATE_RACE):
    """Every optimizer on every race: a list of ``(problem, lr, steps, {name: Run})``."""
    results = []
    for i, (problem, lr, steps) in enumerate(races):
        runs = {name: race(problem, name, lr, steps,
                           trace_state=(i == state_race and name == "Adam"))
                for name in OPTIMIZERS}
        results.append((problem, lr, steps, runs))
    return results


# ---- figures ------------------------------------------------------------------------------
def _save(fig, filename):
    """Write ``fig`` as a PNG with a 256-colour palette: the figures are a few flat colours,
    and a palette makes the files about 3x smaller than 24-bit ones."""
    import io

    import matplotlib.pyplot as plt
    from PIL import Image     # Pillow: a dependency of matplotlib

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    buf.seek(0)
    Image.open(buf).convert("RGB").quantize(256).save(filename, optimize=True)


def _title(problem, lr, steps):
    return f"{problem.name}, lr = {lr:g}, {steps} steps"


def _label(run):
    return run.name + (f" (diverged at step {run.diverged})" if run.diverged else "")


def plot_paths(results, filename):
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    fig, axes = plt.subplots(1, len(results), figsize=(5.2 * len(results), 4.8),
                             layout="constrained")
    for ax, (problem, lr, steps, runs) in zip(np.atleast_1d(axes), results):
        xs = np.linspace(*problem.xlim, 400)
        ys = np.linspace(*problem.ylim, 400)
        X, Y = np.meshgrid(xs, ys)
        Z = problem.loss(X, Y)
        levels = np.logspace(-2, np.log10(Z.max()), 18)
        ax.contourf(X, Y, Z, levels=levels, norm=LogNorm(), cmap="Greys", alpha=0.55)
        ax.contour(X, Y, Z, levels=levels, norm=LogNorm(), colors="grey", linewidths=0.4)
        for run in runs.values():
            ax.plot(run.path[:, 0], run.path[:, 1], "-", color=COLORS[run.name],
                    lw=WIDTHS[run.name], solid_capstyle="round", label=_label(run))
        ax.plot(*problem.start, "ko", ms=6, label="start")
        ax.plot(*problem.minimum, "k*", ms=12, label="minimum")
        ax.set_xlim(problem.xlim)
        ax.set_ylim(problem.ylim)
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        ax.set_title(f"{_title(problem, lr, steps)}\n{problem.formula}", fontsize=10)
        ax.legend(loc="lower right" if problem is Ravine else "upper right", fontsize=8,
                  framealpha=0.9)
    fig.suptitle("Four optimizers from the same start with the same learning rate "
                 "(fastadam kernels)", fontsize=12)
    _save(fig, filename)


def plot_losses(results, filename):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.2 * len(results), 4.2),
                             layout="constrained")
    for ax, (problem, lr, steps, runs) in zip(np.atleast_1d(axes), results):
        for run in runs.values():
            loss = np.maximum(run.loss, LOSS_FLOOR)
            steps_axis = np.arange(len(loss))
            ax.semilogy(steps_axis, loss, color=COLORS[run.name], lw=1.3, label=_label(run))
            if run.diverged:
                ax.plot(steps_axis[-1], min(loss[-1], 1e12), "x", color=COLORS[run.name],
                        ms=9, mew=2)
        gone = [f"{run.name} at step {run.diverged}" for run in runs.values() if run.diverged]
        if gone:    # a few steps on a 5000-step axis: say it in words too
            ax.text(0.03, 0.04, "diverged: " + ", ".join(gone), transform=ax.transAxes,
                    fontsize=8, color="darkred")
        ax.set_ylim(LOSS_FLOOR / 3, 1e12)
        ax.set_xlim(0, steps)
        ax.set_xlabel("step")
        ax.set_ylabel("loss (log scale)")
        ax.set_title(f"{_title(problem, lr, steps)}\n{problem.formula}", fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8, loc="upper right", framealpha=0.9)
    fig.suptitle(f"Loss against step (losses below {LOSS_FLOOR:g} are drawn at "
                 f"{LOSS_FLOOR:g}; × marks where a run diverged)", fontsize=12)
    _save(fig, filename)


def plot_adam_state(problem, lr, run, filename):
    import matplotlib.pyplot as plt

    s = run.state
    t = s["t"]
    fig, axes = plt.subplots(1, 3, figsize=(15.6, 4.4), layout="constrained")
    ax = axes[0]
    k = min(len(t), FIRST_STEPS)            # m and m̂ differ only while β1^t is not ~0
    ax.plot(t[:k], s["g"][:k], color="lightgrey", lw=3, label="gradient g")
    ax.plot(t[:k], s["m"][:k], color="tab:blue", lw=1.5, marker=".", ms=4,
            label="m (exp_avg)")
    ax.plot(t[:k], s["m_hat"][:k], "--", color="tab:purple", lw=1.5, marker=".", ms=4,
            label="m̂ = m / (1-β1^t)")
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xlabel(f"step t (first {k})")
    ax.set_ylabel("value")
    ax.set_title("1st moment: m starts at 0 and lags g;\nm̂ is a proper average of g "
                 "from step 1", fontsize=10)
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.plot(t, s["g"] ** 2, color="lightgrey", lw=2.5, label="g²")
    ax.plot(t, s["v"], color="tab:blue", lw=1.3, label="v (exp_avg_sq)")
    ax.plot(t, s["v_hat"], "--", color="tab:purple", lw=1.3, label="v̂ = v / (1-β2^t)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("step t (log scale)")
    ax.set_ylabel("value (log scale)")
    ax.set_title("2nd moment: v starts at 0.001·g², v̂ at g²;\nboth remember large "
                 "gradients for ~1/(1-β2) = 1000 steps", fontsize=10)
    ax.legend(fontsize=8)
    ax = axes[2]
    ax.plot(t, s["bc1_factor"], color="tab:orange", lw=1.5,
            label=f"1 / (1-β1^t), β1 = {BETAS[0]}")
    ax.plot(t, s["bc2_factor"], color="tab:green", lw=1.5,
            label=f"1 / (1-β2^t), β2 = {BETAS[1]}")
    ax.axhline(1, color="k", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("step t (log scale)")
    ax.set_ylabel("correction factor (log scale)")
    ax.set_title(f"Bias-correction factors fall to 1\n(at t = {t[-1]}: "
                 f"{s['bc1_factor'][-1]:.4f} and {s['bc2_factor'][-1]:.4f})", fontsize=10)
    ax.legend(fontsize=8)
    fig.suptitle(f"Adam's internal state for x, read from fastadam.Adam.state after each "
                 f"step ({_title(problem, lr, len(t))}, from {problem.start})", fontsize=12)
    _save(fig, filename)


# ---- report -------------------------------------------------------------------------------
def _first_below(loss, level):
    hits = np.flatnonzero(loss < level)
    return int(hits[0]) if hits.size else None


def report(results, state_race=STATE_RACE):
    """Print each race's outcome, Adam's traced state at a few steps, and the check against
    fastadam.reference. Returns the largest |fastadam - reference| over all paths."""
    worst = 0.0
    for i, (problem, lr, steps, runs) in enumerate(results):
        print(f"{_title(problem, lr, steps)}: {problem.formula}, start {problem.start}, "
              f"minimum {problem.minimum}")
        print(f"   {'optimizer':<16}{'final loss':<22}{'first step loss < 1e-6':<24}"
              "end point (x, y)")
        for run in runs.values():
            if run.diverged:
                final, first = f"diverged at step {run.diverged}", "-"
                end = f"left |x|, |y| < {DIVERGED:g}"
            else:
                first = _first_below(run.loss, 1e-6)
                final = f"{run.loss[-1]:.3e}"
                first = "never" if first is None else str(first)
                end = f"({run.path[-1, 0]:.6f}, {run.path[-1, 1]:.6f})"
            print(f"   {run.name:<16}{final:<22}{first:<24}{end}")
            ref = race_reference(problem, run.name, lr, steps)
            n = min(len(ref), len(run.path))
            if run.diverged is None:   # a diverged path's last values are huge: skip them
                worst = max(worst, float(np.max(np.abs(ref[:n] - run.path[:n]))))
        print()
    problem, lr, steps, runs = results[state_race]
    s = runs["Adam"].state
    print(f"Adam's state for x on {_title(problem, lr, steps)} (after step t):")
    print(f"   {'t':>5} {'g':>11} {'m':>11} {'m̂':>11} {'v':>11} {'v̂':>11} "
          f"{'1/(1-β1^t)':>11} {'1/(1-β2^t)':>11}")
    for t in (1, 2, 10, 100, 1000, len(s["t"])):
        if t <= len(s["t"]):
            k = t - 1
            print(f"   {t:>5} {s['g'][k]:>11.4g} {s['m'][k]:>11.4g} {s['m_hat'][k]:>11.4g} "
                  f"{s['v'][k]:>11.4g} {s['v_hat'][k]:>11.4g} {s['bc1_factor'][k]:>11.6g} "
                  f"{s['bc2_factor'][k]:>11.6g}")
    print()
    print(f"fastadam against fastadam.reference (the same loops in plain NumPy), every "
          f"converging path: max |Δ(x, y)| = {worst:.1e}")
    return worst


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(HERE, "figures"),
                        help="folder for the PNG figures (default: examples/figures)")
    parser.add_argument("--steps", type=int, default=None,
                        help="steps per race (default: 300 on the ravine, 5000 on "
                             "Rosenbrock); small values make a quick run")
    args = parser.parse_args(argv)
    if args.steps is not None and args.steps < 1:
        parser.error("--steps must be >= 1")

    import matplotlib
    matplotlib.use("Agg")   # files only, no screen

    races = [(problem, lr, args.steps or steps) for problem, lr, steps in RACES]
    print("SGD, SGD + momentum 0.9, RMSprop (alpha 0.99) and Adam (betas "
          f"{BETAS}) from the same start with the same lr\n(fastadam {fastadam.__version__}, "
          f"SIMD path {fastadam.get_simd_path()!r}, float64)")
    print()
    results = run_all(races)
    report(results)
    os.makedirs(args.out, exist_ok=True)
    files = [os.path.join(args.out, name) for name in FIGURES]
    plot_paths(results, files[0])
    plot_losses(results, files[1])
    problem, lr, _steps, runs = results[STATE_RACE]
    plot_adam_state(problem, lr, runs["Adam"], files[2])
    for f in files:
        shown = os.path.relpath(f)
        print(f"wrote {f if shown.startswith('..') else shown} "
              f"({os.path.getsize(f) / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
