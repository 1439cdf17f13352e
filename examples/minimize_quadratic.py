"""The article's first example, with fastadam: minimise J(θ) = θ² (∇J = 2θ) from θ = 5
====================================================================================

The article runs Adam with its defaults (lr=0.001, betas=(0.9, 0.999), eps=1e-8, at most
1000 iterations, stop once ``|g| < 1e-7``) and prints "Converged at step 817" and
"Minimum at θ = 0.00000001". That cannot happen: Adam's step is about lr in size whatever
the gradient's scale (m_hat / sqrt(v_hat) is about ±1 while the gradient keeps its sign),
so 1000 steps of 0.001 move θ by less than 1 and θ ends near 4.04. This script prints
what really happens, next to the article's own code, and then settings that do reach 0.

Run from the repository root:  python examples/minimize_quadratic.py
"""

import contextlib
import io
import os
import sys

import numpy as np

try:
    import fastadam
except ImportError:  # run from a source checkout without installing: use the repo's copy
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import fastadam

# The article's settings.
THETA0 = 5.0
LR = 0.001
BETAS = (0.9, 0.999)
EPS = 1e-8
MAX_ITERS = 1000
TOL = 1e-7

# Settings that do reach the minimum: (label, lr, max_iters).
REACHING = [
    ("larger lr", 0.1, 1000),
    ("article's lr, more steps", 0.001, 20000),
]


def grad_J(theta):
    """∇J(θ) for J(θ) = θ²."""
    return 2 * theta


# ---- The article's code, copied as printed (renamed from `adam`; comments kept). -------
def article_adam(grad_fn, theta_init, alpha=0.001, beta1=0.9, beta2=0.999, eps=1e-8,
                 max_iters=1000):
    theta = theta_init
    m = 0.0  # first moment (momentum)
    v = 0.0  # second moment (adaptive scale)
    for t in range(1, max_iters + 1):
        g = grad_fn(theta)  # ① compute gradient
        m = beta1 * m + (1 - beta1) * g  # ② update 1st moment
        v = beta2 * v + (1 - beta2) * g ** 2  # ③ update 2nd moment
        m_hat = m / (1 - beta1 ** t)  # ④ bias-correct 1st moment
        v_hat = v / (1 - beta2 ** t)  # ⑤ bias-correct 2nd moment
        theta = theta - alpha / (np.sqrt(v_hat) + eps) * m_hat  # ⑥ update
        if abs(g) < 1e-7:
            print(f"Converged at step {t}")
            break
    return theta
# ---- End of the article's code. ---------------------------------------------------------


def run_article_adam(lr=LR, max_iters=MAX_ITERS):
    """Run :func:`article_adam` on θ² from θ = 5; returns ``(theta, what it printed)``."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        theta = article_adam(grad_fn=grad_J, theta_init=THETA0, alpha=lr, max_iters=max_iters)
    return float(theta), out.getvalue().splitlines()


def _print_article(theta, lines):
    for line in lines + [f"Minimum at θ = {theta:.8f}"]:   # the article's last print
        print(f"     {line}")


def minimize_adam_(theta0=THETA0, lr=LR, betas=BETAS, eps=EPS, max_iters=MAX_ITERS, tol=TOL,
                   trace=None):
    """Minimise θ² with ``fastadam.adam_`` on 1-element float64 arrays.

    Same loop as the article's: take the gradient at θ, do one Adam step, and stop when
    that gradient was below ``tol`` (so the θ returned is the one after that step).
    If ``trace`` is a list, θ after every step is appended to it.
    Returns ``(theta, steps, converged)``.
    """
    theta = np.array([theta0], dtype=np.float64)
    grad = np.zeros_like(theta)
    exp_avg = np.zeros_like(theta)
    exp_avg_sq = np.zeros_like(theta)
    for t in range(1, max_iters + 1):
        grad[0] = grad_J(theta[0])
        fastadam.adam_(theta, grad, exp_avg, exp_avg_sq, step=t, lr=lr, betas=betas, eps=eps)
        if trace is not None:
            trace.append(float(theta[0]))
        if abs(grad[0]) < tol:
            return float(theta[0]), t, True
    return float(theta[0]), max_iters, False


def minimize_Adam(theta0=THETA0, lr=LR, betas=BETAS, eps=EPS, max_iters=MAX_ITERS, tol=TOL):
    """The same with the optimizer class ``fastadam.Adam``.

    Returns ``(theta, steps, converged)``."""
    theta = np.array([theta0], dtype=np.float64)
    grad = np.zeros_like(theta)
    opt = fastadam.Adam([theta], lr=lr, betas=betas, eps=eps)
    for t in range(1, max_iters + 1):
        grad[0] = grad_J(theta[0])
        opt.step([grad])
        if abs(grad[0]) < tol:
            return float(theta[0]), t, True
    return float(theta[0]), max_iters, False


def _report(label, theta, steps, converged):
    how = f"converged at step {steps}" if converged else f"NOT converged after {steps} steps"
    print(f"     {label:<15}: {how}, θ = {theta:.8f}  ({theta:.3e})")


def main():
    print("Minimise J(θ) = θ², ∇J = 2θ, from θ = 5 with Adam (fastadam "
          f"{fastadam.__version__}, SIMD path {fastadam.get_simd_path()!r})")
    print()
    print(f"1) The article's settings: lr={LR}, betas={BETAS}, eps={EPS}, "
          f"max {MAX_ITERS} iterations, stop when |g| < {TOL}")
    print("   The article claims:  Converged at step 817 / Minimum at θ = 0.00000001")
    print("   The article's own code really prints:")
    theta_article, lines = run_article_adam()
    _print_article(theta_article, lines)
    trace = []
    fa = minimize_adam_(trace=trace)
    cls = minimize_Adam()
    print("   fastadam:")
    _report("fastadam.adam_", *fa)
    _report("fastadam.Adam", *cls)
    print(f"   |fastadam.adam_ - article| = {abs(fa[0] - theta_article):.1e}; "
          f"fastadam.Adam == fastadam.adam_ bit for bit: {cls == fa}")
    print(f"   Why: each Adam step moves θ by about lr = {LR} (θ after steps 1, 2, 3 = "
          + ", ".join(f"{x:.6f}" for x in trace[:3])
          + f"),\n   so in {MAX_ITERS} steps θ moves only {THETA0 - fa[0]:.4f} from {THETA0}.")
    print()
    print("2) Settings that do reach the minimum (same betas, eps and stopping rule):")
    for label, lr, max_iters in REACHING:
        print(f"   {label}: lr={lr}, max {max_iters} iterations")
        print("   The article's code prints:")
        theta_article, lines = run_article_adam(lr=lr, max_iters=max_iters)
        _print_article(theta_article, lines)
        theta, steps, converged = minimize_adam_(lr=lr, max_iters=max_iters)
        print(f"   [reaches the minimum] fastadam.adam_ lr={lr}: "
              f"{'converged' if converged else 'NOT converged'} at step {steps}, "
              f"θ = {theta:.8f} ({theta:.3e}); |fastadam - article| = "
              f"{abs(theta - theta_article):.1e}")
    print()
    print("fastadam and the article's code agree to rounding (they order the same maths "
          "differently, so the last bits may differ).")


if __name__ == "__main__":
    main()
